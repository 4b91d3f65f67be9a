"""Robustness-sweep benchmark: one model evaluated at all 10 missing rates (and, for protocol B, the 7 modes)
on the test split at MOSI shapes, the data staying on the device for the whole sweep. Prints JSON.

    python benchmarks/bench_sweep.py [--model baseline] [--protocol A] [--config mmsa_core/configs/lnln_mosi.yaml]

The model is randomly initialised (speed does not depend on the weights). With --config, its
``model_config`` section is used (for example the papers' sizes).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
import yaml

from common import emit, environment, peak_memory_mb, time_it
from mmsa_core.config import RunConfig, from_dict
from mmsa_core.data import load_mmsa, synth
from mmsa_core.evaluate import sweep
from mmsa_core.experiment import model_config
from mmsa_core.models import build_model
from mmsa_core.utils import resolve_device


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="baseline")
    ap.add_argument("--config", help="YAML whose model_config section sizes the model")
    ap.add_argument("--protocol", default="A", choices=["A", "B"])
    ap.add_argument("--shape", default="mosi", choices=sorted(synth.SHAPES))
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    device = resolve_device(a.device)
    over = yaml.safe_load(Path(a.config).read_text()).get("model_config", {}) if a.config else {}
    cfg = from_dict(RunConfig, {"model": a.model, "model_config": over})
    with tempfile.TemporaryDirectory() as d:
        ds = load_mmsa(synth.generate(Path(d) / "s.pkl", a.shape, 0))
    model = build_model(a.model, model_config(cfg), ds.spec).to(device).eval()
    test = ds["test"].data.to(device)
    amp = device.type == "cuda"
    n_settings = 10 + (7 if a.protocol == "B" else 0)
    t = time_it(lambda: sweep(model, test, ds.spec, a.protocol, 0, "test", batch_size=a.batch, amp=amp), device, a.repeats, warmup=0)
    emit({"benchmark": "sweep", "model": a.model, "protocol": a.protocol, "shape": a.shape, "n_test": len(test),
          "settings": n_settings, **environment(device), "sweep": t,
          "samples_per_s": n_settings * len(test) / t["median_s"], "peak_memory_mb": peak_memory_mb(device),
          "parameters": sum(p.numel() for p in model.parameters())})


if __name__ == "__main__":
    main()
