"""Command line: ``python -m mmsa_core {synth,train,evaluate,sweep,reproduce,tables} --help``."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path

from .config import ConfigError, TrainConfig, merge, parse_overrides
from .data.mmsa import DataError


def _common_run_args(p):
    p.add_argument("--config", help="YAML file with model / data / train / model_config sections, or the name of a "
                                    "preset that ships with the package, e.g. lnln_default or promma_mosi")
    p.add_argument("--model", help="model name (baseline, ...)")
    p.add_argument("--data", help="'synth' (embedded default) or the path of an MMSA pickle (loaded with pickle: trusted files only)")
    p.add_argument("-p", "--protocol", choices=["A", "B"], help="missing-data protocol for training")
    p.add_argument("--epochs", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--out", help="output folder (default runs/<model>-<protocol>-<seed>)")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config field, e.g. --set train.lr=1e-4 --set model_config.dim=64")


def _run_config(a):
    from .config import load_config

    over = {}
    flat = {"model": a.model, "data.dataset": a.data, "train.protocol": a.protocol, "train.epochs": a.epochs,
            "train.seed": a.seed, "train.out_dir": a.out, "train.device": a.device}
    for k, v in flat.items():
        if v is not None:
            node = over
            *ps, leaf = k.split(".")
            for p_ in ps:
                node = node.setdefault(p_, {})
            node[leaf] = v
    if a.quiet:
        over = merge(over, {"train": {"progress": False}})
    cfg = load_config(a.config, merge(over, parse_overrides(a.set)))
    chosen = a.out is not None or any(s.startswith("train.out_dir=") for s in a.set)
    if not chosen and cfg.train.out_dir == TrainConfig.out_dir:  # nor did the config file
        cfg.train.out_dir = f"runs/{cfg.model}-{cfg.train.protocol}-{cfg.train.seed}"
    return cfg


def cmd_synth(a):
    from .data import synth

    path = synth.generate(a.out, a.shape, a.seed, a.variant)
    print(f"wrote {path} and its ground truth {synth.truth_path(path).name} (shape {a.shape}, variant {a.variant}, "
          f"seed {a.seed})")


def cmd_train(a):
    from .experiment import run

    from . import distributed

    cfg = _run_config(a)
    df = run(cfg)
    if distributed.world_size() > 1:
        import torch.distributed

        torch.distributed.destroy_process_group()
    if df.empty:  # a torchrun rank other than 0: rank 0 reports
        return
    summary = df[(df.setting == "rate") & (df.protocol == cfg.train.protocol)].groupby("metric").value.mean()
    print(f"results: {Path(cfg.train.out_dir) / 'results.csv'}")
    print(f"test, protocol {cfg.train.protocol}, mean over rates 0.0..0.9:")
    for k, v in summary.items():
        print(f"  {k:12s} {v:.4f}")


def _eval_setup(a):
    from .config import DataConfig
    from .experiment import load_checkpoint, load_dataset
    from .utils import resolve_device

    ds = load_dataset(DataConfig(dataset=a.data))
    device = resolve_device(a.device)
    model, ck = load_checkpoint(a.checkpoint, ds.spec, device)
    return ds, model, device


def cmd_evaluate(a):
    from .evaluate import evaluate

    ds, model, device = _eval_setup(a)
    data = ds[a.split].data.to(device)
    m = evaluate(model, data, ds.spec, a.protocol, a.level, a.eval_seed, a.split, mode=a.mode)
    for k, v in m.items():
        print(f"{k:12s} {v:.4f}")


def cmd_sweep(a):
    import pandas as pd

    from .evaluate import sweep

    ds, model, device = _eval_setup(a)
    data = ds[a.split].data.to(device)
    df = pd.DataFrame(sweep(model, data, ds.spec, a.protocol, a.eval_seed, a.split))
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(a.out, index=False)
        print(f"wrote {a.out}")
    print(df[df.setting == "rate"].pivot(index="level", columns="metric", values="value").round(4).to_string())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mmsa_core", description="Multimodal sentiment analysis with missing modalities.")
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("synth", help="write the embedded default dataset as an MMSA pickle")
    p.add_argument("--out", required=True, help="path of the pickle to write")
    p.add_argument("--shape", default="small", choices=["small", "mosi"], help="small (CI-sized) or mosi (full MOSI shapes)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variant", default="redundant", choices=["redundant", "complementary"],
                   help="the testbed's variant: missing modalities largely predictable from the others, or not")
    p.set_defaults(fn=cmd_synth)

    p = sub.add_parser("train", help="train a model, select on validation, evaluate on test; resumes an interrupted run")
    _common_run_args(p)
    p.set_defaults(fn=cmd_train)

    for name, fn, hlp in (("evaluate", cmd_evaluate, "evaluate a checkpoint at one missing rate or mode"),
                          ("sweep", cmd_sweep, "evaluate a checkpoint at every rate 0.0..0.9 (and, for B, every mode)")):
        p = sub.add_parser(name, help=hlp)
        p.add_argument("--checkpoint", required=True, help="best.pt written by train")
        p.add_argument("--data", default="synth", help="'synth' or the path of an MMSA pickle")
        p.add_argument("--split", default="test", choices=["train", "valid", "test"])
        p.add_argument("-p", "--protocol", default="A", choices=["A", "B"])
        p.add_argument("--eval-seed", type=int, default=0)
        p.add_argument("--device", default="auto")
        if name == "evaluate":
            p.add_argument("--level", type=float, default=0.0, help="r (protocol A) or eta (protocol B)")
            p.add_argument("--mode", type=int, help="protocol B: a fixed missing mode 0..6 instead of eta")
        else:
            p.add_argument("--out", help="CSV file for the tidy records")
        p.set_defaults(fn=fn)

    for name, mod, hlp in (("reproduce", "reproduce", "run (or finish) the grid models x protocols x seeds and collect its records"),
                           ("tables", "results", "the book's tables (markdown or HTML) from a results folder"),
                           ("walk", "walk", "from the authors' protocol to ours, one practice at a time (LNLN, MPLMM)")):
        m = importlib.import_module(f".{mod}", __package__)
        p = sub.add_parser(name, help=hlp, description=hlp)
        m.add_arguments(p)
        p.set_defaults(fn=m.cli)

    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        a.fn(a)
    except (DataError, ConfigError, FileNotFoundError, ValueError, RuntimeError, FloatingPointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
