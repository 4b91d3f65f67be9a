"""Tables of the book from tidy records (``records.csv`` written by :mod:`mmsa_core.reproduce`).

Records: one row per (model, train_protocol, seed, protocol, setting, level, mode, metric) with its ``value``;
their file format, validation and reading (:func:`load_records`, :func:`load_histories`) are in
:mod:`mmsa_core.records`, re-exported here.

Tables (pandas DataFrames; ``numeric=True`` gives the raw means for plots, else "mean ± std" strings with the
std over seeds, ``ddof=1``; accuracies and F1 as percentages with 2 decimals, MAE and Corr with 3):

1. :func:`paper_table` — the LNLN paper's format: each metric averaged over the missing rates 0.0..0.9 under
   the training protocol, mean ± std over seeds, one row per (model, training protocol).
2. :func:`rate_table` — one metric at every missing rate (r for A, eta for B).
3. :func:`mode_table` — one metric at each of the 7 protocol-B missing modes.
4. :func:`cross_protocol_table` — every model tested under the protocol it was trained on and under the
   other one, with the difference.
5. :func:`selection_gap_table` — test score of the checkpoint selected on VALIDATION (ours) vs the best
   TEST epoch (the LNLN authors' practice), from ``history.csv`` of grids run with ``train.track_test``.

Reported numbers (:func:`reported_block`, :func:`with_reported`) are the verified ones of the papers, in
``mmsa_core/reported.csv``; they are only ever put beside our table for the same real dataset.

Command line: ``python -m mmsa_core tables --results results/<dataset> [--format markdown|html] [--out DIR]``.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import numpy as np
import pandas as pd

from .missing import MODE_NAMES
# the file format, re-exported: results.load_records, results.RecordsError, ... read as before
from .records import (MODEL_ORDER, REQUIRED_COLUMNS, RecordsError, cell_histories, last_stage,  # noqa: F401
                      load_histories, load_records, records_file, validate)

# rows run with their authors' protocol (presets <model>_<preset>.yaml; chapter 11): every table's caption says so
AUTHORS_MODELS = {"lnln_authors": "LNLN with its authors' protocol (checkpoints chosen per metric on the TEST split: "
                                  "a defect, shown to explain the paper's numbers)",
                  "mplmm_authors": "MPLMM with its authors' code and protocol (selected on validation)"}
METRIC_ORDER = ("Acc-2 has-0", "F1 has-0", "F1 has-0 swapped", "Acc-2 non-0", "F1 non-0", "F1 non-0 swapped", "Acc-7",
                "Acc-5", "Acc-3", "Acc-2", "F1", "F1 swapped", "MAE", "Corr")
LOWER_IS_BETTER = frozenset({"MAE"})
ROW = ["model", "train_protocol"]
REPORTED_LABEL = "reported (paper), real data"


# -------------------------------------------------------------------------------------- formatting
def is_percent(metric: str) -> bool:
    return metric.startswith(("Acc", "F1"))


def format_mean_std(mean: float, std: float | None = None, metric: str = "MAE") -> str:
    """``"59.48 ± 1.23"`` for accuracies / F1 (fractions shown as percentages), ``"1.398 ± 0.012"`` otherwise;
    the mean alone when there is no std (one seed), ``"n/a"`` for a NaN mean."""
    if mean is None or not np.isfinite(mean):
        return "n/a"
    scale, nd = (100.0, 2) if is_percent(metric) else (1.0, 3)
    s = f"{mean * scale:.{nd}f}"
    if std is not None and np.isfinite(std):
        s += f" ± {std * scale:.{nd}f}"
    return s


def format_delta(delta: float, metric: str) -> str:
    """A signed difference: percentage points for accuracies / F1, 3 decimals otherwise."""
    if delta is None or not np.isfinite(delta):
        return "n/a"
    return f"{delta * 100:+.2f}" if is_percent(metric) else f"{delta:+.3f}"


def _signed(mean: float, std: float | None, metric: str) -> str:
    """``"+1.23 ± 0.50"``: a signed mean difference with its std over seeds."""
    s = format_delta(mean, metric)
    if s != "n/a" and std is not None and np.isfinite(std):
        s += " ± " + format_mean_std(std, None, metric)
    return s


def _metric_order(metrics) -> list[str]:
    metrics = list(dict.fromkeys(metrics))
    return sorted(metrics, key=lambda m: (METRIC_ORDER.index(m) if m in METRIC_ORDER else len(METRIC_ORDER), m))


def _model_order(models) -> list[str]:
    models = list(dict.fromkeys(models))
    return sorted(models, key=lambda m: (MODEL_ORDER.index(m) if m in MODEL_ORDER else len(MODEL_ORDER), m))


def _sort_rows(df: pd.DataFrame) -> pd.DataFrame:
    if not isinstance(df.index, pd.MultiIndex) or df.index.names[0] != "model":
        return df
    models = _model_order(df.index.get_level_values(0))
    keys = sorted(df.index, key=lambda k: (models.index(k[0]), *k[1:]))
    return df.loc[keys]


def _mark_authors(t: pd.DataFrame) -> pd.DataFrame:
    """Append to the caption what the authors'-protocol rows are, when the table has any."""
    if isinstance(t.index, pd.MultiIndex) and t.index.names[0] == "model":
        have = [m for m in AUTHORS_MODELS if m in set(t.index.get_level_values(0))]
        if have:
            notes = "; ".join(f"{m}: {AUTHORS_MODELS[m]}" for m in have)
            t.attrs["caption"] = (t.attrs.get("caption", "") + f". Authors'-protocol rows: {notes}; "
                                  "'F1 … swapped' is f1_score(pred, truth), the authors' argument order")
    return t


def seed_stats(per_seed: pd.DataFrame, by: list[str], ddof: int = 1) -> pd.DataFrame:
    """Mean, std (``ddof``) and number of seeds of ``value`` per group ``by`` (one value per seed)."""
    g = per_seed.groupby(by, sort=False, dropna=False)["value"]
    out = pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=ddof), "n": g.count()}).reset_index()
    return out


def _pivot(stats: pd.DataFrame, index: list[str], columns: str, order: list, numeric: bool, metric_of: str | None = None,
           caption: str = "") -> pd.DataFrame:
    if numeric:
        t = stats.pivot(index=index, columns=columns, values="mean")
    else:
        st = stats.copy()
        mets = [metric_of] * len(st) if metric_of else list(st["metric"])
        st["cell"] = [format_mean_std(m, s, k) for m, s, k in zip(st["mean"], st["std"], mets)]
        t = st.pivot(index=index, columns=columns, values="cell")
        t = t.where(t.notna(), "")  # a metric only some rows have (the authors' swapped F1): blank, not "nan"
    t = t.reindex(columns=[c for c in order if c in t.columns])
    t.columns.name = columns
    t = _sort_rows(t)
    t.attrs["caption"] = caption
    return _mark_authors(t)


def _seed_note(df: pd.DataFrame) -> str:
    trained = df[df["model"] != "oracle"]  # the oracle is not trained: one deterministic row
    n = (trained if len(trained) else df).groupby(["model", "train_protocol"])["seed"].nunique()
    ns = sorted(set(int(x) for x in n))
    return f"{'/'.join(map(str, ns))} seed{'s' if ns != [1] else ''}" + (" (the oracle: deterministic)" if len(trained) < len(df) else "")


def _check_levels(d: pd.DataFrame, by: list[str], what: str) -> None:
    """Every group must hold the same levels: a mean over an incomplete sweep would not compare."""
    sets = d.groupby(by, sort=False)["level"].apply(lambda s: tuple(sorted(s.round(6))))
    if sets.nunique() > 1:
        ref = sets.mode().iloc[0]
        bad = sets[sets != ref]
        k = bad.index[0]
        raise RecordsError(f"{what}: {dict(zip(by, k if isinstance(k, tuple) else (k,)))} has levels {list(bad.iloc[0])}, "
                           f"the others {list(ref)}; every cell must cover the same rates")


def _rate_means(df: pd.DataFrame, same_protocol: bool, metrics=None) -> pd.DataFrame:
    d = df[df["setting"] == "rate"]
    if same_protocol:
        d = d[d["protocol"] == d["train_protocol"]]
    if metrics is not None:
        d = d[d["metric"].isin(metrics)]
    if d.empty:
        raise RecordsError("no rate records for this table")
    by = ["model", "train_protocol", "protocol", "seed", "metric"]
    _check_levels(d, by, "rate sweep")
    return d.groupby(by, sort=False)["value"].mean().reset_index()


# ------------------------------------------------------------------------------------------ tables
def paper_table(df: pd.DataFrame, metrics=None, numeric: bool = False, ddof: int = 1) -> pd.DataFrame:
    """LNLN paper format: each metric averaged over r = 0.0..0.9 under the TRAINING protocol, then
    mean ± std over seeds; rows (model, train_protocol), columns the metrics."""
    per_seed = _rate_means(df, True, metrics)
    st = seed_stats(per_seed, ["model", "train_protocol", "metric"], ddof)
    return _pivot(st, ROW, "metric", _metric_order(st["metric"]), numeric,
                  caption=f"{df['dataset'].iloc[0]}: each metric averaged over the missing rates 0.0..0.9 of the "
                          f"training protocol, mean ± std over {_seed_note(df)} (accuracy and F1 in %)")


def rate_table(df: pd.DataFrame, metric: str = "MAE", protocol: str | None = None, numeric: bool = False,
               ddof: int = 1) -> pd.DataFrame:
    """One metric at every missing rate; rows (model, train_protocol), columns the rates. ``protocol``:
    the TEST protocol (default: the one each row was trained with)."""
    d = df[(df["setting"] == "rate") & (df["metric"] == metric)]
    d = d[d["protocol"] == d["train_protocol"]] if protocol is None else d[d["protocol"] == protocol]
    if d.empty:
        raise RecordsError(f"no rate records for metric {metric!r}" + (f" under protocol {protocol}" if protocol else ""))
    st = seed_stats(d, ["model", "train_protocol", "level"], ddof)
    st["level"] = st["level"].round(1)
    levels = sorted(st["level"].unique())
    t = _pivot(st, ROW, "level", levels, numeric, metric_of=metric,
               caption=f"{metric} at each missing rate (tested under "
                       f"{'the training protocol' if protocol is None else 'protocol ' + protocol}; r for A, eta for B), "
                       f"mean ± std over {_seed_note(df)}")
    t.columns.name = "rate"
    return t


def mode_table(df: pd.DataFrame, metric: str = "MAE", train_protocols=None, numeric: bool = False,
               ddof: int = 1) -> pd.DataFrame:
    """One metric at each of the 7 protocol-B missing modes (columns: the modalities PRESENT);
    rows (model, train_protocol)."""
    d = df[(df["setting"] == "mode") & (df["protocol"] == "B") & (df["metric"] == metric)]
    if train_protocols is not None:
        d = d[d["train_protocol"].isin(list(train_protocols))]
    if d.empty:
        raise RecordsError(f"no protocol-B mode records for metric {metric!r}")
    st = seed_stats(d, ["model", "train_protocol", "mode"], ddof)
    return _pivot(st, ROW, "mode", list(MODE_NAMES), numeric, metric_of=metric,
                  caption=f"{metric} under each fixed missing mode of protocol B (columns: the modalities present), "
                          f"mean ± std over {_seed_note(df)}")


def cross_protocol_table(df: pd.DataFrame, metrics=None, numeric: bool = False, ddof: int = 1) -> pd.DataFrame:
    """Each model tested under protocol P (averaged over the 10 levels of P) when trained under P (same) and
    under the other protocol (cross), and cross − same. Rows (model, tested under); columns (metric, column)."""
    per_seed = _rate_means(df, False, metrics)
    st = seed_stats(per_seed, ["model", "protocol", "train_protocol", "metric"], ddof)
    rows, cols = {}, []
    for (model, test_p, metric), g in st.groupby(["model", "protocol", "metric"], sort=False):
        same = g[g["train_protocol"] == test_p]
        cross = g[g["train_protocol"] != test_p]
        cells = {}
        for label, part in (("trained same", same), ("trained other", cross)):
            if len(part):
                r = part.iloc[0]
                cells[label] = r["mean"] if numeric else format_mean_std(r["mean"], r["std"], metric)
            else:
                cells[label] = np.nan if numeric else ""
        if len(same) and len(cross):
            dlt = cross.iloc[0]["mean"] - same.iloc[0]["mean"]
            cells["other − same"] = dlt if numeric else format_delta(dlt, metric)
        else:
            cells["other − same"] = np.nan if numeric else ""
        for label, v in cells.items():
            rows.setdefault((model, test_p), {})[(metric, label)] = v
    t = pd.DataFrame.from_dict(rows, orient="index")
    t.index = pd.MultiIndex.from_tuples(t.index, names=["model", "tested under"])
    order = [(m, c) for m in _metric_order(st["metric"]) for c in ("trained same", "trained other", "other − same")]
    t = t.reindex(columns=pd.MultiIndex.from_tuples([c for c in order if c in t.columns], names=["metric", ""]))
    t = _sort_rows(t)
    t.attrs["caption"] = (f"cross-protocol: each model tested under protocol A or B (mean over its 10 levels) when "
                          f"trained under the same protocol and under the other one; mean ± std over {_seed_note(df)}; "
                          "differences in percentage points for accuracy / F1")
    return _mark_authors(t)


# -------------------------------------------------------------------------------- room left: the oracle
ORACLE = "oracle"  # the testbed's Bayes-optimal row (mmsa_core.oracle), in records of the embedded data only


def oracle_gap_table(df: pd.DataFrame, metric: str = "MAE", numeric: bool = False, ddof: int = 1) -> pd.DataFrame:
    """How far each model is from the oracle: its ``metric`` averaged over r = 0.0..0.9 of its training protocol
    (as in :func:`paper_table`) and over the 7 protocol-B modes, minus the oracle's, mean ± std over seeds. Rows
    (model, train_protocol); a positive MAE gap (negative accuracy gap) is room that the model leaves."""
    if ORACLE not in set(df["model"]):
        raise RecordsError("no oracle rows in these records (only the embedded testbed has an oracle)")
    rates = _rate_means(df, True, [metric])
    modes = df[(df["setting"] == "mode") & (df["protocol"] == "B") & (df["metric"] == metric)]
    modes = modes.groupby(["model", "train_protocol", "seed"], sort=False)["value"].mean().reset_index()
    cols = {}
    for label, d in (("rates 0.0-0.9", rates), ("modes (B)", modes)):
        orc = d[d["model"] == ORACLE].groupby("train_protocol")["value"].mean()
        d = d[d["model"] != ORACLE].copy()
        d["value"] = d["value"] - d["train_protocol"].map(orc)
        st = seed_stats(d, ["model", "train_protocol"], ddof)
        st["metric"] = metric
        st["column"] = label
        cols[label] = st
    st = pd.concat(cols.values(), ignore_index=True)
    if numeric:
        t = st.pivot(index=ROW, columns="column", values="mean")
    else:
        st["cell"] = [_signed(m, s, metric) for m, s in zip(st["mean"], st["std"])]
        t = st.pivot(index=ROW, columns="column", values="cell")
    t = t.reindex(columns=list(cols))
    t.columns.name = f"{metric} − oracle"
    t = _sort_rows(t)
    t.attrs["caption"] = (f"gap to the oracle (knows the generator): {metric} of each model minus the oracle's, averaged "
                          f"over the training protocol's rates and over protocol B's modes; mean ± std over {_seed_note(df)}")
    return t


# ------------------------------------------------------------------------- checkpoint selection study
def selection_gap(histories: pd.DataFrame, metrics=None) -> pd.DataFrame:
    """Per cell and metric: the TEST score at the epoch selected on validation (ours), the best TEST score over
    all epochs and its epoch (the LNLN authors select per metric on the test set), and the optimism of the
    latter (best − selected, signed so that a positive value flatters: lower for MAE). Long format."""
    tcols = [c for c in histories.columns if c.startswith("test_")]
    if not tcols:
        raise RecordsError("history has no test_<metric> columns: the runs were made without train.track_test=true "
                           "(the reproduce grid turns it on)")
    rows = []
    histories = histories[~histories["model"].isin(list(AUTHORS_MODELS))]  # their own selection is the subject here
    for (model, tp, seed), h in histories.groupby(["model", "train_protocol", "seed"], sort=False):
        h = last_stage(h).sort_values("epoch")  # the stage whose checkpoint the run selected
        sel = int(h["selected_epoch"].iloc[0])
        at = h[h["epoch"] == sel]
        if at.empty:
            raise RecordsError(f"{h['cell'].iloc[0] if 'cell' in h else (model, tp, seed)}: selected epoch {sel} "
                               "is not in its history")
        for c in tcols:
            m = c[len("test_"):]
            if metrics is not None and m not in metrics:
                continue
            vals = h[c].to_numpy(float)
            if np.all(np.isnan(vals)):
                continue
            lower = m in LOWER_IS_BETTER
            i = int(np.nanargmin(vals) if lower else np.nanargmax(vals))
            best, s = float(vals[i]), float(at[c].iloc[0])
            rows.append({"model": model, "train_protocol": tp, "seed": seed, "metric": m, "selected_epoch": sel,
                         "selected": s, "best_epoch": int(h["epoch"].iloc[i]), "best": best,
                         "optimism": (s - best) if lower else (best - s)})
    return pd.DataFrame(rows)


def selection_gap_table(histories, metrics=None, numeric: bool = False, ddof: int = 1) -> pd.DataFrame:
    """Test score (at the selection level of the training protocol: r = 0.5 / eta = 0.7) of the checkpoint
    selected on VALIDATION vs the best TEST epoch per metric, and the gap; mean ± std over seeds. Rows
    (model, train_protocol); columns (metric, column). ``histories``: a results folder or
    :func:`load_histories`'s frame."""
    if not isinstance(histories, pd.DataFrame):
        histories = load_histories(histories)
    long = selection_gap(histories, metrics)
    labels = {"selected": "selected on validation", "best": "best test epoch", "optimism": "optimism"}
    parts = []
    for col, label in labels.items():
        st = seed_stats(long.rename(columns={col: "value"}), ["model", "train_protocol", "metric"], ddof)
        st["column"] = label
        parts.append(st)
    st = pd.concat(parts, ignore_index=True)
    if numeric:
        t = st.pivot(index=ROW, columns=["metric", "column"], values="mean")
    else:
        st["cell"] = [_signed(m, s, r) if c == "optimism" else format_mean_std(m, s, r)
                      for m, s, r, c in zip(st["mean"], st["std"], st["metric"], st["column"])]
        t = st.pivot(index=ROW, columns=["metric", "column"], values="cell")
    order = [(m, c) for m in _metric_order(st["metric"]) for c in labels.values()]
    t = t.reindex(columns=pd.MultiIndex.from_tuples([c for c in order if c in t.columns], names=["metric", ""]))
    t = _sort_rows(t)
    n = histories.groupby(["model", "train_protocol"])["seed"].nunique()
    t.attrs["caption"] = ("checkpoint selection: TEST score at the selection level of the training protocol of the "
                          "epoch selected on validation (ours) vs the best test epoch per metric (the LNLN authors' "
                          "practice); optimism = how much better the latter looks (accuracy / F1 in percentage "
                          f"points); mean ± std over {'/'.join(map(str, sorted(set(n))))} seed(s)")
    return t


# ----------------------------------------------------------------------------------- reported numbers
_CANONICAL = {"mosi": "CMU-MOSI", "cmu-mosi": "CMU-MOSI", "cmumosi": "CMU-MOSI", "mosei": "CMU-MOSEI",
              "cmu-mosei": "CMU-MOSEI", "cmumosei": "CMU-MOSEI", "sims": "CH-SIMS", "ch-sims": "CH-SIMS",
              "chsims": "CH-SIMS"}
_METHOD_MODEL = {"LNLN": "lnln", "ProMMA": "promma", "MPLMM": "mplmm", "ALMT": "almt"}


def canonical_dataset(name: str) -> str | None:
    """The real dataset a records' dataset name stands for (``mosi`` -> ``CMU-MOSI``); None for anything else,
    the embedded synthetic data included."""
    key = re.sub(r"[\s_]+", "-", str(name).strip().lower())
    if key.startswith("synth"):
        return None
    return _CANONICAL.get(key) or _CANONICAL.get(key.replace("-", ""))


def load_reported() -> pd.DataFrame:
    """The verified reported numbers (``mmsa_core/reported.csv``): one row per number or claim, with source."""
    from importlib.resources import files

    with files("mmsa_core").joinpath("reported.csv").open("r", encoding="utf-8") as f:
        df = pd.read_csv(f, dtype={"protocol": str}, keep_default_na=False, na_values={"value": [""]})
    return df


def reported_block(dataset: str, numeric: bool = False) -> pd.DataFrame | None:
    """The absolute reported numbers for the real dataset ``dataset`` as a column block labelled
    :data:`REPORTED_LABEL`; rows (model, train_protocol) like :func:`paper_table` (the protocol the paper
    trained and tested with), columns the metrics and ``source``. None when no verified number exists for
    this dataset — always for the embedded synthetic data, which no paper number describes. Numeric values
    are on our scale (fractions); strings as published (accuracy / F1 in %)."""
    canon = canonical_dataset(dataset)
    if canon is None:
        return None
    rep = load_reported()
    rep = rep[(rep["kind"] == "absolute") & (rep["dataset"] == canon)]
    if rep.empty:
        return None
    rows = {}
    for _, r in rep.iterrows():
        key = (_METHOD_MODEL.get(r["method"], r["method"].lower()), r["protocol"] or "")
        v = float(r["value"])
        if numeric:
            rows.setdefault(key, {})[r["metric"]] = v / 100.0 if is_percent(r["metric"]) else v
        else:
            rows.setdefault(key, {})[r["metric"]] = f"{v:.2f}" if is_percent(r["metric"]) else f"{v:.3f}"
        rows[key]["source"] = f"{r['method']}: {r['source']} ({r['setting']})"
    t = pd.DataFrame.from_dict(rows, orient="index")
    t.index = pd.MultiIndex.from_tuples(t.index, names=ROW)
    metrics = _metric_order([c for c in t.columns if c != "source"])
    t = t[metrics + ["source"]]
    t.columns = pd.MultiIndex.from_tuples([(REPORTED_LABEL, c) for c in t.columns])
    t.attrs["caption"] = f"{REPORTED_LABEL}: {canon}, verified numbers with their source"
    return t


def reported_notes(dataset: str | None = None) -> list[str]:
    """The reported claims that are not per-table numbers (relative improvements), as sentences with source;
    for one real dataset, or all with ``dataset=None``."""
    rep = load_reported()
    rep = rep[rep["kind"] != "absolute"]
    if dataset is not None:
        canon = canonical_dataset(dataset)
        if canon is None:
            return []
        rep = rep[rep["dataset"].apply(lambda s: canon in s.split(";"))]
    return [f"{r['method']} ({r['dataset'].replace(';', ', ')}): {r['note']} [{r['source']}]" for _, r in rep.iterrows()]


def with_reported(table: pd.DataFrame, dataset: str, numeric: bool = False, seeds_note: str = "") -> pd.DataFrame:
    """Our :func:`paper_table` with the reported block beside it for the SAME real dataset; the two blocks
    are labelled ``ours (<dataset>)`` and :data:`REPORTED_LABEL`. For a dataset without verified numbers
    (the embedded synthetic data always) the table comes back unchanged: nothing is put beside it."""
    block = reported_block(dataset, numeric)
    if block is None:
        return table
    shared = [c for c in block.columns if c[1] in set(table.columns)]
    if shared:  # only the metrics our table shows, and the source
        block = block[shared + [(REPORTED_LABEL, "source")]]
    ours = table.copy()
    label = f"ours ({dataset}{', ' + seeds_note if seeds_note else ''})"
    ours.columns = pd.MultiIndex.from_tuples([(label, c) for c in ours.columns])
    idx = list(dict.fromkeys(list(ours.index) + list(block.index)))
    t = pd.concat([ours.reindex(idx), block.reindex(idx)], axis=1)
    if not numeric:
        t = t.fillna("")
    t.index = pd.MultiIndex.from_tuples(idx, names=ROW)
    t = _sort_rows(t)
    t.attrs["caption"] = (table.attrs.get("caption", "") + f"; beside it: {REPORTED_LABEL} "
                          f"({canonical_dataset(dataset)}, from the sources named)")
    return t


# ----------------------------------------------------------------------------------------- rendering
def _flat_frame(df: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    idx_names = [n if n is not None else "" for n in df.index.names]
    cols = [" / ".join(str(x) for x in c if str(x)) if isinstance(c, tuple) else str(c) for c in df.columns]
    header = idx_names + cols
    body = []
    for key, row in zip(df.index, df.itertuples(index=False)):
        key = key if isinstance(key, tuple) else (key,)
        cells = [str(k) for k in key]
        for v in row:
            if isinstance(v, float):
                cells.append("" if np.isnan(v) else f"{v:.6g}")
            else:
                cells.append(str(v))
        body.append(cells)
    return header, body


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table (index levels as leading columns); no dependency on tabulate."""
    header, body = _flat_frame(df)
    esc = lambda s: s.replace("|", "\\|")  # noqa: E731
    header = [esc(h) for h in header]
    body = [[esc(c) for c in r] for r in body]
    w = [max([len(header[j])] + [len(r[j]) for r in body] + [3]) for j in range(len(header))]
    line = lambda cells: "| " + " | ".join(c.ljust(w[j]) for j, c in enumerate(cells)) + " |"  # noqa: E731
    return "\n".join([line(header), "| " + " | ".join("-" * x for x in w) + " |"] + [line(r) for r in body])


def to_html(df: pd.DataFrame) -> str:
    return df.to_html(na_rep="", escape=True, border=0, classes="mmsa-table")


# ---------------------------------------------------------------------------------- the standard set
def standard_tables(results_dir, metrics=None) -> list[tuple[str, str, pd.DataFrame]]:
    """The book's tables for one results folder: (file stem, title, table) triples."""
    results_dir = Path(results_dir)
    df = load_records(results_dir)
    dataset = str(df["dataset"].iloc[0])
    unknown = sorted(set(metrics or []) - set(df["metric"]))
    if unknown:
        raise RecordsError(f"{records_file(results_dir)}: no metric(s) {unknown}; the records hold "
                           f"{_metric_order(df['metric'].unique())}")
    mets = _metric_order(metrics or df["metric"].unique())
    out = []
    paper = paper_table(df, mets)
    block = reported_block(dataset)
    if block is not None:
        paper = with_reported(paper, dataset, seeds_note=_seed_note(df))
    out.append(("paper", f"{dataset}: mean over missing rates 0.0-0.9 (LNLN paper format)", paper))
    for m in mets:
        out.append(("rates", f"{m} at each missing rate", rate_table(df, m)))
    if ((df["setting"] == "mode") & (df["protocol"] == "B")).any():
        for m in mets:
            out.append(("modes", f"{m} under each protocol-B missing mode", mode_table(df, m)))
    if ORACLE in set(df["model"]):
        out.append(("oracle_gap", "room left: each model's gap to the oracle", oracle_gap_table(df, "MAE")))
    if df.groupby("model")["train_protocol"].nunique().max() > 1:
        out.append(("cross_protocol", "trained under one protocol, tested under both", cross_protocol_table(df, mets)))
    try:
        out.append(("selection_gap", "checkpoint selected on validation vs best test epoch",
                    selection_gap_table(results_dir, mets)))
    except (RecordsError, FileNotFoundError):
        pass  # no histories with test scores: the grid was run without train.track_test
    return out


def render(tables: list[tuple[str, str, pd.DataFrame]], fmt: str = "markdown", dataset: str | None = None) -> dict[str, str]:
    """File stem -> document text (markdown or HTML), one section per table."""
    docs: dict[str, list[str]] = {}
    for stem, title, t in tables:
        cap = t.attrs.get("caption", "")
        if fmt == "html":
            part = f"<h3>{html.escape(title)}</h3>\n<p>{html.escape(cap)}</p>\n{to_html(t)}"
        else:
            part = f"### {title}\n\n{cap}\n\n{to_markdown(t)}\n"
        docs.setdefault(stem, []).append(part)
    notes = reported_notes(dataset) if dataset is not None else []
    if dataset is not None and canonical_dataset(dataset) is None:
        notes = [f"{dataset} is not a real dataset: no number reported in a paper is comparable with these tables."]
    if notes and "paper" in docs:
        docs["paper"].append(("<p>" + "<br>\n".join(map(html.escape, notes)) + "</p>") if fmt == "html"
                             else "Notes:\n\n" + "\n".join(f"- {n}" for n in notes) + "\n")
    return {k: "\n\n".join(v) for k, v in docs.items()}


def add_arguments(p) -> None:
    p.add_argument("--results", required=True, help="results folder (holds records.csv) or a records CSV file")
    p.add_argument("--format", default="markdown", choices=["markdown", "html"])
    p.add_argument("--out", help="folder for one file per table kind (default: print to the terminal)")
    p.add_argument("--metrics", nargs="+", metavar="METRIC", help="only these metrics (default: all recorded)")


def cli(a) -> None:
    res = Path(a.results)
    df = load_records(res)
    dataset = str(df["dataset"].iloc[0])
    if res.is_dir():
        tables = standard_tables(res, a.metrics)
    else:  # a bare records file: the tables that need no history
        mets = _metric_order(a.metrics or df["metric"].unique())
        tables = [("paper", "mean over missing rates 0.0-0.9", paper_table(df, mets))]
        tables += [("rates", f"{m} at each missing rate", rate_table(df, m)) for m in mets]
    docs = render(tables, a.format, dataset)
    if a.out:
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        ext = "html" if a.format == "html" else "md"
        for stem, text in docs.items():
            (out / f"{stem}.{ext}").write_text(text + "\n")
            print(f"wrote {out / f'{stem}.{ext}'}")
    else:
        print("\n\n".join(docs.values()))


__all__ = ["RecordsError", "cross_protocol_table", "format_delta", "format_mean_std", "cell_histories", "load_histories", "last_stage",
           "load_records", "mode_table", "paper_table", "rate_table", "render", "reported_block", "reported_notes",
           "selection_gap", "selection_gap_table", "standard_tables", "to_html", "to_markdown", "validate",
           "with_reported"]
