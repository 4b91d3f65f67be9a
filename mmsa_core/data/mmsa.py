"""Read, validate and write datasets in the MMSA feature-pickle format.

One pickle is a dict with splits ``train``, ``valid``, ``test``; each split is a dict of arrays (see
``shared/spec/protocols.md``). :func:`load_mmsa` validates every key, rank, feature size, dtype, length and
label, and returns whole splits as tensors in memory, so that a batch is one indexing operation.

Security note: unpickling runs code stored in the file. We only ever load a path that the user named
(or the embedded dataset that this package wrote itself); never load a pickle you do not trust.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
REQUIRED_KEYS = ("text", "text_bert", "audio", "vision", "regression_labels")


class DataError(ValueError):
    """Bad input data: the message names the file, split, key, what was expected and what was found."""


@dataclass
class DataSpec:
    """What a model must know about the data it will see (sizes, vocabulary ids, label range)."""

    text_len: int
    text_dim: int
    audio_len: int
    audio_dim: int
    vision_len: int
    vision_dim: int
    label_min: float = -3.0
    label_max: float = 3.0
    unk_id: int = 100
    language: str = "en"


@dataclass
class Batch:
    """A batch (or a whole split): every field has the sample dimension first.

    After corruption by a missing-data protocol (:mod:`mmsa_core.missing`) the feature fields hold the
    corrupted inputs, ``audio_mask``/``vision_mask`` mark positions that are valid AND kept, ``present``
    says which modalities are available at all, ``rates`` the fraction of droppable positions actually
    dropped, ``mode`` the protocol-B missing mode (0 = complete), and ``complete`` the uncorrupted batch.
    """

    text_ids: torch.Tensor  # (B, Lt) long, BERT token ids
    text_mask: torch.Tensor  # (B, Lt) long, attention mask of the tokenizer
    text_segment: torch.Tensor  # (B, Lt) long
    text_feat: torch.Tensor  # (B, Lt, Dt) float, precomputed text features
    audio: torch.Tensor  # (B, La, Da) float
    audio_mask: torch.Tensor  # (B, La) bool
    vision: torch.Tensor  # (B, Lv, Dv) float
    vision_mask: torch.Tensor  # (B, Lv) bool
    labels: torch.Tensor  # (B,) float
    index: torch.Tensor  # (B,) long, position of each sample in its split
    present: torch.Tensor | None = None  # (B, 3) bool, modality available (text, audio, vision)
    rates: torch.Tensor | None = None  # (B, 3) float, achieved drop rate per modality
    mode: torch.Tensor | None = None  # (B,) long, protocol-B missing mode (0 = complete)
    complete: "Batch | None" = None

    def __len__(self) -> int:
        return self.labels.shape[0]

    def _map(self, fn) -> "Batch":
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, torch.Tensor):
                v = fn(v)
            elif isinstance(v, Batch):
                v = v._map(fn)
            out[f.name] = v
        return Batch(**out)

    def take(self, idx: torch.Tensor) -> "Batch":
        """The samples at ``idx`` (a long tensor on the batch's device)."""
        return self._map(lambda t: t[idx])

    def to(self, device, non_blocking: bool = False) -> "Batch":
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> "Batch":
        return self._map(lambda t: t.pin_memory())

    def with_(self, **changes) -> "Batch":
        return replace(self, **changes)


@dataclass
class Split:
    """One split held in memory: a :class:`Batch` with every sample, plus its text metadata."""

    name: str
    data: Batch
    ids: list[str] = field(default_factory=list)
    raw_text: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.data)


@dataclass
class MMSADataset:
    name: str
    path: str
    spec: DataSpec
    splits: dict[str, Split]
    fingerprint: str

    def __getitem__(self, split: str) -> Split:
        if split not in self.splits:
            raise DataError(f"{self.path}: no split {split!r}; the file has {sorted(self.splits)}")
        return self.splits[split]


def _fingerprint(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def _array(path, split, key, value, ndim, dtype_kind="f") -> np.ndarray:
    try:
        arr = np.asarray(value)
    except Exception as e:  # ragged lists and other non-arrays
        raise DataError(f"{path}: split {split!r} key {key!r}: expected an array, got {type(value).__name__} ({e})")
    if arr.ndim != ndim:
        raise DataError(f"{path}: split {split!r} key {key!r}: expected rank {ndim}, got shape {arr.shape}")
    if dtype_kind == "f" and arr.dtype.kind not in "fiub":
        raise DataError(f"{path}: split {split!r} key {key!r}: expected numbers, got dtype {arr.dtype}")
    return arr


def _split_from_dict(path, split: str, d, label_range, warn_inf: bool = True) -> Split:
    if not isinstance(d, dict):
        raise DataError(f"{path}: split {split!r}: expected a dict of arrays, got {type(d).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in d]
    if missing:
        raise DataError(f"{path}: split {split!r}: missing key(s) {missing}; expected at least {list(REQUIRED_KEYS)}")
    with np.errstate(over="ignore"):  # float32 before the finite check: a value beyond float32 becomes inf there
        text = _array(path, split, "text", d["text"], 3).astype(np.float32, copy=False)
    text_bert = _array(path, split, "text_bert", d["text_bert"], 3)
    audio = _array(path, split, "audio", d["audio"], 3).astype(np.float32)
    vision = _array(path, split, "vision", d["vision"], 3).astype(np.float32)
    labels = _array(path, split, "regression_labels", d["regression_labels"], 1).astype(np.float32)
    n = labels.shape[0]
    if n == 0:
        raise DataError(f"{path}: split {split!r} is empty (0 samples)")
    for key, arr in (("text", text), ("text_bert", text_bert), ("audio", audio), ("vision", vision)):
        if arr.shape[0] != n:
            raise DataError(f"{path}: split {split!r} key {key!r}: expected {n} samples (as regression_labels), got {arr.shape[0]}")
    if text_bert.shape[1] != 3:
        raise DataError(f"{path}: split {split!r} key 'text_bert': expected shape (N, 3, L_t) [ids, mask, segments], got {text_bert.shape}")
    if text_bert.shape[2] != text.shape[1]:
        raise DataError(f"{path}: split {split!r} key 'text_bert': expected L_t = {text.shape[1]} (as 'text'), got {text_bert.shape[2]}")
    for key, arr in (("text", text), ("text_bert", text_bert), ("vision", vision), ("regression_labels", labels)):
        if not np.isfinite(arr).all():
            bad = int((~np.isfinite(arr)).sum())
            raise DataError(f"{path}: split {split!r} key {key!r}: expected finite values, found {bad} NaN/inf")
    if np.isnan(audio).any():
        raise DataError(f"{path}: split {split!r} key 'audio': expected finite values, found {int(np.isnan(audio).sum())} NaN")
    if np.isinf(audio).any():
        k = int(np.isinf(audio).sum())
        if warn_inf:
            log.warning("%s: split %r key 'audio': replaced %d infinite values by 0 (real MOSEI has -inf)", path, split, k)
        audio = np.where(np.isinf(audio), 0.0, audio).astype(np.float32)
    lo, hi = label_range
    if labels.min() < lo or labels.max() > hi:
        raise DataError(
            f"{path}: split {split!r} key 'regression_labels': expected values in [{lo}, {hi}], "
            f"got min {labels.min():.3f}, max {labels.max():.3f}"
        )
    lengths = {}
    for m, arr in (("audio", audio), ("vision", vision)):
        key = f"{m}_lengths"
        if key in d:
            ln = _array(path, split, key, d[key], 1).astype(np.int64)
            if ln.shape[0] != n or ln.min(initial=0) < 0 or ln.max(initial=0) > arr.shape[1]:
                got = f"in [{ln.min()}, {ln.max()}]" if ln.size else "(none)"  # min() of nothing would raise
                raise DataError(
                    f"{path}: split {split!r} key {key!r}: expected {n} lengths in [0, {arr.shape[1]}], "
                    f"got {ln.shape[0]} values {got}"
                )
        else:  # aligned pickles carry no lengths: every frame is valid
            ln = np.full(n, arr.shape[1], dtype=np.int64)
        lengths[m] = torch.from_numpy(ln)
    ids_bert = torch.from_numpy(np.rint(text_bert).astype(np.int64))
    pos = lambda L: torch.arange(L)[None, :]  # noqa: E731
    data = Batch(
        text_ids=ids_bert[:, 0].contiguous(),
        text_mask=ids_bert[:, 1].contiguous(),
        text_segment=ids_bert[:, 2].contiguous(),
        text_feat=torch.from_numpy(np.ascontiguousarray(text, dtype=np.float32)),
        audio=torch.from_numpy(np.ascontiguousarray(audio)),
        audio_mask=pos(audio.shape[1]) < lengths["audio"][:, None],
        vision=torch.from_numpy(np.ascontiguousarray(vision)),
        vision_mask=pos(vision.shape[1]) < lengths["vision"][:, None],
        labels=torch.from_numpy(labels),
        index=torch.arange(n),
    )
    ids = [str(x) for x in d.get("id", range(n))]
    raw = [str(x) for x in d.get("raw_text", [""] * n)]
    for key, vals in (("id", ids), ("raw_text", raw)):
        if len(vals) != n:
            raise DataError(f"{path}: split {split!r} key {key!r}: expected {n} entries (as regression_labels), got {len(vals)}")
    return Split(split, data, ids, raw)


def load_mmsa(path, name: str | None = None, label_range: tuple[float, float] | None = None, language: str | None = None) -> MMSADataset:
    """Load and validate an MMSA-format pickle named by the user (pickles can run code: trusted files only)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found (MMSA pickles are downloaded by the user; see the README)")
    name = name or path.stem
    sims = "sims" in name.lower() or "sims" in str(path).lower()
    label_range = label_range or ((-1.0, 1.0) if sims else (-3.0, 3.0))
    try:
        with open(path, "rb") as f:
            raw = pickle.load(f)
    except Exception as e:  # noqa: BLE001 - a cut or corrupted pickle fails in many ways (EOFError, TypeError, ...)
        raise DataError(f"{path}: cannot unpickle ({type(e).__name__}: {e}); is the file complete and an MMSA pickle?")
    if not isinstance(raw, dict):
        raise DataError(f"{path}: expected a dict with splits {list(SPLITS)}, got {type(raw).__name__}")
    missing = [s for s in SPLITS if s not in raw]
    if missing:
        raise DataError(f"{path}: missing split(s) {missing}; expected {list(SPLITS)}, found {sorted(raw)}")
    splits = {s: _split_from_dict(path, s, raw[s], label_range) for s in SPLITS}
    ref = splits["train"].data
    for s in SPLITS[1:]:
        b = splits[s].data
        for key in ("text_feat", "audio", "vision"):
            exp, got = tuple(getattr(ref, key).shape[1:]), tuple(getattr(b, key).shape[1:])
            if exp != got:
                raise DataError(f"{path}: split {s!r} key {key!r}: expected per-sample shape {exp} (as train), got {got}")
    spec = DataSpec(
        text_len=ref.text_feat.shape[1], text_dim=ref.text_feat.shape[2],
        audio_len=ref.audio.shape[1], audio_dim=ref.audio.shape[2],
        vision_len=ref.vision.shape[1], vision_dim=ref.vision.shape[2],
        label_min=label_range[0], label_max=label_range[1],
        language=language or ("zh" if sims else "en"),
    )
    return MMSADataset(name, str(path), spec, splits, _fingerprint(path))


def write_mmsa(path, splits: dict[str, dict[str, np.ndarray]]) -> Path:
    """Write a dict of splits as an MMSA pickle (atomically: a crash never leaves a half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        pickle.dump(splits, f, protocol=4)
    os.replace(tmp, path)
    return path
