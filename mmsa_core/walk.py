"""From the authors' protocol to ours, one practice at a time: how much of a published number is the protocol?

A walk starts from a model's ``<model>_authors_<preset>.yaml`` (every practice of the authors' code) and switches
one practice to ours per step, cumulatively; every step is trained and tested for each seed with
:func:`mmsa_core.experiment.run` in ``<out>/<model>/<step>-<seed>/`` (finished steps are reused, unfinished ones
resume). :func:`walk_table` turns the records into the table the chapter shows: one row per step, each metric
averaged over the test rates of the training protocol, mean ± std over seeds, and the change from the row above.

The last step of each walk changes no training: it reads F1 in the (truth, pred) order from the previous step's
records, where the earlier rows show the authors' ``f1_score(pred, truth)``. Rows that select checkpoints on the
TEST split (LNLN's) or report the validation split that selected them (MPLMM's printout) are flagged in the column
``numbers from the selecting split``: a defect of those protocols, never one of the book's rows.

Command line: ``python -m mmsa_core walk --out results/synth-small-walk [--models lnln mplmm] [--seeds 1111 ...]``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .config import RunConfig, from_dict, load_config, merge, parse_overrides
from .results import format_delta, format_mean_std, seed_stats, _metric_order

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Step:
    name: str  # folder name
    label: str  # what the row says
    switch: tuple[str, ...] = ()  # KEY=VALUE overrides that this step adds (cumulative); () and f1 False: the start
    f1_order: bool = False  # no training: F1 read as f1_score(truth, pred) from the previous step's records
    defect: bool = False  # its numbers come from a split that chose them (test-set selection, validation printout)


WALKS = {
    "lnln": ("lnln_authors", "A", (
        Step("authors", "the authors' protocol (selected per metric on TEST)", defect=True),
        Step("masks", "+ attention masks on padding and dropped frames", ("model_config.mask_attention=true",), defect=True),
        Step("grl", "+ gradient reversal on the discriminator only", ("model_config.grl_only_discriminator=true",),
             defect=True),
        Step("corruption", "+ fresh training corruption every epoch, test masks drawn per rate",
             ("train.train_corruption=fresh", "train.nested_test_masks=false"), defect=True),
        Step("schedule", "+ warm-up + cosine per optimiser step (AMP on a GPU)", ("train.schedule=warmup_cosine",
                                                                                 "train.amp=true"), defect=True),
        Step("valid", "+ selected on VALIDATION (still per metric)", ("train.select_split=valid",)),
        Step("one", "+ one checkpoint for all metrics (= ours)", ("train.select_per_metric=false",)),
        Step("f1", "+ F1 as f1_score(truth, pred)", f1_order=True),
    )),
    "mplmm": ("mplmm_authors", "B", (
        Step("authors", "the authors' printout: VALIDATION split", ("train.report_split=valid",), defect=True),
        Step("test", "+ test split reported", ("train.report_split=test",)),
        Step("shuffle", "+ shuffled training batches", ("train.shuffle=true",)),
        Step("valid", "+ one fixed validation corruption", ("train.valid_redraw=false",)),
        Step("schedule", "+ AdamW (wd 1e-4), warm-up + cosine per step (AMP on a GPU)",
             ("train.schedule=warmup_cosine", "train.weight_decay=1.0e-4", "train.amp=true")),
        Step("loss", "+ MSE loss", ("model_config.loss=mse",)),
        Step("f1", "+ F1 as f1_score(truth, pred)", f1_order=True),
    )),
}
DEFAULT_SEEDS = (1111, 1112, 1113)


def step_config(model: str, step_index: int, seed: int, out, preset: str = "default", data: str = "synth",
                epochs: int | None = None, overrides: list[str] | None = None) -> RunConfig:
    """The resolved configuration of one step of a walk (switches of every step up to ``step_index``)."""
    preset_model, protocol, steps = WALKS[model]
    sw = [kv for s in steps[: step_index + 1] for kv in s.switch]
    if steps[step_index].f1_order:
        raise ValueError(f"walk {model}: step {steps[step_index].name!r} trains nothing (it reads the previous step)")
    d = merge({}, parse_overrides(sw + list(overrides or [])))
    d = merge(d, {"data": {"dataset": data}, "train": {"seed": int(seed), "protocol": protocol, "progress": False,
                                                       "out_dir": str(Path(out) / model / f"{steps[step_index].name}-{seed}")}})
    if epochs is not None:
        d["train"]["epochs"] = int(epochs)
    base = load_config(f"{preset_model}_{preset}")
    from dataclasses import asdict

    return from_dict(RunConfig, merge(asdict(base), d), f"walk {model} step {steps[step_index].name}")


def run_walk(model: str, out, seeds=DEFAULT_SEEDS, preset: str = "default", data: str = "synth",
             epochs: int | None = None, overrides: list[str] | None = None) -> pd.DataFrame:
    """Train (or reuse) every step of ``model``'s walk for every seed; the records of all steps, with a ``step``
    column (the step's index) and ``step_label``."""
    from .experiment import load_dataset, run
    from .reproduce import cell_state, read_csv

    _, _, steps = WALKS[model]
    frames, ds = [], None
    for i, st in enumerate(steps):
        if st.f1_order:
            continue
        for seed in seeds:
            cfg = step_config(model, i, seed, out, preset, data, epochs, overrides)
            res = Path(cfg.train.out_dir) / "results.csv"
            if cell_state(cfg) != "finished":
                log.info("walk %s: step %s, seed %s", model, st.name, seed)
                ds = ds or load_dataset(cfg.data)
                run(cfg, ds)
            df = read_csv(res)
            df.insert(0, "step", i)
            frames.append(df)
    return pd.concat(frames, ignore_index=True)


def step_values(records: pd.DataFrame, model: str) -> pd.DataFrame:
    """(step, seed, metric, value): each metric averaged over the 10 test levels of the training protocol, per step
    of the walk and seed; F1 is the swapped F1 until the F1 step (which reads the step above it)."""
    _, protocol, steps = WALKS[model]
    d = records[(records["setting"] == "rate") & (records["protocol"] == protocol)]
    per_seed = d.groupby(["step", "seed", "metric"])["value"].mean().reset_index()
    rows = []
    for i, st in enumerate(steps):
        src = i - 1 if st.f1_order else i
        part = per_seed[per_seed["step"] == src].copy()
        if not st.f1_order:  # the authors' F1 order until the F1 step
            swapped = part[part["metric"].str.endswith(" swapped")].copy()
            swapped["metric"] = swapped["metric"].str.replace(" swapped", "", regex=False)
            part = pd.concat([part[~part["metric"].isin(swapped["metric"]) & ~part["metric"].str.endswith(" swapped")],
                              swapped])
        else:
            part = part[~part["metric"].str.endswith(" swapped")]
        part["step"] = i
        rows.append(part)
    return pd.concat(rows, ignore_index=True)


def walk_table(records: pd.DataFrame, model: str, metrics=None, numeric: bool = False) -> pd.DataFrame:
    """One row per step: each metric averaged over the 10 test levels of the training protocol, mean ± std over
    seeds, and the change from the row above (``Δ <metric>``). F1 columns hold the swapped F1 until the F1 step."""
    _, protocol, steps = WALKS[model]
    per_seed = step_values(records, model)
    mets = _metric_order(m for m in per_seed["metric"].unique() if metrics is None or m in metrics)
    st = seed_stats(per_seed[per_seed["metric"].isin(mets)], ["step", "metric"])
    mean = st.pivot(index="step", columns="metric", values="mean")[mets]
    std = st.pivot(index="step", columns="metric", values="std")[mets]
    labels = [s.label for s in steps]
    if numeric:
        t = mean.copy()
    else:
        t = pd.DataFrame({m: [format_mean_std(a, b, m) for a, b in zip(mean[m], std[m])] for m in mets}, index=mean.index)
        for m in mets:
            t[f"Δ {m}"] = [""] + [format_delta(b - a, m) for a, b in zip(mean[m][:-1], mean[m][1:])]
    t.index = pd.Index([labels[i] for i in t.index], name="step")
    t.insert(0, "numbers from the selecting split", ["yes (defect)" if steps[i].defect else "no" for i in mean.index])
    n = records["seed"].nunique()
    t.attrs["caption"] = (f"{model}: from the authors' protocol (first row) to ours (last row), one practice per row; "
                          f"each metric averaged over the 10 test levels of protocol {protocol}, mean ± std over {n} "
                          f"seed(s); Δ = change from the row above (accuracy / F1 in percentage points)")
    return t


def load_walk(folder, model: str) -> pd.DataFrame:
    """The records of a finished walk (``<folder>/<model>_records.csv``, written by ``python -m mmsa_core walk``)."""
    from .reproduce import read_csv

    f = Path(folder) / f"{model}_records.csv"
    if not f.is_file():
        raise FileNotFoundError(f"{f} not found: run the walk first, e.g. `python -m mmsa_core walk --out {folder} "
                                f"--models {model}`")
    return read_csv(f)


def add_arguments(p) -> None:
    p.add_argument("--out", required=True, help="folder for the walk's runs (e.g. results/synth-small-walk)")
    p.add_argument("--models", nargs="+", default=list(WALKS), choices=list(WALKS))
    p.add_argument("--seeds", nargs="+", type=int, default=list(DEFAULT_SEEDS))
    p.add_argument("--preset", default="default", help="the <model>_authors_<preset>.yaml to start from")
    p.add_argument("--data", default="synth", help="'synth' or the path of an MMSA pickle")
    p.add_argument("--epochs", type=int, help="override the epochs of every step")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a field of every step")


def walk_findings(records: pd.DataFrame, model: str, metrics=("MAE", "Acc-2 has-0")) -> list[str]:
    """What the walk's table says, in sentences computed from it: per metric, the first and the last row, and the
    step that moved it most, against the spread of the seeds (the largest std over seeds of any row)."""
    _, _, steps = WALKS[model]
    st = seed_stats(step_values(records, model), ["step", "metric"])
    out = []
    for m in metrics:
        s = st[st["metric"] == m].sort_values("step")
        if s.empty:
            continue
        mean, noise = s["mean"].to_numpy(), float(s["std"].max())
        delta = mean[1:] - mean[:-1]
        k = int(abs(delta).argmax())
        out.append(f"{m}: {format_mean_std(mean[0], None, m)} under the authors' protocol, "
                   f"{format_mean_std(mean[-1], None, m)} under ours "
                   f"(total {format_delta(mean[-1] - mean[0], m)}); the largest single step is "
                   f"'{steps[int(s['step'].iloc[k + 1])].label}' ({format_delta(delta[k], m)}), against a seed std "
                   f"of up to {format_delta(noise, m).lstrip('+')} in any row.")
    return out


def cli(a) -> None:
    from .results import to_markdown

    for m in a.models:
        rec = run_walk(m, a.out, a.seeds, a.preset, a.data, a.epochs, a.set)
        rec.to_csv(Path(a.out) / f"{m}_records.csv", index=False)
        t = walk_table(rec, m)
        print(f"### {m}\n\n{t.attrs['caption']}\n\n{to_markdown(t)}\n")


__all__ = ["Step", "WALKS", "load_walk", "run_walk", "step_config", "step_values", "walk_findings", "walk_table"]
