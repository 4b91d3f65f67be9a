"""Missing-data protocols A (token/frame) and B (whole modality), as ``shared/spec/protocols.md`` defines.

A protocol draws a :class:`MissingPlan` for a WHOLE split at once from a generator seeded by
(seed, epoch, split): which positions of which sample are dropped. The plan depends on nothing else
(not the batch size, the batch order, the number of workers or processes, nor the model), so every model
sees the same corruption, and a resumed or distributed run sees what an uninterrupted one sees.
:func:`apply` then corrupts a batch by indexing, vectorised, on the batch's device. The plan is always drawn on
the CPU (so a CPU and a GPU run see the same corruption), then moved to the device once per split
(:meth:`MissingPlan.to`); indexing it there costs no host-device transfer per batch.

Protocol B is expressed with the same masks: a missing modality is one whose droppable positions are all
dropped, and ``present`` records it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from .data.mmsa import Batch

MODALITIES = ("text", "audio", "vision")
# protocol-B missing modes: which modalities are PRESENT (text, audio, vision); 0 is complete
MODES = (
    (True, True, True),
    (False, True, True),  # text missing
    (True, False, True),  # audio missing
    (True, True, False),  # vision missing
    (False, False, True),  # text + audio missing
    (False, True, False),  # text + vision missing
    (True, False, False),  # audio + vision missing
)
MODE_NAMES = ("{l,a,v}", "{a,v}", "{l,v}", "{l,a}", "{v}", "{a}", "{l}")  # the modalities that are present
RATES = tuple(round(0.1 * i, 1) for i in range(10))


def derive_seed(*parts) -> int:
    """A stable 63-bit seed from any parts (Python's ``hash`` is salted per process; this is not)."""
    h = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(h[:8], "little") >> 1


def generator(*parts) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(*parts))


@dataclass
class MissingPlan:
    """Drop decisions for the samples of one split; every tensor has the split's sample dimension first."""

    text_keep: torch.Tensor  # (N, Lt) bool: False = token replaced by [UNK]
    audio_keep: torch.Tensor  # (N, La) bool: False = frame zeroed
    vision_keep: torch.Tensor  # (N, Lv) bool
    present: torch.Tensor  # (N, 3) bool
    rates: torch.Tensor  # (N, 3) float: achieved fraction of droppable positions dropped
    mode: torch.Tensor  # (N,) long

    def take(self, idx: torch.Tensor) -> "MissingPlan":
        return MissingPlan(*(getattr(self, k)[idx] for k in self.__dataclass_fields__))

    def to(self, device) -> "MissingPlan":
        return MissingPlan(*(getattr(self, k).to(device) for k in self.__dataclass_fields__))


def droppable(data: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Positions that a protocol may drop: valid tokens except [CLS] (first) and [SEP] (last valid); valid frames."""
    mask = data.text_mask.bool()
    n_tok = mask.sum(1, keepdim=True)
    pos = torch.arange(mask.shape[1], device=mask.device)[None, :]
    text = mask & (pos > 0) & (pos < n_tok - 1)
    return text, data.audio_mask.clone(), data.vision_mask.clone()


def _achieved(drop: torch.Tensor, can: torch.Tensor) -> torch.Tensor:
    return (drop & can).sum(1).float() / can.sum(1).clamp(min=1).float()


def _plan_from_drops(drops, cans, present, mode) -> MissingPlan:
    rates = torch.stack([_achieved(d, c) for d, c in zip(drops, cans)], 1)
    keeps = [~(d & c) for d, c in zip(drops, cans)]
    return MissingPlan(*keeps, present=present, rates=rates, mode=mode)


def protocol_a(data: Batch, rate: float | None, seed: int, epoch: int, split: str) -> MissingPlan:
    """Protocol A: each droppable position of each modality is dropped with probability r.

    ``rate=None`` is the training distribution: per sample and modality r ~ U(0, 1), and r = 0 for a
    random half of the samples (drawn per modality). A fixed ``rate`` applies to every sample (test).
    """
    rate = None if rate is None else float(rate)  # 0.5, np.float64(0.5) and 1 vs 1.0: the same seed, the same draw
    g = generator("A", seed, epoch, split, rate)
    cans = droppable(data)
    n = len(data)
    if rate is None:
        r = torch.rand(n, 3, generator=g)
        r = torch.where(torch.rand(n, 3, generator=g) < 0.5, torch.zeros_like(r), r)
    else:
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"protocol A: missing rate must be in [0, 1], got {rate}")
        r = torch.full((n, 3), float(rate))
    drops = [torch.rand(c.shape, generator=g) < r[:, i : i + 1] for i, c in enumerate(cans)]
    cans_cpu = [c.cpu() for c in cans]
    return _plan_from_drops(drops, cans_cpu, torch.ones(n, 3, dtype=torch.bool), torch.zeros(n, dtype=torch.long))


def _fixed_seed_uniforms(cans, seed: int, split: str) -> list[torch.Tensor]:
    """One uniform per droppable position, the same for every epoch and rate: like the LNLN authors'
    ``np.random.seed(seed)`` before each modality's draw, every modality reads the START of one stream."""
    n = cans[0].shape[0]
    flat = torch.rand(n * max(c.shape[1] for c in cans), generator=generator("A-fixed", seed, split))
    return [flat[: n * c.shape[1]].view(n, c.shape[1]) for c in cans]


def protocol_a_nested(data: Batch, rate: float, seed: int, split: str) -> MissingPlan:
    """Protocol A at a fixed rate with ONE seed for every rate (the LNLN authors' test masks): a position is
    dropped when its uniform is below r, so the dropped set at r is inside the dropped set at any r' > r."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"protocol A: missing rate must be in [0, 1], got {rate}")
    cans = [c.cpu() for c in droppable(data)]
    drops = [u < float(rate) for u in _fixed_seed_uniforms(cans, seed, split)]
    n = len(data)
    return _plan_from_drops(drops, cans, torch.ones(n, 3, dtype=torch.bool), torch.zeros(n, dtype=torch.long))


def protocol_a_frozen(data: Batch, seed: int, split: str = "train") -> MissingPlan:
    """The LNLN authors' training corruption, which does not depend on the epoch: per sample and modality
    r ~ U(0, 1), then r = 0 for exactly floor(N / 2) samples per modality (``random.sample``), and the masks from
    the fixed-seed uniforms of :func:`protocol_a_nested` (their per-epoch redraw in ``__getitem__(0)`` runs in a
    DataLoader worker and is lost; ours is frozen for the whole run, also in the batches that worker serves)."""
    g = generator("A-frozen-rates", seed, split)
    n = len(data)
    r = torch.rand(n, 3, generator=g)
    for i in range(3):
        r[torch.randperm(n, generator=g)[: n // 2], i] = 0.0
    cans = [c.cpu() for c in droppable(data)]
    drops = [u < r[:, i : i + 1] for i, u in enumerate(_fixed_seed_uniforms(cans, seed, split))]
    return _plan_from_drops(drops, cans, torch.ones(n, 3, dtype=torch.bool), torch.zeros(n, dtype=torch.long))


def protocol_b(data: Batch, eta: float | None = None, seed: int = 0, epoch: int = 0, split: str = "test",
               mode: int | None = None) -> MissingPlan:
    """Protocol B: a sample is incomplete with probability ``eta``, then one of the 6 incomplete modes
    uniformly; or, with ``mode``, every sample gets that fixed mode (0..6, see :data:`MODES`)."""
    n = len(data)
    if mode is not None:
        if not 0 <= mode < len(MODES):
            raise ValueError(f"protocol B: mode must be in 0..6, got {mode}")
        modes = torch.full((n,), mode, dtype=torch.long)
    else:
        if eta is None or not 0.0 <= eta <= 1.0:
            raise ValueError(f"protocol B: eta must be in [0, 1], got {eta}")
        eta = float(eta)  # the same draw for 1 and 1.0, or a NumPy float
        g = generator("B", seed, epoch, split, eta)
        incomplete = torch.rand(n, generator=g) < eta
        modes = torch.where(incomplete, torch.randint(1, 7, (n,), generator=g), torch.zeros(n, dtype=torch.long))
    present = torch.tensor(MODES, dtype=torch.bool)[modes]
    cans = [c.cpu() for c in droppable(data)]
    drops = [(~present[:, i : i + 1]).expand_as(c) for i, c in enumerate(cans)]
    return _plan_from_drops(drops, cans, present, modes)


def draw(protocol: str, data: Batch, level: float | None, seed: int, epoch: int, split: str, mode: int | None = None,
         nested: bool = False, frozen: bool = False) -> MissingPlan:
    """One entry point for both protocols: ``level`` is r for A and eta for B (None = training draw for A).
    Protocol A only: ``nested`` gives :func:`protocol_a_nested` at a fixed rate, ``frozen`` gives
    :func:`protocol_a_frozen` for the training draw (the LNLN authors' practices)."""
    if protocol == "A":
        if frozen and level is None:
            return protocol_a_frozen(data, seed, split)
        if nested and level is not None:
            return protocol_a_nested(data, level, seed, split)
        return protocol_a(data, level, seed, epoch, split)
    if protocol == "B":
        return protocol_b(data, 0.7 if level is None else level, seed, epoch, split, mode=mode)
    raise ValueError(f"unknown missing-data protocol {protocol!r}; expected 'A' or 'B'")


def apply(batch: Batch, plan: MissingPlan, unk_id: int) -> Batch:
    """Corrupt ``batch`` by ``plan`` (already indexed to the batch): dropped tokens become ``unk_id`` and
    their features zero; dropped frames become zero vectors and leave the masks. Keeps the complete batch.
    A missing text modality (``present[:, 0]`` False) has ALL its features zeroed, [CLS]/[SEP] included: in real
    pickles the [CLS] feature is contextual BERT output and would leak the sentence."""
    if plan.present.device != batch.labels.device:  # the trainer and the sweep move a split's plan once, not per batch
        plan = plan.to(batch.labels.device)
    tk, ak, vk = plan.text_keep, plan.audio_keep, plan.vision_keep
    feat_keep = tk & (plan.present[:, :1] | ~batch.text_mask.bool())  # padding is never touched
    return batch.with_(
        text_ids=torch.where(tk, batch.text_ids, torch.full_like(batch.text_ids, unk_id)),
        text_feat=batch.text_feat * feat_keep[..., None].to(batch.text_feat.dtype),
        audio=batch.audio * ak[..., None].to(batch.audio.dtype),
        audio_mask=batch.audio_mask & ak,
        vision=batch.vision * vk[..., None].to(batch.vision.dtype),
        vision_mask=batch.vision_mask & vk,
        present=plan.present,
        rates=plan.rates,
        mode=plan.mode,
        complete=batch,
    )
