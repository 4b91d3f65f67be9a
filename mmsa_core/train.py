"""The trainer: one loop for every model that returns a prediction and named losses.

AdamW, linear warm-up then cosine decay (per optimiser step; the LNLN authors step per epoch), AMP on CUDA,
optional gradient clipping. Corruption comes from :mod:`mmsa_core.missing`, drawn per (seed, epoch, split),
and the batch order from a generator seeded by (seed, epoch): both are functions of the epoch alone, so a run
resumed from the checkpoint of epoch k continues exactly as the uninterrupted run would.

Selection: after every epoch the model is scored on the VALIDATION split under the training protocol's
validation corruption (r = 0.5 for A, eta = 0.7 for B); the best epoch's weights are kept in ``best.pt``.
Everything the run needs to resume is written atomically to ``last.pt`` at the end of every epoch.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import distributed as dist
from . import missing, practices
from .config import TrainConfig
from .data.mmsa import MMSADataset
from .evaluate import autocast, evaluate
from .practices import warmup_cosine  # noqa: F401  (kept importable from here)
from .utils import atomic_save, resolve_device

log = logging.getLogger(__name__)

LOWER_IS_BETTER = {"MAE"}


@dataclass
class FitResult:
    best_epoch: int
    best_score: float
    history: list[dict] = field(default_factory=list)
    wall_s: float = 0.0
    resumed_from: int | None = None


def select_level(cfg: TrainConfig) -> float:
    if cfg.select_level is not None:
        return cfg.select_level
    return 0.5 if cfg.protocol == "A" else 0.7


def _rng_state() -> dict:
    st = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict) -> None:
    # .cpu(): last.pt is loaded with map_location=<the run's device>, which moves these ByteTensors to the GPU,
    # and torch / torch.cuda only accept RNG states as CPU ByteTensors
    torch.set_rng_state(st["torch"].cpu())
    np.random.set_state(st["numpy"])
    random.setstate(st["python"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in st["cuda"]])


def fit(model: torch.nn.Module, dataset: MMSADataset, cfg: TrainConfig, out_dir, config_hash: str,
        meta: dict | None = None, select_metric: str = "MAE") -> FitResult:
    """Train ``model`` on ``dataset`` and keep the best validation checkpoint; resume from ``out_dir/last.pt``
    if a run with the same ``config_hash`` left one there."""
    practices.check(cfg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = dist.init(resolve_device(cfg.device))  # under torchrun: this rank's GPU, process group started
    model.to(device)
    main = dist.is_main()
    spec = dataset.spec
    train = dataset["train"].data.to(device)
    valid = dataset["valid"].data.to(device)
    # cfg.track_test: history only; cfg.select_split == "test": the authors' (defective) selection on the test split
    test = dataset["test"].data.to(device) if cfg.track_test or cfg.select_split == "test" else None
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    n_batches = math.ceil(len(train) / cfg.batch_size)
    sched = practices.schedule(opt, cfg, n_batches)  # cfg.schedule: ours per step, or the authors' (practices.py)
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and not torch.cuda.is_bf16_supported())
    step_model = model
    if dist.world_size() > 1:  # gradients averaged over ranks; each rank computes its shard of the global batch
        step_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        try:
            step_model = torch.compile(step_model)
        except Exception as e:  # noqa: BLE001 - any compiler failure falls back to eager mode
            log.warning("torch.compile failed (%s); training in eager mode", e)

    lower = select_metric in LOWER_IS_BETTER
    best_score, best_epoch, start, history, resumed = (math.inf if lower else -math.inf), -1, 0, [], None
    picker = practices.Picker(spec.language, out) if cfg.select_per_metric else None  # one checkpoint per metric group
    last = out / "last.pt"
    if last.exists():
        ck = torch.load(last, map_location=device, weights_only=False)
        if ck["config_hash"] != config_hash:
            raise RuntimeError(
                f"{last}: holds a run with config hash {ck['config_hash']}, this run's is {config_hash}; "
                "use another --out folder (or delete that one) to start afresh"
            )
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        scaler.load_state_dict(ck["scaler"])
        _set_rng_state(ck["rng"])
        best_score, best_epoch, history = ck["best_score"], ck["best_epoch"], ck["history"]
        start = resumed = ck["epoch"] + 1
        if picker is not None:
            picker = practices.Picker(spec.language, out, ck.get("picker"))
        log.info("resuming %s from epoch %d", out, start)

    t0 = time.perf_counter()
    level = select_level(cfg)
    for epoch in range(start, cfg.epochs):
        model.train()
        plan = missing.draw(cfg.protocol, train, cfg.train_level, cfg.seed, epoch, "train",
                            frozen=cfg.train_corruption == "frozen")  # "frozen": the LNLN authors' (missing.py)
        order = (torch.randperm(len(train), generator=missing.generator("order", cfg.seed, epoch)) if cfg.shuffle
                 else torch.arange(len(train))).to(device)  # shuffle=False: file order (MPLMM)
        sums: dict[str, float] = {}
        bar = tqdm(range(n_batches), desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not (cfg.progress and main), leave=False)
        for i in bar:
            global_idx = order[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            idx = dist.shard(global_idx)  # the whole batch with one process
            batch = missing.apply(train.take(idx), plan.take(idx.cpu()), spec.unk_id)
            with autocast(device, use_amp):
                res = step_model(batch)
            loss = sum(res.losses.values())
            # DDP averages gradients over ranks; weighting each rank's mean loss by its share of the global batch
            # makes that average the gradient of the global batch's mean loss, also when shards differ in size
            share = len(idx) * dist.world_size() / len(global_idx)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss * share).backward()
            if cfg.grad_clip:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            scaler.step(opt)
            scaler.update()
            sched.after_batch()
            for k, v in res.losses.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) * len(idx)  # this rank's part; reduced below
            if not math.isfinite(float(loss.detach())):
                raise FloatingPointError(f"epoch {epoch + 1}: loss is {float(loss.detach())} at batch {i}; lower the lr or check the data")
        sums = dist.all_sum(sums)
        val_seed = missing.derive_seed(cfg.eval_seed, epoch) if cfg.valid_redraw else cfg.eval_seed  # MPLMM redraws
        val = evaluate(model, valid, spec, cfg.protocol, level, val_seed, "valid", batch_size=cfg.eval_batch_size,
                       amp=use_amp, nested=cfg.nested_test_masks, f1_swapped=cfg.f1_swapped)
        row = {"epoch": epoch, "lr": opt.param_groups[0]["lr"], **{f"train_{k}": v / len(train) for k, v in sums.items()},
               **{f"valid_{k}": v for k, v in val.items()}}
        if test is not None:  # the authors' practice (best TEST epoch): recorded; selects only if select_split="test"
            row.update({f"test_{k}": v for k, v in evaluate(model, test, spec, cfg.protocol, level, cfg.eval_seed, "test",
                                                             batch_size=cfg.eval_batch_size, amp=use_amp,
                                                             nested=cfg.nested_test_masks, f1_swapped=cfg.f1_swapped).items()})
        if dist.world_size() > 1:  # replicas must hold identical weights after every epoch
            row["ranks_in_sync"] = dist.all_close_across_ranks(torch.nn.utils.parameters_to_vector(model.parameters()))
        history.append(row)
        scores = val if cfg.select_split == "valid" else {k[5:]: v for k, v in row.items() if k.startswith("test_")}
        score = scores[select_metric]
        if picker is not None:
            picker.update(epoch, scores, model, save=main)
        sched.after_epoch(val)
        if (score < best_score) if lower else (score > best_score):
            best_score, best_epoch = score, epoch
            if main:
                atomic_save({"model": model.state_dict(), "epoch": epoch, "score": score, **(meta or {})}, out / "best.pt")
        if main:
            atomic_save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                         "scaler": scaler.state_dict(), "rng": _rng_state(), "epoch": epoch, "best_score": best_score,
                         "best_epoch": best_epoch, "history": history, "config_hash": config_hash,
                         **({"picker": picker.state()} if picker is not None else {})}, last)
        dist.barrier()  # every rank sees the files rank 0 wrote before it goes on
        if cfg.progress and main:
            tqdm.write(f"epoch {epoch + 1}/{cfg.epochs}  train loss {sum(sums.values()) / len(train):.4f}  "
                       f"{cfg.select_split} {select_metric} {score:.4f}{'  *' if best_epoch == epoch else ''}")
    if best_epoch < 0:
        raise RuntimeError(f"{out}: no epoch was trained (epochs = {cfg.epochs})")
    best = torch.load(out / "best.pt", map_location=device, weights_only=False)
    model.load_state_dict(best["model"])
    return FitResult(best_epoch, best_score, history, time.perf_counter() - t0, resumed)
