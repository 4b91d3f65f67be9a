"""Tables of trained runs as a chapter shows them: metrics at one setting, curves over the missing rates, several
runs side by side, and the worked example of the metrics (chapter 2). Accuracies and F1 are shown in percent.

The tables of a ``reproduce`` grid (mean ± std over seeds, the papers' format) are in :mod:`mmsa_core.results`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import metrics as M
from .. import missing

# how the metrics are shown in tables: accuracies and F1 as percentages
PERCENT_PREFIXES = ("Acc", "F1")


# ------------------------------------------------------------------------------------------ one run's records
def percent_rounded(df: pd.DataFrame, digits: int = 2, other_digits: int = 3) -> pd.DataFrame:
    """Accuracies and F1 as percentages rounded to ``digits``; the other columns rounded to ``other_digits``."""
    out = df.copy()
    for c in out.columns:
        if pd.api.types.is_float_dtype(out[c]):
            pct = str(c).startswith(PERCENT_PREFIXES)
            out[c] = (out[c] * 100).round(digits) if pct else out[c].round(other_digits)
            out[c] = out[c] + 0.0  # no "-0.0"
    return out


def headline_metrics(language: str = "en") -> list[str]:
    """The columns a compact table shows: MOSI-style for English data, SIMS-style for Chinese."""
    if language == "zh":
        return ["Acc-2", "F1", "Acc-3", "Acc-5", "MAE", "Corr"]
    return ["Acc-2 has-0", "Acc-2 non-0", "F1 non-0", "Acc-7", "MAE", "Corr"]


def acc2_name(language: str = "en") -> str:
    """The binary accuracy a compact ProMMA table shows: non-0 for MOSI-style data, the SIMS Acc-2 for Chinese."""
    return "Acc-2" if language == "zh" else "Acc-2 non-0"


def metrics_table(records: pd.DataFrame, protocol: str = "A", level: float | None = 0.0, mode: str | None = None,
                  by=("model",), metrics: list[str] | None = None) -> pd.DataFrame:
    """One row per ``by`` group: the metrics at one test setting (``level`` = r for A, eta for B; or a
    protocol-B ``mode`` name such as ``"{l,a}"``; ``level=None`` = the mean over the ten rates).
    Accuracies and F1 in percent. With several seeds the mean is shown."""
    df = records[records.protocol == protocol]
    if mode is not None:
        df = df[(df.setting == "mode") & (df["mode"] == mode)]
    elif level is None:
        df = df[df.setting == "rate"]
    else:
        df = df[(df.setting == "rate") & np.isclose(df.level.astype(float), float(level))]
    if df.empty:
        raise ValueError(f"no records for protocol {protocol}, level {level}, mode {mode}")
    by = list(by)
    order = list(dict.fromkeys(df.metric))
    tab = df.groupby(by + ["metric"], sort=False).value.mean().unstack("metric")[order]
    if metrics:
        tab = tab[[m for m in metrics if m in tab.columns]]
    tab.columns.name = None
    return percent_rounded(tab)


def at_rates(records: pd.DataFrame, metric: str = "MAE", protocol: str = "A", by=("model",)) -> pd.DataFrame:
    """Tidy rows (by..., level, value) of one metric at every test rate: what :func:`mmsa_core.viz.curve` draws.
    Accuracies and F1 in percent; several seeds are averaged (``std`` holds their standard deviation)."""
    df = records[(records.protocol == protocol) & (records.setting == "rate") & (records.metric == metric)]
    by = list(by)
    g = df.groupby(by + ["level"], sort=False).value
    out = g.mean().rename("value").to_frame().join(g.std(ddof=0).rename("std")).reset_index()
    scale = 100.0 if metric.startswith(PERCENT_PREFIXES) else 1.0
    out["value"] *= scale
    out["std"] = out["std"].fillna(0.0) * scale
    out["metric"] = metric
    return out


# ---------------------------------------------------------------------------------- several runs side by side
def label_runs(runs: dict) -> pd.DataFrame:
    """The test records of several runs, ``{"name": TrainedRun or [TrainedRun, ...]}``, with ``model`` set to the
    name (several runs under one name, e.g. seeds, are averaged by the tables)."""
    parts = []
    for name, rs in runs.items():
        for r in rs if isinstance(rs, (list, tuple)) else [rs]:
            parts.append(r.records.assign(model=name))
    return pd.concat(parts, ignore_index=True)


def modes_compare(runs: dict, metrics: list[str] | None = None, protocol: str = "B") -> pd.DataFrame:
    """Rows: the seven protocol-B missing modes (named by what is present) and the mean over the ten eta; columns:
    (metric, run name) for ``runs = {"name": TrainedRun, ...}``. Default metrics: MAE and Acc-2."""
    first = next(iter(runs.values()))
    metrics = metrics or ["MAE", acc2_name(first.data.spec.language)]
    rec = label_runs(runs)
    rows = {m: metrics_table(rec, protocol, mode=m, metrics=metrics).T.stack() for m in missing.MODE_NAMES}
    rows["mean over η"] = metrics_table(rec, protocol, level=None, metrics=metrics).T.stack()
    tab = pd.DataFrame(rows).T
    tab = tab[pd.MultiIndex.from_product([metrics, list(runs)])]
    tab.index.name = "present"
    return tab


def ablation_table(runs: dict, protocol: str = "B", metrics: list[str] | None = None) -> pd.DataFrame:
    """One row per run of ``runs = {"name": TrainedRun}``: the headline metrics averaged over the ten test levels
    (eta for protocol B, r for A)."""
    first = next(iter(runs.values()))
    tab = metrics_table(label_runs(runs), protocol, level=None, metrics=metrics or headline_metrics(first.data.spec.language))
    tab.index.name = "variant"
    return tab


# ---------------------------------------------------------------------------- the metrics, worked (chapter 2)
def metric_steps(pred, label) -> pd.DataFrame:
    """Per sample, the quantities each MOSI metric compares (for a worked example)."""
    p, y = np.asarray(pred, np.float64), np.asarray(label, np.float64)
    return pd.DataFrame({
        "p": p, "y": y,
        "p >= 0": p >= 0, "y >= 0": y >= 0,
        "in non-0": y != 0,
        "class-7 p": np.round(np.clip(p, -3, 3)).astype(int), "class-7 y": np.round(np.clip(y, -3, 3)).astype(int),
        "class-5 p": np.round(np.clip(p, -2, 2)).astype(int), "class-5 y": np.round(np.clip(y, -2, 2)).astype(int),
        "|p - y|": np.round(np.abs(p - y), 4),
    }, index=pd.RangeIndex(1, len(p) + 1, name="sample"))


def metric_summary(pred, label, language: str = "en") -> pd.DataFrame:
    """:func:`mmsa_core.metrics.compute` as a one-row table (accuracies and F1 in percent)."""
    return percent_rounded(pd.DataFrame([M.compute(pred, label, language)], index=["value"]), digits=2, other_digits=4)


__all__ = ["PERCENT_PREFIXES", "ablation_table", "acc2_name", "at_rates", "headline_metrics", "label_runs", "metric_steps",
           "metric_summary", "metrics_table", "modes_compare", "percent_rounded"]
