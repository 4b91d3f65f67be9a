"""Evaluation: predictions under a missing-data plan, metrics at one setting, and sweeps over rates / modes."""

from __future__ import annotations

import contextlib

import torch

from . import metrics, missing
from .data.mmsa import Batch, DataSpec


def autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast on CUDA where supported, fp16 otherwise; nothing on the CPU."""
    if not enabled or device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


@torch.no_grad()
def predict(model, data: Batch, plan: missing.MissingPlan | None, unk_id: int, batch_size: int = 256,
            amp: bool = True, extras: bool = False):
    """Predictions (N,) for ``data`` corrupted by ``plan``; with ``extras`` also the model's introspection
    tensors concatenated over the split (dict name -> (N, ...))."""
    was_training = model.training
    model.eval()
    device = data.labels.device
    preds, ex = [], {}
    for start in range(0, len(data), batch_size):
        idx = torch.arange(start, min(start + batch_size, len(data)), device=device)
        b = data.take(idx)
        if plan is not None:
            b = missing.apply(b, plan.take(idx.cpu()), unk_id)
        with autocast(device, amp):
            out = model(b)
        preds.append(out.pred.float())
        if extras:
            for k, v in out.extras.items():
                ex.setdefault(k, []).append(v.detach().float().cpu())
    model.train(was_training)
    p = torch.cat(preds).cpu()
    if extras:
        return p, {k: torch.cat(v) for k, v in ex.items()}
    return p


def evaluate(model, data: Batch, spec: DataSpec, protocol: str | None, level: float | None, seed: int, split: str,
             mode: int | None = None, batch_size: int = 256, amp: bool = True, nested: bool = False,
             f1_swapped: bool = False) -> dict[str, float]:
    """Metrics on ``data`` after corruption by ``protocol`` at ``level`` (or protocol-B ``mode``); ``nested``:
    protocol-A masks nested across rates, ``f1_swapped``: also the swapped-argument F1 (the authors' practices)."""
    plan = None if protocol is None else missing.draw(protocol, data, level, seed, 0, split, mode=mode, nested=nested)
    pred = predict(model, data, plan, spec.unk_id, batch_size, amp)
    return metrics.compute(pred.numpy(), data.labels.cpu().numpy(), spec.language, f1_swapped)


def sweep(model, data: Batch, spec: DataSpec, protocol: str, seed: int, split: str = "test",
          rates=missing.RATES, modes: bool | None = None, batch_size: int = 256, amp: bool = True,
          nested: bool = False, f1_swapped: bool = False) -> list[dict]:
    """Tidy records (protocol, setting, level, mode, metric, value) at every rate, and for protocol B
    (or ``modes=True``) at each of the 7 fixed missing modes. The data stay on the device throughout."""
    records = []

    def add(setting, level, mode, m):
        for k, v in m.items():
            records.append({"protocol": protocol, "setting": setting, "level": level,
                            "mode": "" if mode is None else missing.MODE_NAMES[mode], "metric": k, "value": v})

    for r in rates:
        add("rate", float(r), None, evaluate(model, data, spec, protocol, r, seed, split, batch_size=batch_size, amp=amp,
                                             nested=nested, f1_swapped=f1_swapped))
    if modes if modes is not None else protocol == "B":
        for m in range(len(missing.MODES)):
            add("mode", float("nan"), m, evaluate(model, data, spec, "B", None, seed, split, mode=m, batch_size=batch_size,
                                                  amp=amp, f1_swapped=f1_swapped))
    return records
