"""The results file format, and reading it back: what ``experiment.run`` and the ``reproduce`` grid write, and
what the tables (:mod:`mmsa_core.results`) and the book read.

- ``records.csv``: tidy test records, one row per (model, train_protocol, seed, protocol, setting, level, mode,
  metric) with its ``value`` (:data:`REQUIRED_COLUMNS`). A run writes its own (``results.csv``); the grid
  concatenates its cells' into ``<out>/records.csv``. :func:`load_records` validates them and fails with one error
  that names the file and every problem (missing column, empty cell, duplicated cell, NaN value).
- a grid's cell folders ``<out>/runs/<model>-<protocol>-<seed>/`` hold :data:`CELL_FILES`;
  :func:`finished_cells` lists the complete ones, in the book's model order.
- ``history.csv`` per run (per-epoch losses and validation / test scores) and ``<out>/histories.csv``, every cell's
  together (:func:`load_histories`).

:mod:`mmsa_core.reproduce` (which writes these files) and :mod:`mmsa_core.results` (which makes tables of them)
both import this module; it imports neither.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from .missing import MODE_NAMES

REQUIRED_COLUMNS = ("model", "dataset", "train_protocol", "seed", "protocol", "setting", "level", "mode", "metric",
                    "value")
PROVENANCE_COLUMNS = ("selected_epoch", "commit", "config_hash", "device")  # written by experiment.run
KEY = ("model", "train_protocol", "seed", "protocol", "setting", "level", "mode", "metric")
# metrics that are NaN by definition in a legitimate case (no sample with a non-zero label)
MAY_BE_NAN = frozenset({"Acc-2 non-0", "F1 non-0", "F1 non-0 swapped"})
# the authors'-protocol rows (lnln_authors, mplmm_authors; chapter 11) next to ours; oracle: the testbed's Bayes-optimal row
MODEL_ORDER = ("lnln", "lnln_authors", "almt", "promma", "mplmm", "mplmm_authors", "baseline", "oracle")
# the files of a finished cell of a grid
CELL_FILES = ("results.csv", "history.csv", "provenance.json")

# floats read back exactly as written: pandas 3 does so by default (and deprecates the argument), pandas 2 needs it
CSV_FLOATS = {"float_precision": "round_trip"} if int(pd.__version__.split(".")[0]) < 3 else {}


class RecordsError(ValueError):
    """Records that cannot make a table: the message names the file and each problem."""


def _where(i, source_is_csv: bool) -> str:
    return f"line {i + 2}" if source_is_csv else f"row {i}"


def _cell(row) -> str:
    parts = []
    for k in KEY:
        v = row.get(k)
        if k == "level" and (v is None or (isinstance(v, float) and math.isnan(v))):
            continue
        if k == "mode" and (v is None or v == "" or (isinstance(v, float) and math.isnan(v))):
            continue
        parts.append(f"{k}={v}")
    return "(" + ", ".join(parts) + ")"


def validate(df: pd.DataFrame, source: str = "records") -> pd.DataFrame:
    """Check and normalise records; raise :class:`RecordsError` listing every problem (one line each)."""
    csv = str(source).endswith(".csv")
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise RecordsError(f"{source}: missing column(s) {missing}; records need the columns {list(REQUIRED_COLUMNS)}")
    if len(df) == 0:
        raise RecordsError(f"{source}: no records")
    df = df.reset_index(drop=True).copy()
    problems: list[str] = []
    df["mode"] = df["mode"].astype(object).where(df["mode"].notna(), "").astype(str)
    for col in ("level", "value"):
        num = pd.to_numeric(df[col], errors="coerce")
        bad = num.isna() & df[col].notna()
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            problems.append(f"column '{col}': {int(bad.sum())} value(s) that are not numbers, first {df[col].iloc[i]!r} "
                            f"at {_where(i, csv)}")
        df[col] = num.astype(float)
    seed = pd.to_numeric(df["seed"], errors="coerce")
    for col in ("model", "dataset", "train_protocol", "seed", "protocol", "setting", "metric"):
        empty = df[col].isna() | (df[col].astype(str).str.strip() == "")
        if col == "seed":
            empty |= seed.isna()
        if empty.any():
            i = int(np.flatnonzero(empty)[0])
            problems.append(f"column '{col}': empty or invalid in {int(empty.sum())} row(s), first at {_where(i, csv)} "
                            f"{_cell(df.iloc[i])}")
    if not seed.isna().any():
        df["seed"] = seed.astype(int)
    for col, allowed in (("setting", {"rate", "mode"}), ("protocol", {"A", "B"}), ("train_protocol", {"A", "B"})):
        bad = df[col].notna() & ~df[col].isin(allowed)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            problems.append(f"column '{col}': {df[col].iloc[i]!r} at {_where(i, csv)} is not one of {sorted(allowed)}")
    rate, mode = df["setting"] == "rate", df["setting"] == "mode"
    bad = rate & df["level"].isna()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        problems.append(f"column 'level': empty in {int(bad.sum())} rate row(s), first at {_where(i, csv)} {_cell(df.iloc[i])}")
    bad = mode & ~df["mode"].isin(MODE_NAMES)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        problems.append(f"column 'mode': {df['mode'].iloc[i]!r} at {_where(i, csv)} is not one of {list(MODE_NAMES)}")
    df["level"] = df["level"].round(6)
    nan = ~np.isfinite(df["value"].to_numpy(float)) & ~(df["value"].isna() & df["metric"].isin(MAY_BE_NAN))
    if nan.any():
        i = int(np.flatnonzero(nan)[0])
        problems.append(f"column 'value': NaN or infinite in {int(nan.sum())} row(s) whose metric is never NaN, first at "
                        f"{_where(i, csv)} {_cell(df.iloc[i])}")
    dup = df.duplicated(list(KEY), keep=False)
    if dup.any():
        first = df[dup].groupby(list(KEY), dropna=False, sort=False).groups
        key, idx = next(iter(first.items()))
        problems.append(f"duplicated cell: {int(dup.sum())} rows share their key {list(KEY)}, first "
                        f"{_cell(df.iloc[idx[0]])} at {', '.join(_where(int(j), csv) for j in idx)} "
                        "(was a run concatenated twice?)")
    datasets = sorted(df["dataset"].dropna().astype(str).unique())
    if len(datasets) > 1:
        problems.append(f"column 'dataset': records of {len(datasets)} datasets {datasets}; make tables per dataset")
    if problems:
        raise RecordsError(f"{source}: invalid records:\n  - " + "\n  - ".join(problems))
    return df


def records_file(path) -> Path:
    p = Path(path)
    if p.is_dir():
        for name in ("records.csv", "records.parquet"):
            if (p / name).is_file():
                return p / name
        raise FileNotFoundError(f"{p}: no records.csv (run `python -m mmsa_core reproduce` first)")
    if not p.is_file():
        raise FileNotFoundError(f"{p}: records file not found")
    return p


def load_records(path) -> pd.DataFrame:
    """Records from a results folder (its ``records.csv``) or a CSV / parquet file, validated."""
    f = records_file(path)
    if f.suffix == ".parquet":
        df = pd.read_parquet(f)
    else:
        try:
            df = pd.read_csv(f, **CSV_FLOATS, dtype={"mode": str, "commit": str, "config_hash": str})
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
            raise RecordsError(f"{f}: not a readable CSV file ({type(e).__name__}: {e})") from e
    return validate(df, str(f))


def read_csv(path) -> pd.DataFrame:
    """A records CSV read back exactly as written (round-trip floats; the empty mode of rate rows as '')."""
    df = pd.read_csv(path, **CSV_FLOATS, dtype={"mode": str, "config_hash": str, "commit": str})
    if "mode" in df:
        df["mode"] = df["mode"].fillna("")
    return df


# ---------------------------------------------------------------------------------------- the cells of a grid
def _cell_key(cell_dir: Path):
    parts = cell_dir.name.rsplit("-", 2)
    model, proto, seed = parts if len(parts) == 3 else (cell_dir.name, "", "")
    order = MODEL_ORDER.index(model) if model in MODEL_ORDER else len(MODEL_ORDER)
    return (order, model, proto, int(seed) if seed.isdigit() else 0, cell_dir.name)


def finished_cells(out: str | Path) -> list[Path]:
    """Cell folders under ``<out>/runs`` with all result files, in the book's model order."""
    runs = Path(out) / "runs"
    cells = [d for d in runs.iterdir() if d.is_dir() and all((d / f).is_file() for f in CELL_FILES)] if runs.is_dir() else []
    return sorted(cells, key=_cell_key)


# ---------------------------------------------------------------------------------------- per-epoch histories
def cell_histories(results_dir) -> pd.DataFrame:
    """``history.csv`` of every finished cell under ``<results_dir>/runs``, with model, train_protocol, seed,
    the selected epoch (from the cell's ``results.csv``) and the cell's name."""
    frames = []
    for d in finished_cells(results_dir):
        rec = read_csv(d / "results.csv")
        h = pd.read_csv(d / "history.csv", **CSV_FLOATS)
        first = rec.iloc[0]
        h.insert(0, "model", first["model"])
        h.insert(1, "train_protocol", first["train_protocol"])
        h.insert(2, "seed", int(first["seed"]))
        h["selected_epoch"] = int(first["selected_epoch"])
        h["cell"] = d.name
        frames.append(h)
    if not frames:
        raise FileNotFoundError(f"{Path(results_dir) / 'runs'}: no finished cell with a history.csv")
    return pd.concat(frames, ignore_index=True)


def load_histories(results_dir) -> pd.DataFrame:
    """The per-epoch histories of a results folder: its ``histories.csv`` (written by ``reproduce`` next to
    ``records.csv``, the same snapshot), else those of the cells under ``runs/``."""
    f = Path(results_dir) / "histories.csv"
    if f.is_file():
        return pd.read_csv(f, **CSV_FLOATS)
    return cell_histories(results_dir)


def last_stage(history: pd.DataFrame) -> pd.DataFrame:
    """The rows of a run's history that belong to its last training stage (``stage`` column, in order; histories
    written before that column existed hold only the last stage)."""
    if "stage" not in history.columns or history.empty:
        return history
    return history[history["stage"] == history["stage"].iloc[-1]]


__all__ = ["CELL_FILES", "CSV_FLOATS", "KEY", "MAY_BE_NAN", "MODEL_ORDER", "PROVENANCE_COLUMNS", "REQUIRED_COLUMNS",
           "RecordsError", "cell_histories", "finished_cells", "last_stage", "load_histories", "load_records",
           "read_csv", "records_file", "validate"]
