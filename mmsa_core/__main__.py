"""Command line: ``python -m mmsa_core {synth,train,evaluate,sweep,reproduce,tables} --help``."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from pathlib import Path

from .config import ConfigError, TrainConfig, merge, parse_overrides
from .data.mmsa import DataError, DataSpec
from .utils import CheckpointError, RunFolderBusy

# The project's own errors: each message names the file / key / folder and says what was expected and found.
# Bad data, configs, checkpoints and command lines end in one of these (tests/test_reliability.py fuzzes that);
# the command line prints it as one "error: ..." line and exits 2. FloatingPointError: training diverged.
PROJECT_ERRORS = (DataError, ConfigError, CheckpointError, RunFolderBusy, FileNotFoundError, FloatingPointError)


def _common_run_args(p):
    p.add_argument("--config", help="YAML file with model / data / train / model_config sections, or the name of a "
                                    "preset that ships with the package, e.g. lnln_default or promma_mosi")
    p.add_argument("--model", help="model name (baseline, ...)")
    p.add_argument("--data", help="'synth' (embedded default) or the path of an MMSA pickle (read by a restricted "
                                  "unpickler: arrays and plain values only)")
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
    df = run(cfg, restart=a.restart)
    if distributed.world_size() > 1:
        import torch.distributed

        torch.distributed.destroy_process_group()
    if df.empty:  # a torchrun rank other than 0: rank 0 reports
        return
    summary = df[(df.setting == "rate") & (df.protocol == cfg.train.protocol)].groupby("metric").value.mean()
    prov = json.loads((Path(cfg.train.out_dir) / "provenance.json").read_text())
    print(f"dataset {prov['dataset']}: family {prov['dataset_family']} ({prov['dataset_family_source']})")
    print(f"results: {Path(cfg.train.out_dir) / 'results.csv'}")
    print(f"test, protocol {cfg.train.protocol}, mean over rates 0.0..0.9:")
    for k, v in summary.items():
        print(f"  {k:12s} {v:.4f}")


def _eval_setup(a):
    """The checkpoint's model and the data, read as the model was trained: the dataset family (hence label range
    and metrics) stored in the checkpoint, not one guessed again."""
    from .config import DataConfig
    from .data.mmsa import FAMILIES
    from .experiment import check_spec, check_token_ids, load_checkpoint, load_dataset
    from .utils import resolve_device

    device = resolve_device(a.device)
    model, ck = load_checkpoint(a.checkpoint, None, device)
    saved = ck["data_spec"]
    family = saved.get("family") or {"zh": "sims", "en": "mosi"}.get(saved.get("language"))  # older: the language
    if family is not None and family not in FAMILIES:
        raise ValueError(f"{a.checkpoint}: data_spec names an unknown dataset family {family!r}")
    ds = load_dataset(DataConfig(dataset=a.data, family=family))
    check_spec(DataSpec(**saved), ds.spec, str(a.checkpoint))
    check_token_ids(model, ds, "checkpoint")
    why = f"stored in {a.checkpoint}" if family is not None else ds.family_source
    print(f"dataset {ds.name}: family {ds.spec.family} ({why})", file=sys.stderr)  # stdout: the numbers alone
    return ds, model, device


def cmd_evaluate(a):
    from .evaluate import evaluate

    if a.mode is not None and a.protocol != "B":
        raise ConfigError(f"--mode {a.mode} is a protocol-B missing mode; add -p B (protocol A drops tokens and frames "
                          "at --level)")
    if not 0.0 <= a.level <= 1.0:
        raise ConfigError(f"--level {a.level}: expected a rate in [0, 1]")
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
    p.add_argument("--restart", action="store_true",
                   help="ignore the run folder's last.pt (e.g. a corrupt one) and train from epoch 0")
    p.set_defaults(fn=cmd_train)

    for name, fn, hlp in (("evaluate", cmd_evaluate, "evaluate a checkpoint at one missing rate or mode"),
                          ("sweep", cmd_sweep, "evaluate a checkpoint at every rate 0.0..0.9 (and, for B, every mode)")):
        p = sub.add_parser(name, help=hlp)
        p.add_argument("--checkpoint", required=True, help="best.pt written by train (read with weights_only=True)")
        p.add_argument("--data", default="synth", help="'synth' or the path of an MMSA pickle")
        p.add_argument("--split", default="test", choices=["train", "valid", "test"])
        p.add_argument("-p", "--protocol", default="A", choices=["A", "B"])
        p.add_argument("--eval-seed", type=int, default=0)
        p.add_argument("--device", default="auto")
        if name == "evaluate":
            p.add_argument("--level", type=float, default=0.0, help="r (protocol A) or eta (protocol B)")
            p.add_argument("--mode", type=int, choices=range(7), metavar="{0..6}",
                           help="protocol B (-p B): a fixed missing mode 0..6 instead of eta")
        else:
            p.add_argument("--out", help="CSV file for the tidy records")
        p.set_defaults(fn=fn)

    for name, mod, hlp in (("reproduce", "reproduce", "run (or finish) the grid models x protocols x seeds and collect its records"),
                           ("tables", "results", "the book's tables (markdown or HTML) from a results folder"),
                           ("walk", "walk", "from the authors' protocol to ours, one practice at a time (LNLN, MPLMM)"),
                           ("mechanisms", "mechanisms", "measure every mechanism against the testbed's truth into "
                                                        "results/<set>/mechanisms.json")):
        m = importlib.import_module(f".{mod}", __package__)
        p = sub.add_parser(name, help=hlp, description=hlp)
        m.add_arguments(p)
        p.set_defaults(fn=m.cli)

    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        a.fn(a)
    except (*PROJECT_ERRORS, ValueError, RuntimeError) as e:  # ValueError / RuntimeError: model and grid checks
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
