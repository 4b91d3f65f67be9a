"""Data-path benchmark: loading an MMSA pickle, drawing a missing-data plan for a whole split, and building
corrupted batches by indexing (the trainer's hot path), at MOSI shapes by default. Prints JSON.

    python benchmarks/bench_data.py [--shape mosi] [--batch 64] [--device auto]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from common import emit, environment, peak_memory_mb, time_it
from mmsa_core import missing
from mmsa_core.data import load_mmsa, synth
from mmsa_core.utils import resolve_device


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shape", default="mosi", choices=sorted(synth.SHAPES))
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    device = resolve_device(a.device)
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        path = synth.generate(Path(d) / "s.pkl", a.shape, 0)
        gen_s = time.perf_counter() - t0
        load = time_it(lambda: load_mmsa(path), torch.device("cpu"), repeats=a.repeats)
        ds = load_mmsa(path)
    train = ds["train"].data
    if device.type == "cuda":
        train = train.pin_memory()
    train = train.to(device, non_blocking=True)
    plan_a = time_it(lambda: missing.draw("A", train, None, 0, 1, "train"), device, a.repeats)
    plan_b = time_it(lambda: missing.draw("B", train, 0.7, 0, 1, "train"), device, a.repeats)
    plan = missing.draw("A", train, None, 0, 1, "train")
    order = torch.randperm(len(train)).to(device)

    def epoch_of_batches():
        for i in range(0, len(train), a.batch):
            idx = order[i : i + a.batch]
            missing.apply(train.take(idx), plan.take(idx.cpu()), ds.spec.unk_id)

    epoch = time_it(epoch_of_batches, device, a.repeats)
    n_batches = -(-len(train) // a.batch)
    emit({"benchmark": "data", "shape": a.shape, "batch": a.batch, "n_train": len(train), **environment(device),
          "generate_s": gen_s, "load_pickle": load, "plan_protocol_A_split": plan_a, "plan_protocol_B_split": plan_b,
          "batches_per_epoch": n_batches, "epoch_of_corrupted_batches": epoch,
          "batches_per_s": n_batches / epoch["median_s"], "samples_per_s": len(train) / epoch["median_s"],
          "peak_memory_mb": peak_memory_mb(device)})


if __name__ == "__main__":
    main()
