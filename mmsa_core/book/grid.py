"""The reference grid (chapters 8 and 9): the records, histories and provenance that ``python -m mmsa_core
reproduce`` wrote, read back as the chapters show them, and one cell of the grid re-trained live.

The grid of the embedded default ships with the package, in :data:`REFERENCE_GRID`
(``mmsa_core/reference/synth-small/``): the chapters read the same files from a checkout, a pip install or Colab.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .runs import PACKAGE, preserved_rng, read_json
from .tables import PERCENT_PREFIXES, acc2_name, at_rates, headline_metrics, percent_rounded

# The committed grids of the embedded testbed, one per variant (records.csv, histories.csv, provenance.json and
# mechanisms.json: package data). Each is written by `python -m mmsa_core reproduce --set train.threads=1
# --set data.synth_variant=<variant> --out mmsa_core/reference/synth-small-<variant>` (and `mechanisms`); the
# cells' runs/ folder that this leaves beside them stays out of git and out of the wheel.
REFERENCE_GRIDS = {v: PACKAGE / "reference" / f"synth-small-{v}" for v in ("redundant", "complementary")}
REFERENCE_GRID = REFERENCE_GRIDS["redundant"]  # the default variant's
# chapter 11: the walks from the authors' protocols to ours (``python -m mmsa_core walk``: <model>_records.csv)
REFERENCE_WALK = PACKAGE / "reference" / "synth-small-walk"


# -------------------------------------------------------------------------- reading a grid (chapters 8 and 9)
def _language(ref) -> str:
    """``"zh"`` for a CH-SIMS grid (its own metrics), else ``"en"``."""
    return "zh" if str(ref.records["dataset"].iloc[0]) == "sims" else "en"


@dataclass
class Reference:
    """A results folder of the ``reproduce`` grid: its records, per-epoch histories and provenance."""

    dir: Path
    records: pd.DataFrame
    histories: pd.DataFrame
    provenance: dict


def reference_dir(results: str | Path | None = None) -> Path:
    """A results folder; a testbed variant's name (``"redundant"``, ``"complementary"``) for its committed grid
    (:data:`REFERENCE_GRIDS`); None for the default variant's, :data:`REFERENCE_GRID`."""
    if results is None:
        return REFERENCE_GRID
    if str(results) in REFERENCE_GRIDS:
        return REFERENCE_GRIDS[str(results)]
    return Path(results).expanduser()


def reference(results: str | Path | None = None) -> Reference:
    """Load a grid's ``records.csv`` (validated), ``histories.csv`` and ``provenance.json``; a missing folder
    gets one error that says which command writes it."""
    from ..records import load_histories, load_records

    d = reference_dir(results)
    if not (d / "records.csv").is_file():
        raise FileNotFoundError(f"{d / 'records.csv'} not found: run the grid first, e.g. "
                                f"`python -m mmsa_core reproduce --out {d}` (add --data PICKLE for real data)")
    prov = read_json(d / "provenance.json") if (d / "provenance.json").is_file() else {}
    return Reference(d, load_records(d / "records.csv"), load_histories(d), prov)


def grid_summary(ref: Reference) -> pd.DataFrame:
    """One row per model of the grid: cells, training protocols, seeds, selected epochs and training time
    (from the provenance), and where the cells ran (commit, device, torch)."""
    cells = pd.DataFrame([{"cell": k, **{f: v.get(f) for f in ("commit", "device", "torch", "wall_s", "best_epoch")},
                           "model": v["config"]["model"], "protocol": v["config"]["train"]["protocol"],
                           "seed": v["config"]["train"]["seed"]} for k, v in ref.provenance.get("cells", {}).items()])
    if cells.empty:
        raise ValueError(f"{ref.dir / 'provenance.json'}: no cells")
    join = lambda s: ", ".join(map(str, dict.fromkeys(s)))  # noqa: E731
    rows = []
    for model, g in cells.groupby("model", sort=False):
        rows.append({"model": model, "cells": len(g), "trained under": join(sorted(g.protocol)),
                     "seeds": join(sorted(g.seed)),
                     "selected epoch (min-max)": f"{int(g.best_epoch.min())}-{int(g.best_epoch.max())}",
                     "training + sweeps (s, all cells)": round(float(g.wall_s.sum())),
                     "commit": join(g.commit), "device": join(g.device), "torch": join(g.torch)})
    return pd.DataFrame(rows).set_index("model")


def reference_acc2(ref: Reference) -> str:
    """The binary accuracy a table of ``ref`` shows: ``Acc-2`` for CH-SIMS, ``Acc-2 non-0`` for the others."""
    return acc2_name(_language(ref))


# ------------------------------------------------------------------------------------- what the chapters show
def robustness_curves(ref: Reference, protocol: str = "A", metrics=("MAE",)) -> pd.DataFrame:
    """Tidy rows (model, level, value, std, metric) for :func:`mmsa_core.viz.curve`: each metric at every level of
    ``protocol`` for the models trained under it, mean and std over seeds (accuracy in %)."""
    trained_here = ref.records[ref.records.train_protocol == protocol]
    return pd.concat([at_rates(trained_here, m, protocol) for m in metrics], ignore_index=True)


def mode_means(ref: Reference, metric: str = "MAE", train_protocol: str = "B") -> pd.DataFrame:
    """Tidy rows (model, mode, value): ``metric`` under each protocol-B missing mode, mean over seeds."""
    from ..results import mode_table

    wide = mode_table(ref.records, metric, train_protocols=[train_protocol], numeric=True)
    wide = wide.droplevel("train_protocol")
    return wide.reset_index().melt(id_vars="model", var_name="mode", value_name="value")


def optimism(ref: Reference, metrics=("MAE",)) -> pd.DataFrame:
    """How much better the best test epoch looks than the epoch selected on validation, per run type
    ("model (protocol)") and metric, mean over seeds; accuracy and F1 in percentage points."""
    from ..results import selection_gap

    gap = selection_gap(ref.histories, metrics=list(metrics))
    pct = gap.metric.str.startswith(PERCENT_PREFIXES)
    gap["optimism"] = gap.optimism.where(~pct, gap.optimism * 100)
    gap["run"] = gap.model + " (" + gap.train_protocol + ")"
    mean = gap.groupby(["run", "metric"], sort=False).optimism.mean().unstack("metric")
    return mean[list(metrics)].reset_index()


def grid_findings(ref: Reference, metric: str = "MAE") -> pd.DataFrame:
    """What the prose of chapters 8-9 rests on, computed from the grid rather than typed: per training protocol,
    ``metric`` averaged over that protocol's ten levels (mean over seeds) for the best and the worst trained model,
    the spread between them, the median seed-to-seed std, the oracle's value and the best model's gap to it."""
    from ..results import paper_table

    mean = paper_table(ref.records, [metric], numeric=True)[metric]
    std = paper_table(ref.records, [metric])[metric]
    rows = {}
    for proto in sorted(set(mean.index.get_level_values("train_protocol"))):
        m = mean.xs(proto, level="train_protocol")
        trained = m.drop("oracle", errors="ignore")
        lower = metric == "MAE"
        best, worst = (trained.idxmin(), trained.idxmax()) if lower else (trained.idxmax(), trained.idxmin())
        spreads = [float(s.split("± ")[1]) for s in std.xs(proto, level="train_protocol").drop("oracle", errors="ignore")
                   if "± " in str(s)]
        row = {"best model": best, f"best {metric}": trained[best], "worst model": worst, f"worst {metric}": trained[worst],
               "best − worst": trained[best] - trained[worst],
               "median seed std": float(np.median(spreads)) if spreads else float("nan")}
        if "oracle" in m.index:
            row[f"oracle {metric}"] = m["oracle"]
            row["best − oracle"] = trained[best] - m["oracle"]
        rows[f"trained and tested under {proto}"] = row
    df = pd.DataFrame.from_dict(rows, orient="index")
    return df.round({c: 3 for c in df.columns if df[c].dtype.kind == "f"})


def mechanisms(results: str | Path | None = None) -> dict:
    """The grid's ``mechanisms.json`` (:mod:`mmsa_core.mechanisms`): ``results`` as for :func:`reference_dir`."""
    from ..mechanisms import read

    return read(reference_dir(results) / "mechanisms.json")


def _stat(e: dict, name: str) -> tuple[float, float]:
    """(mean, std) of one number of a mechanisms.json entry. LNLN's entries hold ``mean`` and ``std`` dicts of flat
    names (``"text.error"``); ProMMA's hold one ``{mean, std, values}`` per number, nested, named here by their path
    with ``/`` (``"auc_vs_truth"``, ``"metrics/evaluator/MAE over eta"``)."""
    if isinstance(e.get("mean"), dict) and name in e["mean"]:
        return e["mean"][name], e["std"][name]
    leaf = e
    for part in name.split("/"):
        leaf = leaf[part]
    return leaf["mean"], leaf["std"]


def mechanism_table(key: str, names: dict[str, str] | None = None, variants=("redundant", "complementary"),
                    digits: int = 3) -> pd.DataFrame:
    """One mechanism's numbers (key of mechanisms.json) on each variant, as "mean ± std" over its seeds; rows the
    numbers (``names``: which, and how to label them, as :func:`_stat` names them; default all of an LNLN key's),
    columns the variants."""
    cols = {}
    for v in variants:
        e = mechanisms(v)[key]
        keys = list(names) if names else sorted(e["mean"])
        cols[f"{v} ({len(e['seeds'])} seeds)"] = {
            (names or {}).get(k, k): "{:.{d}f} ± {:.{d}f}".format(*_stat(e, k), d=digits) for k in keys}
    df = pd.DataFrame(cols)
    df.index.name = key
    return df


def ablation_reference(key: str = "ablation", metrics=("MAE over eta", "Acc-2 non-0 over eta", "MAE incomplete modes"),
                       variants=("redundant", "complementary"), digits: int = 3) -> pd.DataFrame:
    """A committed ablation of mechanisms.json: ProMMA's (``"ablation"``, rows under ``rows``, measured by
    :func:`mmsa_core.mechanisms_promma.promma_mechanisms`) or LNLN's (``"lnln_ablation"``, numbers named
    ``<row>.<metric>``, by :func:`mmsa_core.mechanisms.measure_lnln_ablation`). One row per variant of the model,
    one column per testbed variant and metric, "mean ± std" over the seeds (accuracies in %)."""
    from ..mechanisms import LNLN_ABLATION
    from ..mechanisms_promma import ABLATION

    order = ["ProMMA", *ABLATION, "LNLN", *LNLN_ABLATION]
    cols = {}
    for v in variants:
        e = mechanisms(v)[key]
        rows = list(e["rows"]) if "rows" in e else list(dict.fromkeys(n.split(".")[0] for n in e["mean"]))
        rows.sort(key=lambda r: order.index(r) if r in order else len(order))  # the file's keys are sorted
        for m in metrics:
            pct = 100 if m.startswith(PERCENT_PREFIXES) else 1
            d = digits - 2 if pct == 100 else digits
            name = (lambda r: f"rows/{r}/{m}") if "rows" in e else (lambda r: f"{r}.{m}")
            cols[(f"{v} ({len(e['seeds'])} seeds)", m)] = {
                r: "{:.{d}f} ± {:.{d}f}".format(*(x * pct for x in _stat(e, name(r))), d=d) for r in rows}
    df = pd.DataFrame(cols)
    df.index.name = "variant"
    return df


def reference_check(run, row: str | None = None) -> tuple[pd.DataFrame, bool]:
    """A chapter's ``run`` on the embedded testbed, trained now or read from the cache, against the committed ablation
    row it is part of (same row, same seed, the run's testbed variant): ProMMA's ``ablation`` (``row`` default
    "ProMMA", summarised by :func:`mmsa_core.mechanisms_promma.ablation_row`) or LNLN's ``lnln_ablation`` (``row``
    default "LNLN", each metric averaged over the ten protocol-A rates of the run's records). Returns the two rows
    ("committed (seed s)", "this run") and whether every number is identical."""
    from ..data import synth
    from ..mechanisms import over_rates

    variant = next((v for v in synth.VARIANTS if run.data.name == synth.dataset_name("small", v)), None)
    if variant is None:
        raise ValueError(f"{run.data.name}: not the embedded testbed at its default size, whose measurement ships "
                         f"with the package ({[synth.dataset_name('small', v) for v in sorted(synth.VARIANTS)]})")
    seed = run.config.train.seed
    lnln = run.config.model == "lnln"
    e = mechanisms(variant)["lnln_ablation" if lnln else "ablation"]
    if seed not in e["seeds"]:
        raise ValueError(f"mechanisms.json of {variant!r} has seeds {e['seeds']}, not this run's seed {seed}")
    if lnln:
        row = row or "LNLN"
        committed, now = e["per_seed"][str(seed)][row], over_rates(run.records)
    else:
        from ..mechanisms_promma import ablation_row

        row = row or "ProMMA"
        committed = {m: v["values"][e["seeds"].index(seed)] for m, v in e["rows"][row].items()}
        now = ablation_row(run.model, run.data)
    tab = pd.DataFrame({f"committed (seed {seed})": {m: committed[m] for m in now}, "this run": now}).T
    tab.index.name = row
    return tab.round(4), all(now[m] == committed[m] for m in now)


def live_cell(ref: Reference, model: str = "baseline", protocol: str = "A", seed: int = 1111,
              metrics: list[str] | None = None) -> tuple[pd.DataFrame, dict]:
    """Re-train one cell of the grid now, with the configuration recorded for it, and compare it with its
    committed records. Returns a table (rows "committed" and "re-run now": each metric averaged over the ten
    test levels of the training protocol, rounded as the tables are) and a summary of the record-by-record
    comparison: the tolerance it used (0, bit for bit, on the kind of machine that wrote the grid, else
    :data:`~mmsa_core.reproduce.ACROSS_MACHINES_ATOL`: :func:`~mmsa_core.reproduce.rerun_atol`), whether every
    record agrees within it, the differences beyond it, if any, and the largest difference."""
    import tempfile

    from ..reproduce import compare_records, rerun_atol, rerun_cell

    with tempfile.TemporaryDirectory(prefix="mmsa-live-") as tmp, preserved_rng():
        # the summary says whether the data differs (a warning would make the page differ from machine to machine)
        new, old = rerun_cell(ref.dir, model, protocol, seed, out_dir=tmp, warn=False)
        now = read_json(Path(tmp) / "provenance.json")
    committed = ref.provenance["cells"][f"{model}-{protocol}-{seed}"]
    rows = {}
    for label, df in (("committed", old), ("re-run now", new)):
        d = df[(df.protocol == protocol) & (df.setting == "rate")]
        rows[label] = d.groupby("metric", sort=False).value.mean()
    tab = pd.DataFrame(rows).T[metrics or headline_metrics(_language(ref))]
    tab.index.name = f"{model}, trained under {protocol}, seed {seed}"
    atol = rerun_atol(committed, now)
    differences = compare_records(new, old, ignore=("commit", "device"), atol=atol)  # record by record
    gap = (new.value - old.value).abs().max() if len(new) == len(old) else float("nan")
    same_data = now["dataset_fingerprint"] == committed.get("dataset_fingerprint")
    summary = {"records": len(old), "data": "the committed bytes" if same_data else
               f"other bytes (fingerprint {now['dataset_fingerprint']}, committed {committed.get('dataset_fingerprint')})",
               "tolerance": atol, "agrees": not differences, "differences": differences or "none",
               "largest difference": float(gap)}
    return percent_rounded(tab), summary


__all__ = ["REFERENCE_GRID", "REFERENCE_GRIDS", "REFERENCE_WALK", "ablation_reference", "grid_findings", "reference_check", "mechanism_table", "mechanisms", "grid_summary", "live_cell", "mode_means", "optimism", "Reference", "reference", "reference_acc2",
           "reference_dir", "robustness_curves"]
