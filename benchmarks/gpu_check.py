"""One prepared GPU check, at most about 8 minutes on one GPU. Writes JSON after every section.

    python benchmarks/gpu_check.py                       # on the first CUDA device, budget 450 s
    python benchmarks/gpu_check.py --device cpu --dry-run   # the same code path on tiny sizes (the tests run this)

Sections, in order (each records its figures or its error, and the time it took):

1. ``amp``: AMP bf16 against fp32 predictions for every registered model (its ``<model>_default`` preset, trained
   ``--amp-epochs`` epochs in fp32 on the embedded default; 0 = random weights) on the test split at missing rate
   0.5: max and mean absolute difference, and both MAEs.
2. ``text_encoder``: the fraction of the device's dense bf16 peak that a BERT-base-sized encoder reaches in a
   training pass (forward + backward, bf16 autocast) at LNLN's MOSI shapes (1.5 x 64 rows of 50 tokens: the rows of
   one batched pass with shared rows); FLOPs counted by ``torch.utils.flop_counter``, peak from NVIDIA's datasheets
   (``PEAK_BF16_TFLOPS``; ``--peak-tflops`` for another device).
3. ``steps``: ``bench_lnln.py --quick`` (variants authors and ours, per epoch and per step, at MOSI shapes; its JSON
   also goes to ``mmsa_core/reference/benchmarks/lnln-cuda.json``) and ``bench_promma.py`` (ProMMA's batched step vs a
   per-sample loop).
4. ``ddp``: when two or more GPUs are visible, a 2-process ``torchrun`` smoke test (``benchmarks/ddp_smoke.sh`` if
   it exists, else one epoch of ``lnln_default`` under ``torchrun --nproc_per_node=2``).
5. ``lnln_mosi``: a full MOSI-shaped LNLN training with the ``lnln_mosi`` preset (a BERT-base-sized text encoder
   with random weights instead of the download; ``synth --shape mosi`` data) through the trainer: one warm-up epoch,
   then as many epochs as the remaining budget allows; time per epoch (training + validation, as the trainer runs
   them), the projected 200-epoch time, and the peak GPU memory.

Output: ``--out`` (default ``mmsa_core/reference/benchmarks/gpu-check-<cpu|cuda>.json``; with ``--dry-run`` a temporary folder).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import replace
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from common import environment, sync  # noqa: E402

# dense (no sparsity) bf16 tensor-core peaks, TFLOPS, from NVIDIA's datasheets; the first matching name wins
PEAK_BF16_TFLOPS = (("H200", 989.4), ("H100 PCIe", 756.0), ("H100", 989.4), ("GH200", 989.4), ("A100", 312.0),
                    ("L40S", 362.05), ("L4", 121.0), ("A10G", 70.0), ("A10", 125.0), ("RTX 4090", 165.2))
BERT_BASE = dict(kind="tiny", tiny_hidden=768, tiny_layers=12, tiny_heads=12)  # random init: no download


def peak_tflops(name: str) -> float | None:
    return next((p for key, p in PEAK_BF16_TFLOPS if key in name), None)


def autocast_bf16(device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16)


# ----------------------------------------------------------------------------------------------- sections
def amp_agreement(a, device) -> dict:
    from mmsa_core import missing
    from mmsa_core.config import load_config
    from mmsa_core.evaluate import predict
    from mmsa_core.experiment import load_checkpoint, load_dataset, model_config, run
    from mmsa_core.models import build_model, model_names

    out = {}
    for m in model_names():
        cfg = load_config(f"{m}_default")
        ds = load_dataset(cfg.data)
        test = ds["test"].data
        if a.dry_run:
            test = test.take(torch.arange(32))
        test = test.to(device)
        if a.amp_epochs > 0:
            tmp = Path(tempfile.mkdtemp(prefix=f"gpu-check-{m}-"))
            cfg.train = replace(cfg.train, epochs=a.amp_epochs, device=str(device), amp=False, progress=False,
                                out_dir=str(tmp))
            run(cfg, ds)
            model, _ = load_checkpoint(tmp / "best.pt", ds.spec, device)
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            torch.manual_seed(0)
            model = build_model(m, model_config(cfg), ds.spec).to(device)
        plan = missing.draw("A", test, 0.5, 0, 0, "test")
        p32 = predict(model, test, plan, ds.spec.unk_id, amp=False)
        with autocast_bf16(device):
            p16 = predict(model, test, plan, ds.spec.unk_id, amp=False)
        y = test.labels.cpu()
        d = (p16 - p32).abs()
        out[m] = {"max_abs_diff": float(d.max()), "mean_abs_diff": float(d.mean()),
                  "mae_fp32": float((p32 - y).abs().mean()), "mae_bf16": float((p16 - y).abs().mean()),
                  "n": len(y), "epochs_trained": a.amp_epochs}
    return out


def text_encoder_peak(a, device) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    from mmsa_core.models.text import TextEncoder, TextEncoderConfig

    cfg = TextEncoderConfig(**(dict(kind="tiny") if a.dry_run else BERT_BASE))
    enc = TextEncoder(cfg, 768).to(device).train()
    rows, L = (4, 12) if a.dry_run else (96, 50)
    ids = torch.randint(1000, 30000, (rows, L), device=device)
    mask = torch.ones(rows, L, dtype=torch.long, device=device)
    seg = torch.zeros_like(ids)

    def step():
        with autocast_bf16(device):
            out = enc(ids, mask, seg, None)
        out.float().sum().backward()

    with FlopCounterMode(display=False) as fc:
        step()
    flops = fc.get_total_flops()
    for _ in range(2):
        step()
    sync(device)
    n = 2 if a.dry_run else 10
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    sync(device)
    dt = (time.perf_counter() - t0) / n
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = a.peak_tflops or (peak_tflops(name) if device.type == "cuda" else None)
    achieved = flops / dt / 1e12
    return {"rows": rows, "tokens": L, "hidden": enc.out_dim, "flops_per_pass": flops, "seconds_per_pass": dt,
            "achieved_tflops": achieved, "peak_bf16_tflops": peak,
            "fraction_of_peak": achieved / peak if peak else None,
            "peak_source": "NVIDIA datasheet, dense bf16" if peak and not a.peak_tflops else ("--peak-tflops" if peak else None)}


def step_benchmarks(a, device, out_dir: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    lnln_json = out_dir / f"lnln-{device.type}.json" if not a.dry_run else Path(tempfile.mkdtemp()) / "lnln.json"
    lnln = [sys.executable, str(HERE / "bench_lnln.py"), "--quick", "--device", str(device), "--out", str(lnln_json)]
    promma = [sys.executable, str(HERE / "bench_promma.py"), "--device", str(device)]
    if a.dry_run:  # tiny sizes, one variant
        lnln += ["--variants", "ours", "--shape", "small", "--encoder", "tiny", "--batch", "4", "--eval-batch", "4",
                 "--quick-batches", "1", "--threads", "1"]
        promma += ["--batch", "2", "--repeats", "1", "--threads", "1"]
    else:
        lnln += ["--variants", "authors,ours"]
        promma += ["--repeats", "3"]
    res = {}
    for name, cmd, limit in (("lnln", lnln, a.step_timeout), ("promma", promma, a.step_timeout // 2)):
        t0 = time.perf_counter()
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=limit)
        except subprocess.TimeoutExpired:
            res[name] = {"error": f"timed out after {limit} s", "command": " ".join(cmd)}
            continue
        if p.returncode != 0:
            res[name] = {"error": p.stderr[-2000:], "command": " ".join(cmd)}
            continue
        r = json.loads(lnln_json.read_text()) if name == "lnln" else json.loads(p.stdout[p.stdout.index("{"):])
        keep = ("speedup_train_vs_authors", "speedup_eval_vs_authors", "memory_ratio_vs_authors", "max_abs_pred_diff_vs_authors",
                "speedup_batched_vs_loop", "device")
        res[name] = {"wall_s": time.perf_counter() - t0, "json": str(lnln_json) if name == "lnln" else None,
                     **{k: r[k] for k in keep if k in r}}
        for v in ("ours", "authors"):
            if v in r:
                res[name][v] = {"train_samples_per_s": r[v]["epoch"]["train"]["samples_per_s"],
                                "eval_samples_per_s": r[v]["epoch"]["eval"]["samples_per_s"],
                                "train_step_s": r[v]["train_step"]["median_s"], "peak_memory_mb": r[v]["peak_memory_mb"]}
        if name == "promma":
            res[name]["batched_step_s"] = r["batched"]["median_s"]
            res[name]["loop_step_s"] = r["loop"]["median_s"]
            res[name]["peak_memory_mb"] = r["batched"]["peak_memory_mb"]
    return res


def ddp_smoke(a, device) -> dict:
    n = torch.cuda.device_count() if device.type == "cuda" else 0
    if n < 2:
        return {"skipped": f"{n} CUDA device(s) visible; the smoke test needs 2"}
    script = HERE / "ddp_smoke.sh"
    tmp = Path(tempfile.mkdtemp(prefix="gpu-check-ddp-"))
    if script.is_file():
        cmd = ["bash", str(script)]
    else:
        torchrun = shutil.which("torchrun") or "torchrun"
        cmd = [torchrun, "--standalone", "--nproc_per_node=2", "-m", "mmsa_core", "train", "--config", "lnln_default",
               "--epochs", "1", "--device", "cuda", "--quiet", "--out", str(tmp / "run")]
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=a.step_timeout)
    except subprocess.TimeoutExpired:
        return {"command": " ".join(cmd), "error": f"timed out after {a.step_timeout} s"}
    return {"command": " ".join(cmd), "returncode": p.returncode, "wall_s": time.perf_counter() - t0,
            "output_tail": (p.stdout + p.stderr)[-1500:], "devices": n}


def lnln_mosi_training(a, device, seconds: float) -> dict:
    """The trainer on the lnln_mosi preset: a warm-up epoch, then as many epochs as ``seconds`` allows."""
    from mmsa_core.config import load_config
    from mmsa_core.experiment import load_dataset, model_config
    from mmsa_core.models import build_model
    from mmsa_core.train import fit
    from mmsa_core.utils import set_seed

    text = dict(kind="tiny") if a.dry_run else BERT_BASE
    over = {"data": {"dataset": "synth", "synth_shape": "small" if a.dry_run else "mosi", "name": None},
            "train": {"device": str(device), "progress": False, "group_by_length": a.group_by_length},
            "model_config": {"text": text}}
    cfg = load_config("lnln_mosi", over)
    ds = load_dataset(cfg.data)
    if a.dry_run:  # a few batches: the code path, not the figures
        ds = replace(ds, splits={k: replace(v, data=v.data.take(torch.arange(min(len(v), 24)))) for k, v in ds.splits.items()})
    tmp = Path(tempfile.mkdtemp(prefix="gpu-check-lnln-"))

    def train(epochs: int, name: str):
        set_seed(cfg.train.seed, cfg.train.deterministic, cfg.train.threads)
        model = build_model("lnln", model_config(cfg), ds.spec)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t = replace(cfg.train, epochs=epochs, out_dir=str(tmp / name))
        t0 = time.perf_counter()
        res = fit(model, ds, t, tmp / name, f"gpu-check-{name}")
        sync(device)
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
        return time.perf_counter() - t0, res, peak

    t_warm, res, peak = train(1, "warm")  # allocator, kernels and data on the device: not in the per-epoch figure
    # epochs that fit in what is left, one epoch's time (about the start-up of the second run) to spare
    epochs = 1 if a.dry_run else min(cfg.train.epochs, int((seconds - t_warm) / max(t_warm, 1e-9)) - 1)
    if epochs >= 1:
        wall, res, peak = train(epochs, "timed")
        per_epoch = wall / epochs
    else:  # no time left for a second run: the warm-up epoch is the figure (an upper bound)
        epochs, per_epoch = 0, t_warm
    shutil.rmtree(tmp, ignore_errors=True)
    return {"preset": "lnln_mosi", "text_encoder": "BERT-base-sized, random weights" if not a.dry_run else "tiny",
            "data": f"synth --shape {cfg.data.synth_shape}", "n_train": len(ds["train"]), "batch_size": cfg.train.batch_size,
            "group_by_length": a.group_by_length, "amp": cfg.train.amp and device.type == "cuda",
            "warmup_epoch_s": t_warm, "epochs_timed": epochs, "seconds_per_epoch": per_epoch,
            "per_epoch_from": "the timed run" if epochs else "the warm-up epoch (no time left for more)",
            "projected_200_epochs_h": 200 * per_epoch / 3600, "peak_memory_mb": peak,
            "final_train_loss": sum(v for k, v in res.history[-1].items() if k.startswith("train_")),
            "best_valid_MAE": res.best_score}


# ----------------------------------------------------------------------------------------------- driver
def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dry-run", action="store_true", help="tiny sizes, every section once (the CPU path of the tests)")
    ap.add_argument("--budget-s", type=float, default=450.0, help="wall-clock budget of the whole check")
    ap.add_argument("--step-timeout", type=int, default=150, help="seconds allowed to each benchmark subprocess")
    ap.add_argument("--amp-epochs", type=int, default=3, help="fp32 epochs before the AMP comparison (0: random weights)")
    ap.add_argument("--group-by-length", action="store_true", help="train the lnln_mosi run on length-grouped batches")
    ap.add_argument("--peak-tflops", type=float, default=None, help="the device's dense bf16 peak, if not in the table")
    ap.add_argument("--out", default=None, help="JSON file (default mmsa_core/reference/benchmarks/gpu-check-<cpu|cuda>.json)")
    a = ap.parse_args(argv)
    if a.dry_run:
        a.amp_epochs = 0
    t_start = time.perf_counter()
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device visible (use --device cpu --dry-run to test the script)")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    results_dir = HERE.parent / "mmsa_core" / "reference" / "benchmarks"  # package data, read by the book
    if a.out:
        path = Path(a.out)
    elif a.dry_run:  # never next to the measured files
        path = Path(tempfile.mkdtemp(prefix="gpu-check-")) / "gpu-check-dry-run.json"
    else:
        path = results_dir / f"gpu-check-{device.type}.json"
    report = {"benchmark": "gpu_check", "dry_run": a.dry_run, "budget_s": a.budget_s, **environment(device),
              "devices_visible": torch.cuda.device_count() if device.type == "cuda" else 0, "sections": {}}

    def section(name, fn, *args):
        t0 = time.perf_counter()
        try:
            report["sections"][name] = {"ok": True, **fn(*args)}
        except Exception as e:  # noqa: BLE001 - a failing section is recorded; the others still run
            report["sections"][name] = {"ok": False, "error": f"{type(e).__name__}: {e}",
                                        "traceback": traceback.format_exc()[-2000:]}
        report["sections"][name]["section_s"] = time.perf_counter() - t0
        path.write_text(json.dumps(report, indent=2, default=float) + "\n")
        print(f"gpu_check: {name} {'ok' if report['sections'][name]['ok'] else 'FAILED'} "
              f"({report['sections'][name]['section_s']:.1f} s)", file=sys.stderr, flush=True)

    section("amp", amp_agreement, a, device)
    section("text_encoder", text_encoder_peak, a, device)
    section("steps", step_benchmarks, a, device, results_dir)
    section("ddp", ddp_smoke, a, device)
    left = a.budget_s - (time.perf_counter() - t_start) - 15  # 15 s to spare for the final write
    section("lnln_mosi", lnln_mosi_training, a, device, left)
    report["wall_s"] = time.perf_counter() - t_start
    path.write_text(json.dumps(report, indent=2, default=float) + "\n")
    print(f"wrote {path}", file=sys.stderr)
    return report


if __name__ == "__main__":
    main()
