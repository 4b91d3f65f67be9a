"""Evaluation: predictions under a missing-data plan, metrics at one setting, and sweeps over rates / modes.

Mixed precision is chosen in one place, :func:`amp_dtype`; :func:`autocast` applies it. The sweep runs each
DISTINCT corruption once (protocol A at rate 0, protocol B at eta 0 and the complete mode are the same input), and
under protocol B a pretrained text encoder runs once per distinct text input of a batch (a sample's text is either
complete or wholly missing): :class:`~mmsa_core.models.text.TextEncoder` reuses those outputs, checked against the
ids it is given.
"""

from __future__ import annotations

import contextlib

import torch

from . import metrics, missing
from .data.mmsa import Batch, DataSpec

AMP_DTYPES = {"auto": None, "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}


def amp_dtype(device: torch.device, amp: bool | torch.dtype = True, dtype: str = "auto") -> torch.dtype | None:
    """The autocast dtype of a run, or None (fp32).

    ``amp`` False: fp32. ``amp`` a dtype: that dtype on any device. Otherwise ``dtype`` (``train.amp_dtype``):
    "bf16" / "fp16" force that dtype on any device (the CPU included, e.g. to test the mixed-precision path),
    "fp32" is off, and "auto" is bf16 on a CUDA GPU with NATIVE bf16 (compute capability 8.0+), fp16 (with a
    GradScaler) on an older one such as a T4 (which emulates bf16 without tensor cores), nothing on the CPU.
    """
    if isinstance(amp, torch.dtype):
        return amp
    if not amp:
        return None
    if dtype not in AMP_DTYPES:
        raise ValueError(f"train.amp_dtype: expected one of {sorted(AMP_DTYPES)}, got {dtype!r}")
    if dtype != "auto":
        return AMP_DTYPES[dtype]
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16


def autocast(device: torch.device, amp: bool | torch.dtype | None = True):
    """The autocast context of :func:`amp_dtype` (``amp``: True = the device's default, False/None = off, or a dtype)."""
    dtype = amp_dtype(device, bool(amp) if amp is None else amp)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def model_inputs(data: Batch, model: torch.nn.Module, device) -> Batch:
    """``data`` on ``device`` without the fields no module of ``model`` reads: the precomputed text features
    when every text encoder is a BERT (whole MOSEI splits: 3.5 GB of 8.5 GB). Such a field is kept with width 0,
    so indexing, corruption and concatenation still work, and a module that did read it would fail loudly."""
    from .models.text import TextEncoder

    encoders = [m for m in model.modules() if isinstance(m, TextEncoder)]
    if encoders and all(not e.reads_features for e in encoders):
        data = data.with_(text_feat=data.text_feat[..., :0])
    return data.to(device)


def _predict_plans(model, data: Batch, plans: list, unk_id: int, batch_size: int, amp, extras: bool,
                   reuse_text: bool = False, by_length: bool = False):
    """Predictions (N,) for each plan in ``plans`` (None = uncorrupted), batches outermost; with ``extras`` also
    the model's introspection tensors. ``reuse_text``: every plan is protocol B, so a sample's text is complete or
    wholly missing; the text encoders run once on each per batch (:meth:`TextEncoder.reuse`). ``by_length``: the
    batches hold samples of similar length (the split sorted by :meth:`Batch.length_key`, the outputs returned in
    the split's order), so a model that cuts its inputs to the batch's longest valid length (LNLN's
    ``trim_padding``) does less work; each sample's prediction is the same function of its own input (up to the
    last bits of float sums over another batch)."""
    from .models.text import TextEncoder

    was_training = model.training
    model.eval()
    device = data.labels.device
    order = torch.sort(data.length_key(), stable=True).indices if by_length else torch.arange(len(data), device=device)
    plans = [None if p is None else p.to(device) for p in plans]  # once per call, not per batch
    encoders = [m for m in model.modules() if isinstance(m, TextEncoder) and m.bert is not None] if reuse_text else []
    preds, ex = [[] for _ in plans], [{} for _ in plans]
    try:
        for idx in order.split(batch_size):
            b = data.take(idx)
            if encoders:
                full = missing.apply(b, missing.protocol_b(b, mode=0).to(device), unk_id)
                gone = missing.apply(b, missing.protocol_b(b, mode=1).to(device), unk_id)  # text missing
                with autocast(device, amp):
                    for e in encoders:
                        e.reuse(full, gone)
            for k, plan in enumerate(plans):
                bk = b if plan is None else missing.apply(b, plan.take(idx), unk_id)
                with autocast(device, amp):
                    out = model(bk)
                preds[k].append(out.pred.float())
                if extras:
                    for name, v in out.extras.items():
                        ex[k].setdefault(name, []).append(v.detach().float().cpu())
    finally:
        for e in encoders:
            e.reuse(None, None)
        model.train(was_training)
    back = torch.argsort(order).cpu() if by_length else slice(None)  # back to the split's order
    ps = [torch.cat(p).cpu()[back] for p in preds]
    if extras:
        return [(p, {name: torch.cat(v)[back] for name, v in e.items()}) for p, e in zip(ps, ex)]
    return ps


@torch.no_grad()
def predict(model, data: Batch, plan: missing.MissingPlan | None, unk_id: int, batch_size: int = 256,
            amp: bool | torch.dtype = True, extras: bool = False, by_length: bool = False):
    """Predictions (N,) for ``data`` corrupted by ``plan``; with ``extras`` also the model's introspection
    tensors concatenated over the split (dict name -> (N, ...)). ``amp``: see :func:`amp_dtype`; ``by_length``:
    batches of similar length (see :func:`_predict_plans`; ``train.group_by_length`` turns it on)."""
    return _predict_plans(model, data, [plan], unk_id, batch_size, amp, extras, by_length=by_length)[0]


def evaluate(model, data: Batch, spec: DataSpec, protocol: str | None, level: float | None, seed: int, split: str,
             mode: int | None = None, batch_size: int = 256, amp: bool | torch.dtype = True, nested: bool = False,
             f1_swapped: bool = False, by_length: bool = False) -> dict[str, float]:
    """Metrics on ``data`` after corruption by ``protocol`` at ``level`` (or protocol-B ``mode``); ``nested``:
    protocol-A masks nested across rates, ``f1_swapped``: also the swapped-argument F1 (the authors' practices);
    ``by_length``: batches of similar length (:func:`predict`)."""
    plan = None if protocol is None else missing.draw(protocol, data, level, seed, 0, split, mode=mode, nested=nested)
    pred = predict(model, data, plan, spec.unk_id, batch_size, amp, by_length=by_length)
    return metrics.compute(pred.numpy(), data.labels.cpu().numpy(), spec.language, f1_swapped)


def _same_plan(a: missing.MissingPlan, b: missing.MissingPlan) -> bool:
    return all(torch.equal(getattr(a, k), getattr(b, k)) for k in a.__dataclass_fields__)


@torch.no_grad()
def sweep(model, data: Batch, spec: DataSpec, protocol: str | tuple[str, ...], seed: int, split: str = "test",
          rates=missing.RATES, modes: bool | None = None, batch_size: int = 256, amp: bool | torch.dtype = True,
          nested: bool = False, f1_swapped: bool = False, by_length: bool = False) -> list[dict]:
    """Tidy records (protocol, setting, level, mode, metric, value) at every rate, and for protocol B
    (or ``modes=True``) at each of the 7 fixed missing modes; ``protocol`` may name several ("A", "B"), whose
    records come in that order. The data stay on the device throughout. Each distinct corruption is predicted
    once (rate 0 of A, eta 0 of B and B's complete mode are one pass); under B the text encoder runs once per
    distinct text input. ``by_length``: batches of similar length (:func:`predict`)."""
    settings = []  # (protocol, setting, level, mode index or None, plan)
    for proto in (protocol,) if isinstance(protocol, str) else protocol:
        settings += [(proto, "rate", float(r), None, missing.draw(proto, data, r, seed, 0, split, nested=nested))
                     for r in rates]
        if modes if modes is not None else proto == "B":
            settings += [(proto, "mode", float("nan"), m, missing.draw("B", data, None, seed, 0, split, mode=m))
                         for m in range(len(missing.MODES))]
    distinct, which = [], []  # the distinct plans, and for each setting the index of its plan among them
    for *_, plan in settings:
        k = next((j for j, d in enumerate(distinct) if _same_plan(d, plan)), None)
        if k is None:
            distinct.append(plan)
            k = len(distinct) - 1
        which.append(k)
    y = data.labels.cpu().numpy()
    # plans of protocol B (a sample's text complete or wholly missing) run with text reuse, the others without
    group_b = sorted({k for s, k in zip(settings, which) if s[0] == "B" or s[1] == "mode"})
    rest = [k for k in range(len(distinct)) if k not in group_b]
    preds = {}
    for group, reuse in ((rest, False), (group_b, True)):
        if group:
            out = _predict_plans(model, data, [distinct[k] for k in group], spec.unk_id, batch_size, amp, False, reuse,
                                 by_length)
            preds.update(zip(group, out))
    scores = {k: metrics.compute(p.numpy(), y, spec.language, f1_swapped) for k, p in preds.items()}
    records = []
    for (proto, setting, level, mode, _), k in zip(settings, which):
        for name, v in scores[k].items():
            records.append({"protocol": proto, "setting": setting, "level": level,
                            "mode": "" if mode is None else missing.MODE_NAMES[mode], "metric": name, "value": v})
    return records
