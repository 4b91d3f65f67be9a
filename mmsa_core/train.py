"""The trainer: one loop for every model that returns a prediction and named losses.

AdamW, linear warm-up then cosine decay (per optimiser step; the LNLN authors step per epoch), AMP on CUDA
(:func:`~mmsa_core.evaluate.amp_dtype`: native bf16, else fp16 with a GradScaler; ``train.amp_dtype`` forces one,
also on the CPU), optional gradient clipping, optional ``torch.compile`` (tried on the first step, eager if it fails). Corruption comes from :mod:`mmsa_core.missing`, drawn per (seed, epoch, split),
and the batch order from a generator seeded by (seed, epoch): both are functions of the epoch alone, so a run
resumed from the checkpoint of epoch k continues exactly as the uninterrupted run would.

Selection: after every epoch the model is scored on the VALIDATION split under the training protocol's
validation corruption (r = 0.5 for A, eta = 0.7 for B); the best epoch's weights are kept in ``best.pt``.
Everything the run needs to resume is written atomically to ``last.pt`` at the end of every epoch: every rank's
RNG state, and a resume may change the precision (the loss scale starts afresh) or the number of visible GPUs.

Host-device synchronisations: the missing-data plan is moved to the device once per epoch, losses are summed on
the device and read once per epoch; :mod:`mmsa_core.syncs` counts what is left per step.
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
from . import missing, practices, syncs
from .config import TrainConfig
from .data.mmsa import MMSADataset
from .evaluate import amp_dtype, autocast, evaluate, model_inputs, predict
from .practices import warmup_cosine  # noqa: F401  (kept importable from here)
from .utils import CheckpointError, atomic_save, load_checkpoint_file, resolve_device

log = logging.getLogger(__name__)

LOWER_IS_BETTER = {"MAE"}


@dataclass
class FitResult:
    best_epoch: int
    best_score: float
    history: list[dict] = field(default_factory=list)
    wall_s: float = 0.0
    resumed_from: int | None = None
    eval_model: torch.nn.Module | None = None  # the compiled model for evaluation (cfg.compile), else None


def select_level(cfg: TrainConfig) -> float:
    if cfg.select_level is not None:
        return cfg.select_level
    return 0.5 if cfg.protocol == "A" else 0.7


def group_by_length(order: torch.Tensor, data, batch_size: int, generator: torch.Generator,
                    chunk_batches: int = 50) -> torch.Tensor:
    """``order`` (N,) rearranged so that each batch holds samples of similar length (``train.group_by_length``).

    The shuffled order is cut into chunks of ``chunk_batches`` batches; each chunk is sorted by length (text
    tokens first, the text encoder being the largest cost when there is one; ties by audio + vision frames) and
    cut into batches; the full batches are then shuffled with ``generator`` and any short last batch stays last.
    A model that cuts its inputs to the longest valid length in the batch (LNLN's ``trim_padding``) then does
    less work; the batches are still random from epoch to epoch, but not i.i.d. draws. Same seed, same order."""
    key = data.length_key()[order.to(data.labels.device)].cpu()  # (N,) lexicographic (text, audio + vision)
    pieces = []
    for c in range(0, len(order), chunk_batches * batch_size):
        chunk = torch.arange(c, min(c + chunk_batches * batch_size, len(order)))
        pieces.append(chunk[torch.sort(key[chunk], stable=True).indices])
    batches = list(torch.cat(pieces).split(batch_size))
    full = [b for b in batches if len(b) == batch_size]
    rest = [b for b in batches if len(b) != batch_size]
    perm = torch.randperm(len(full), generator=generator).tolist()
    return order[torch.cat([full[i] for i in perm] + rest).to(order.device)]


def _rng_state(device: torch.device | None = None) -> dict:
    """This process's RNG states; on CUDA only its own GPU's (a resume may see fewer GPUs). Plain values only
    (checkpoints are read with weights_only=True): NumPy's MT19937 key array becomes a list."""
    kind, key, pos, has_gauss, gauss = np.random.get_state()
    st = {"torch": torch.get_rng_state(), "numpy": [kind, key.tolist(), int(pos), int(has_gauss), float(gauss)],
          "python": random.getstate()}
    if device is not None and device.type == "cuda":
        st["cuda"] = torch.cuda.get_rng_state(device)
    return st


def _set_rng_state(st: dict, device: torch.device | None = None) -> None:
    # .cpu(): torch / torch.cuda only accept RNG states as CPU ByteTensors
    torch.set_rng_state(st["torch"].cpu())
    kind, key, pos, has_gauss, gauss = st["numpy"]
    np.random.set_state((kind, np.asarray(key, dtype=np.uint32), pos, has_gauss, gauss))
    random.setstate(st["python"])
    cuda = st.get("cuda")
    if cuda is not None and device is not None and device.type == "cuda":
        i = torch.cuda.current_device() if device.index is None else device.index
        if isinstance(cuda, (list, tuple)):  # a last.pt of an older version: every visible GPU's state
            cuda = cuda[i] if i < len(cuda) else None
        if cuda is not None:
            torch.cuda.set_rng_state(cuda.cpu(), i)


def _compiled(module: torch.nn.Module, warm_up, what: str, device: torch.device) -> torch.nn.Module:
    """``torch.compile(module)``, run once by ``warm_up(compiled)`` INSIDE the fallback: compilation is lazy, so a
    compiler failure surfaces at the first call, not at torch.compile. The RNG streams are left as they were
    (a compiled run draws the same dropout as an eager one). Eager ``module`` if anything fails."""
    try:
        compiled = torch.compile(module)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            warm_up(compiled)
        return compiled
    except Exception as e:  # noqa: BLE001 - any compiler failure falls back to eager mode
        log.warning("torch.compile failed for %s (%s: %s); %s runs in eager mode", what, type(e).__name__, e, what)
        return module


def fit(model: torch.nn.Module, dataset: MMSADataset, cfg: TrainConfig, out_dir, config_hash: str,
        meta: dict | None = None, select_metric: str = "MAE", restart: bool = False, forward_hook=None) -> FitResult:
    """Train ``model`` on ``dataset`` and keep the best validation checkpoint; resume from ``out_dir/last.pt``
    if a run with the same ``config_hash`` left one there (``restart``: ignore it and train from epoch 0). A
    ``last.pt`` that cannot be read stops the run with a :class:`CheckpointError` that offers ``--restart``.
    The caller holds the run folder's lock (:func:`mmsa_core.utils.run_folder_lock`).

    ``forward_hook``: a global forward hook (``torch.nn.modules.module.register_module_forward_hook``) held while
    this fit runs and removed after it, e.g. to read a model's extras as it trains (the training batches, then the
    validation pass, of every epoch); it must only read, so that the run stays the same."""
    if forward_hook is None:
        return _fit(model, dataset, cfg, out_dir, config_hash, meta, select_metric, restart)
    handle = torch.nn.modules.module.register_module_forward_hook(forward_hook)
    try:
        return _fit(model, dataset, cfg, out_dir, config_hash, meta, select_metric, restart)
    finally:
        handle.remove()


def _fit(model, dataset: MMSADataset, cfg: TrainConfig, out_dir, config_hash: str, meta: dict | None,
         select_metric: str, restart: bool) -> FitResult:
    practices.check(cfg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = dist.init(resolve_device(cfg.device))  # under torchrun: this rank's GPU, process group started
    model.to(device)
    main = dist.is_main()
    spec = dataset.spec
    train = model_inputs(dataset["train"].data, model, device)  # fields the model never reads stay on the host
    valid = model_inputs(dataset["valid"].data, model, device)
    # cfg.track_test: history only; cfg.select_split == "test": the authors' (defective) selection on the test split
    test = model_inputs(dataset["test"].data, model, device) if cfg.track_test or cfg.select_split == "test" else None
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    n_batches = math.ceil(len(train) / cfg.batch_size)
    sched = practices.schedule(opt, cfg, n_batches)  # cfg.schedule: ours per step, or the authors' (practices.py)
    amp = amp_dtype(device, cfg.amp, cfg.amp_dtype)  # None (fp32), bf16 or fp16
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    step_model = model
    if dist.world_size() > 1:  # gradients averaged over ranks; each rank computes its shard of the global batch
        # find_unused_parameters: a rank's shard may leave parameters without a gradient (ProMMA's evaluator
        # when no modality is missing, its critics for a 1-sample shard); DDP then reduces zeros for them
        step_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True)
    eval_model = model
    if cfg.compile:  # evaluation compiled on its own (eval mode, no gradients): warmed up on 2 validation samples
        eval_model = _compiled(model, lambda m: predict(m, valid.take(torch.arange(min(2, len(valid)), device=device)),
                                                        None, spec.unk_id, amp=amp), "evaluation", device)

    lower = select_metric in LOWER_IS_BETTER
    best_score, best_epoch, start, history, resumed = (math.inf if lower else -math.inf), -1, 0, [], None
    picker = practices.Picker(spec.language, out) if cfg.select_per_metric else None  # one checkpoint per metric group
    last = out / "last.pt"
    if last.exists() and not restart:
        try:
            # map_location="cpu": the optimiser's step counters stay on the CPU (on CUDA, AdamW would call .item() on
            # them twice per parameter tensor per step); load_state_dict puts everything else on the device
            ck = load_checkpoint_file(last, "cpu")
            missing_keys = {"config_hash", "model", "optimizer", "scheduler", "scaler", "rng", "epoch"} - set(ck)
            if missing_keys:
                raise CheckpointError(f"{last}: not a last.pt written by mmsa_core (no {sorted(missing_keys)})")
        except CheckpointError as e:
            raise CheckpointError(f"{e}. Cannot resume: start this run over with --restart (or delete {last})") from e
        if ck["config_hash"] != config_hash:
            raise RuntimeError(
                f"{last}: holds a run with config hash {ck['config_hash']}, this run's is {config_hash}; "
                "use another --out folder (or delete that one) to start afresh"
            )
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        if scaler.is_enabled() and ck.get("scaler"):
            scaler.load_state_dict(ck["scaler"])
        elif scaler.is_enabled():  # written in fp32 or bf16 (a CPU, a newer GPU): no loss scale to continue
            log.info("%s was written without a loss scale (fp32 or bf16); fp16 starts with a fresh one", last)
        ranks = ck.get("rng_ranks") or [ck["rng"]]
        if len(ranks) != dist.world_size():
            log.warning("%s was written by %d process(es), resumed with %d: the RNG streams (dropout) are not those "
                        "of an uninterrupted run", last, len(ranks), dist.world_size())
        _set_rng_state(ranks[dist.rank()] if dist.rank() < len(ranks) else ranks[0], device)
        best_score, best_epoch, history = ck["best_score"], ck["best_epoch"], ck["history"]
        start = resumed = ck["epoch"] + 1
        if picker is not None:
            picker = practices.Picker(spec.language, out, ck.get("picker"))
        log.info("resuming %s from epoch %d", out, start)

    t0 = time.perf_counter()
    level = select_level(cfg)
    compile_pending = cfg.compile
    for epoch in range(start, cfg.epochs):
        model.train()
        plan = missing.draw(cfg.protocol, train, cfg.train_level, cfg.seed, epoch, "train",  # once per epoch;
                            frozen=cfg.train_corruption == "frozen").to(device)  # "frozen": the LNLN authors' (missing.py)
        order = (torch.randperm(len(train), generator=missing.generator("order", cfg.seed, epoch)) if cfg.shuffle
                 else torch.arange(len(train))).to(device)  # shuffle=False: file order (MPLMM)
        if cfg.group_by_length:
            order = group_by_length(order, train, cfg.batch_size, missing.generator("group", cfg.seed, epoch))
        sums: dict[str, torch.Tensor] = {}  # loss sums on the device (float64), read once per epoch
        bad = torch.full((), -1, dtype=torch.long, device=device)  # first batch with a non-finite loss
        bad_loss = torch.zeros((), device=device)
        bar = tqdm(range(n_batches), desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not (cfg.progress and main), leave=False)
        for i in bar:
            with syncs.step():
                global_idx = order[i * cfg.batch_size : (i + 1) * cfg.batch_size]
                idx, share = dist.shard(global_idx)  # the whole batch with one process; share 0 = stand-in sample
                n = len(idx) if share > 0 else 0  # this rank's real samples
                batch = missing.apply(train.take(idx), plan.take(idx), spec.unk_id)
                if compile_pending:  # forward + backward once inside the fallback, RNG and gradients left untouched
                    compile_pending = False

                    def warm_up(m, batch=batch):
                        with autocast(device, amp):
                            res = m(batch)
                        (sum(res.losses.values()) * 0.0).backward()
                        opt.zero_grad(set_to_none=True)

                    step_model = _compiled(step_model, warm_up, "training", device)
                with autocast(device, amp):
                    res = step_model(batch)
                loss = sum(res.losses.values())
                # DDP averages gradients over ranks; weighting each rank's mean loss by its share of the global batch
                # makes that average the gradient of the global batch's mean loss, also when shards differ in size
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss * share).backward()
                if cfg.grad_clip:
                    scaler.unscale_(opt)
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                scaler.step(opt)
                scaler.update()
                sched.after_batch()  # ours steps per batch; the authors' schedules per epoch (sched.after_epoch)
                for k, v in res.losses.items():  # this rank's part; reduced below. float64 = Python's float sums
                    sums[k] = sums.get(k, 0.0) + v.detach().double() * n
                loss = loss.detach()
                first = (bad < 0) & ~torch.isfinite(loss)
                bad = torch.where(first, i, bad)
                bad_loss = torch.where(first, loss.float(), bad_loss)
        if int(bad) >= 0:  # one read per epoch; the weights of this epoch are never saved
            raise FloatingPointError(f"epoch {epoch + 1}: loss is {float(bad_loss)} at batch {int(bad)}; lower the lr "
                                     "or check the data")
        sums = dist.all_sum(sums)
        val_seed = missing.derive_seed(cfg.eval_seed, epoch) if cfg.valid_redraw else cfg.eval_seed  # MPLMM redraws
        val = evaluate(eval_model, valid, spec, cfg.protocol, level, val_seed, "valid", batch_size=cfg.eval_batch_size,
                       amp=amp, nested=cfg.nested_test_masks, f1_swapped=cfg.f1_swapped, by_length=cfg.group_by_length)
        row = {"epoch": epoch, "lr": opt.param_groups[0]["lr"], **{f"train_{k}": v / len(train) for k, v in sums.items()},
               **{f"valid_{k}": v for k, v in val.items()}}
        if test is not None:  # the authors' practice (best TEST epoch): recorded; selects only if select_split="test"
            row.update({f"test_{k}": v for k, v in evaluate(eval_model, test, spec, cfg.protocol, level, cfg.eval_seed,
                                                             "test", batch_size=cfg.eval_batch_size, amp=amp,
                                                             nested=cfg.nested_test_masks,
                                                             f1_swapped=cfg.f1_swapped,
                                                             by_length=cfg.group_by_length).items()})
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
        rng = dist.all_gather(_rng_state(device))  # every rank's streams (their dropout differs when shards do)
        if main:
            atomic_save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                         "scaler": scaler.state_dict(), "rng": rng[0], "rng_ranks": rng, "epoch": epoch,
                         "best_score": best_score, "best_epoch": best_epoch, "history": history,
                         "config_hash": config_hash, **({"picker": picker.state()} if picker is not None else {})}, last)
        dist.barrier()  # every rank sees the files rank 0 wrote before it goes on
        if cfg.progress and main:
            tqdm.write(f"epoch {epoch + 1}/{cfg.epochs}  train loss {sum(sums.values()) / len(train):.4f}  "
                       f"{cfg.select_split} {select_metric} {score:.4f}{'  *' if best_epoch == epoch else ''}")
    if best_epoch < 0:
        raise RuntimeError(f"{out}: no epoch was trained (epochs = {cfg.epochs})")
    best = load_checkpoint_file(out / "best.pt", device)
    model.load_state_dict(best["model"])
    return FitResult(best_epoch, best_score, history, time.perf_counter() - t0, resumed,
                     eval_model if eval_model is not model else None)
