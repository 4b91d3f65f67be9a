"""Training practices in which the authors' code and ours differ, each chosen by one ``TrainConfig`` field.

The trainer (:mod:`mmsa_core.train`) asks this module for two things:

- :func:`schedule` (``train.schedule``): the learning-rate schedule and WHEN it steps.
  ``"warmup_cosine"`` (ours): linear warm-up over ``warmup_frac`` of the optimiser steps, then cosine to 0,
  stepped after every batch. ``"lnln_authors"``: the LNLN authors' warm-up + cosine (``core/scheduler.py``),
  stepped once per epoch: warm-up over 10% of the epochs starting at learning rate 0 (so the first epoch does
  not train), then cosine with T_max = 90% of the epochs. ``"plateau"``: MPLMM's ``ReduceLROnPlateau`` on the
  validation loss (patience 10, factor 0.1), stepped per epoch.
- :class:`Picker` (``train.select_split``, ``train.select_per_metric``): which epochs are kept. By default one
  checkpoint, the best validation score (``best.pt``). ``select_per_metric`` keeps one checkpoint per metric
  GROUP as the LNLN authors' ``get_best_results`` does (e.g. the best Acc-2 has-0 epoch also gives that epoch's
  F1 has-0; MAE's gives Corr, as their ``robust_evaluation.py`` prints them); ``select_split="test"`` chooses
  on the TEST split, which is the authors' practice and a defect: the test set then takes part in training.

The corruption switches (``train_corruption``, ``nested_test_masks``) live with the protocols in
:mod:`mmsa_core.missing`; the swapped F1 (``f1_swapped``) with the metrics in :mod:`mmsa_core.metrics`.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from .config import PRACTICE_CHOICES, ConfigError, TrainConfig
from .utils import atomic_save

SCHEDULES = PRACTICE_CHOICES["schedule"]
LOWER_IS_BETTER = {"MAE"}
# metric groups of the LNLN authors' selection: the key metric, then the metrics read from its checkpoint
GROUPS = {
    "en": {"Acc-2 has-0": ("F1 has-0", "F1 has-0 swapped"), "Acc-2 non-0": ("F1 non-0", "F1 non-0 swapped"),
           "Acc-7": (), "Acc-5": (), "MAE": ("Corr",)},
    "zh": {"Acc-2": ("F1", "F1 swapped"), "Acc-3": (), "Acc-5": (), "MAE": ("Corr",)},
}


def warmup_cosine(total_steps: int, warmup_frac: float):
    """Ours, per optimiser step: multiplier (step + 1) / warm during warm-up, then half a cosine to 0."""
    warm = max(1, int(round(total_steps * warmup_frac))) if warmup_frac > 0 else 0

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = (step - warm) / max(1, total_steps - warm)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))

    return f


def lnln_authors_lr(epochs: int):
    """The LNLN authors' multiplier for epoch e (0-based), stepped per epoch: e / W for e <= W (W = 0.1 epochs,
    so epoch 0 runs at lr 0), then cosine from 1 with T_max = 0.9 epochs, starting at the first e > W."""
    warm, t_max = 0.1 * epochs, 0.9 * epochs
    first = math.floor(warm) + 1  # the first epoch past the warm-up

    def f(e: int) -> float:
        if e <= warm:
            return e / warm if warm > 0 else 1.0
        return 0.5 * (1.0 + math.cos(math.pi * (e - first) / t_max))

    return f


class Schedule:
    """A learning-rate schedule with the trainer's two hooks: :meth:`after_batch` and :meth:`after_epoch`."""

    def __init__(self, opt: torch.optim.Optimizer, cfg: TrainConfig, n_batches: int):
        self.kind = cfg.schedule
        lam = torch.optim.lr_scheduler.LambdaLR
        if self.kind == "warmup_cosine":
            self.sched = lam(opt, warmup_cosine(cfg.epochs * n_batches, cfg.warmup_frac))
        elif self.kind == "lnln_authors":
            self.sched = lam(opt, lnln_authors_lr(cfg.epochs))
        else:
            self.sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", patience=10, factor=0.1)

    def after_batch(self) -> None:
        if self.kind == "warmup_cosine":
            self.sched.step()

    def after_epoch(self, valid: dict[str, float]) -> None:
        if self.kind == "lnln_authors":
            self.sched.step()
        elif self.kind == "plateau":  # MPLMM steps on its validation L1 loss, which is the validation MAE
            self.sched.step(valid["MAE"])

    def state_dict(self) -> dict:
        return self.sched.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.sched.load_state_dict(state)


CHOICES = PRACTICE_CHOICES


def check(cfg: TrainConfig) -> None:
    """One clear error (a ConfigError) for a practice switch set to a value that does not exist."""
    for k, allowed in CHOICES.items():
        if getattr(cfg, k) not in allowed:
            raise ConfigError(f"train.{k}: expected one of {list(allowed)}, got {getattr(cfg, k)!r}")


def schedule(opt, cfg: TrainConfig, n_batches: int) -> Schedule:
    return Schedule(opt, cfg, n_batches)


def slug(metric: str) -> str:
    return metric.replace(" ", "_").replace("-", "")


class Picker:
    """Per-metric checkpoints (``select_per_metric``): after each epoch, :meth:`update` saves the weights as
    ``<out>/best_by/<metric>.pt`` for every group key metric whose score improved (strictly, as the authors').
    The state (best score and epoch per key) is a dict that the trainer keeps in ``last.pt`` to resume."""

    def __init__(self, language: str, out: Path, state: dict | None = None):
        self.groups = GROUPS["zh" if language == "zh" else "en"]
        self.dir = Path(out) / "best_by"
        self.best = dict(state or {})  # key -> (score, epoch)

    def update(self, epoch: int, scores: dict[str, float], model: torch.nn.Module, save: bool = True) -> None:
        for key in self.groups:
            s = scores[key]
            old = self.best.get(key)
            lower = key in LOWER_IS_BETTER
            if old is None or (s < old[0] if lower else s > old[0]):
                self.best[key] = (s, epoch)
                if save:
                    self.dir.mkdir(parents=True, exist_ok=True)
                    atomic_save({"model": model.state_dict(), "epoch": epoch, "score": s, "metric": key},
                                self.dir / f"{slug(key)}.pt")

    def state(self) -> dict:
        return dict(self.best)


def groups(language: str) -> dict[str, tuple[str, ...]]:
    """Key metric -> the other metrics reported from its checkpoint (the LNLN authors' grouping)."""
    return GROUPS["zh" if language == "zh" else "en"]


__all__ = ["CHOICES", "GROUPS", "check", "Picker", "SCHEDULES", "Schedule", "groups", "lnln_authors_lr", "schedule", "slug", "warmup_cosine"]
