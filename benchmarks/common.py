"""Shared by the benchmark scripts: timing with warm-up, peak memory, device facts, JSON output."""

from __future__ import annotations

import json
import platform
import resource
import statistics
import sys
import time

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_it(fn, device: torch.device, repeats: int = 5, warmup: int = 1) -> dict:
    """Median, min, max and inter-quartile spread of ``fn()``'s wall time in seconds over ``repeats`` calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    q = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "iqr_s": q[2] - q[0], "repeats": repeats}


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated on CUDA; the process's peak resident set size on the CPU (since it started)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def reset_peak_memory(device: torch.device) -> bool:
    """Start a new peak-memory window: CUDA's peak statistics, or on Linux the process's resident high-water
    mark (``/proc/self/clear_refs``; the window starts at the memory resident now). False where it cannot."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def window_peak_memory_mb(device: torch.device) -> float | None:
    """Peak memory since the last :func:`reset_peak_memory` (CPU: the Linux VmHWM), None where unknown."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        with open("/proc/self/status") as f:
            line = next(ln for ln in f if ln.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return None
    return int(line.split()[1]) / 1024


def environment(device: torch.device) -> dict:
    from mmsa_core.utils import cpu_model

    return {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu: {cpu_model()}",
            "threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version()}


def emit(result: dict) -> None:
    print(json.dumps(result, indent=2, default=float))
