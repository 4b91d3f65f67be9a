"""Multi-process training with PyTorch's own engine: ``torchrun --nproc_per_node=N -m mmsa_core train ...``.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; :func:`init` starts the process group (NCCL on CUDA, gloo on
the CPU) and picks this rank's GPU. The data stay whole in every process's memory; each global batch of
``batch_size`` samples (the same order in every rank, from the (seed, epoch) generator) is split by
:func:`shard` into equal-as-possible contiguous parts, the DistributedSampler equivalent for in-memory data.
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
    return rank() == 0


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


def shard(idx: torch.Tensor) -> torch.Tensor:
    """This rank's contiguous part of a global batch of indices."""
    n, w = idx.shape[0], world_size()
    if w == 1:
        return idx
    bounds = [(n * r) // w for r in range(w + 1)]
    return idx[bounds[rank()] : bounds[rank() + 1]]


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


def all_sum(values: dict[str, float]) -> dict[str, float]:
    """Sum a dict of floats over ranks (every rank gets the totals); the dict itself with one process."""
    if world_size() == 1 or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return dict(zip(keys, t.cpu().tolist()))
