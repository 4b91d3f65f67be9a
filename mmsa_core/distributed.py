"""Multi-process training with PyTorch's own engine: ``torchrun --nproc_per_node=N -m mmsa_core train ...``.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; :func:`init` starts the process group (NCCL on CUDA, gloo on
the CPU) and picks this rank's GPU. The data stay whole in every process's memory; each global batch of
``batch_size`` samples (the same order in every rank, from the (seed, epoch) generator) is split by
:func:`shard` into equal-as-possible contiguous parts, the DistributedSampler equivalent for in-memory data.
A global batch smaller than the number of processes (the last one of an epoch, e.g. MOSI's 1284 % 64 = 4 on 8
GPUs) leaves some ranks nothing: such a rank computes one sample of the batch with weight 0, so every rank takes
part in the gradient reduction and the result is the global batch's gradient.
DistributedDataParallel averages the gradients, so N processes take the same optimiser steps as one process
with the same global batch (up to floating-point summation order). Rank 0 alone logs and writes files.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """Rank 0, also before the process group starts (torchrun's RANK), so that only one process writes files."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: torch.device) -> torch.device:
    """Start the process group if torchrun launched us; returns the device this rank should use."""
    if not launched_by_torchrun() or dist.is_initialized():
        return device
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def shard(idx: torch.Tensor) -> tuple[torch.Tensor, float]:
    """This rank's contiguous part of a global batch of indices, and its loss weight ``share``: its number of
    samples x world size / global batch size (DDP averages gradients over ranks, so weighting each rank's mean
    loss by its share makes that average the gradient of the global batch's mean loss, also when parts differ in
    size). A rank whose part would be empty gets the batch's last sample with share 0."""
    n, w = idx.shape[0], world_size()
    if w == 1:
        return idx, 1.0
    bounds = [(n * r) // w for r in range(w + 1)]
    part = idx[bounds[rank()] : bounds[rank() + 1]]
    share = len(part) * w / n
    return (part, share) if len(part) else (idx[-1:], 0.0)


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def all_close_across_ranks(t: torch.Tensor) -> bool:
    """True when every rank holds the same tensor (used by tests to check that replicas stay in sync)."""
    if world_size() == 1:
        return True
    ref = t.detach().clone()
    dist.broadcast(ref, 0)
    ok = torch.tensor([float(torch.equal(ref, t.detach()))], device=t.device)
    dist.all_reduce(ok, op=dist.ReduceOp.MIN)
    return bool(ok.item() == 1.0)


def all_sum(values: dict) -> dict[str, float]:
    """Sum a dict of numbers (floats or 0-d tensors, e.g. loss sums kept on the device) over ranks; every rank
    gets the totals as floats. The ranks' keys may differ (a loss term no batch of a rank had): the union is
    summed, a missing key counting 0. With one process, the dict's values as floats."""
    keys = sorted(set().union(*all_gather(sorted(values)))) if world_size() > 1 else sorted(values)  # one order
    if not keys:
        return {}
    order = list(values) + [k for k in keys if k not in values]  # the result keeps the caller's key order
    values = {k: values.get(k, 0.0) for k in keys}
    dev = next((v.device for v in values.values() if isinstance(v, torch.Tensor)), torch.device("cpu"))
    if world_size() > 1 and dist.get_backend() == "nccl":
        dev = torch.device("cuda", torch.cuda.current_device())
    t = torch.stack([torch.as_tensor(values[k], dtype=torch.float64, device=dev).reshape(()) for k in keys])
    if world_size() > 1:
        dist.all_reduce(t)
    total = dict(zip(keys, t.cpu().tolist()))  # one transfer for all the keys
    return {k: total[k] for k in order}


def all_gather(obj) -> list:
    """Every rank's ``obj`` (any picklable object), in rank order; ``[obj]`` with one process."""
    if world_size() == 1:
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out
