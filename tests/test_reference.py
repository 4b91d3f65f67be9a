"""The committed reference grids of the embedded testbed, one per variant (``mmsa_core/reference/synth-small-<variant>``,
package data, written by ``python -m mmsa_core reproduce --set train.threads=1 --set data.synth_variant=<variant>
--out mmsa_core/reference/synth-small-<variant>``): complete, consistent, and reproducible.

``test_a_committed_cell_reproduces`` re-trains one cell (the late-fusion baseline, protocol A, seed 1111: the
fastest) with the configuration recorded in ``provenance.json`` and compares every record with the committed one:

- EXACT (every value bit-identical) when this machine is the kind that wrote the grid: the same CPU model, the
  same torch version and the same bytes of the embedded data, which is generated here from its seed (runs are
  seeded, single-threaded, deterministic kernels, missing-data plans from (seed, epoch, split));
- otherwise within ``ACROSS_MACHINES_ATOL`` (absolute, per metric value): another CPU may sum floats in another
  order (the data's MiniLM text states included) and 20 epochs can amplify the last bits; the test says which
  check it made (:func:`mmsa_core.reproduce.rerun_atol` decides).
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from mmsa_core import reproduce
from mmsa_core import results as R
from mmsa_core.book import REFERENCE_GRID, REFERENCE_GRIDS
from mmsa_core.missing import MODE_NAMES, RATES
from mmsa_core.utils import cpu_model

REF = REFERENCE_GRID
MODELS = ("lnln", "almt", "promma", "mplmm", "baseline")
GRID_MODELS = {"redundant": MODELS, "complementary": MODELS}  # every model on both variants of the testbed
# rows run with their authors' protocols (chapter 11), each under its own training protocol only
AUTHORS_ROWS = {"redundant": {"lnln_authors": "A", "mplmm_authors": "B"}, "complementary": {}}


def grid_cells(variant: str) -> set:
    return ({(m, p) for m in GRID_MODELS[variant] for p in "AB"}
            | {(m, p) for m, p in AUTHORS_ROWS[variant].items()})
ORACLE = "oracle"  # the testbed's Bayes-optimal row: not trained, seed 0, the same numbers for both training protocols
SEEDS = (1111, 1112, 1113)
ACROSS_MACHINES_ATOL = reproduce.ACROSS_MACHINES_ATOL


@pytest.fixture(scope="module", params=sorted(REFERENCE_GRIDS))
def variant(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def records(variant) -> pd.DataFrame:
    return R.load_records(REFERENCE_GRIDS[variant] / "records.csv")  # validated: columns, no duplicate cell, no NaN


@pytest.fixture(scope="module")
def provenance(variant) -> dict:
    return json.loads((REFERENCE_GRIDS[variant] / "provenance.json").read_text())


@pytest.fixture(scope="module")
def trained(records) -> pd.DataFrame:
    return records[records.model != ORACLE]


def test_the_grid_is_complete(trained, records, provenance, variant):
    cells = {(m, p, s) for m, p, s in trained[["model", "train_protocol", "seed"]].drop_duplicates().itertuples(index=False)}
    assert cells == {(m, p, s) for m, p in grid_cells(variant) for s in SEEDS}
    orc = records[records.model == ORACLE]
    assert set(orc.train_protocol) == {"A", "B"} and set(orc.seed) == {0}
    records = trained
    assert set(provenance["cells"]) == {f"{m}-{p}-{s}" for m, p, s in cells}
    per_cell = records.groupby(["model", "train_protocol", "seed"]).size()
    ours = per_cell.drop(list(AUTHORS_ROWS[variant]), level="model", errors="ignore")
    assert (ours == ours.iloc[0]).all()
    for m in AUTHORS_ROWS[variant]:  # the same settings and metrics, plus the authors' swapped F1
        assert (per_cell.xs(m, level="model") > ours.iloc[0]).all()
        assert set(records[records.model == m].metric) - set(records[records.model == "lnln"].metric) \
            == {"F1 has-0 swapped", "F1 non-0 swapped"}
    one = records[(records.model == "baseline") & (records.train_protocol == "A") & (records.seed == 1111)]
    for proto in "AB":
        levels = sorted(one[(one.protocol == proto) & (one.setting == "rate")].level.round(1).unique())
        assert levels == pytest.approx(list(RATES))
    assert set(one[one.setting == "mode"]["mode"]) == set(MODE_NAMES)
    assert set(records.dataset) == {f"synth-small-{variant}"}


def test_provenance_names_what_ran(trained, provenance):
    records = trained
    for name, p in provenance["cells"].items():
        for k in ("commit", "config_hash", "dataset_fingerprint", "device", "torch", "wall_s", "config"):
            assert p.get(k) not in (None, ""), (name, k)
        assert p["config"]["train"]["threads"] == 1, name
        assert not str(p["commit"]).endswith("-dirty"), f"{name} ran from uncommitted code ({p['commit']})"
    hashes = records.groupby(["model", "train_protocol", "seed"]).config_hash.unique()
    for (m, tp, s), h in hashes.items():
        assert list(h) == [provenance["cells"][f"{m}-{tp}-{s}"]["config_hash"]]


def test_histories_hold_every_run(provenance, variant):
    h = R.load_histories(REFERENCE_GRIDS[variant])
    assert set(h.cell) == set(provenance["cells"])
    gap = R.selection_gap(h, metrics=["MAE"])  # our rows: the authors' rows select by their own rule
    ours = [c for c in provenance["cells"] if c.split("-")[0] not in AUTHORS_ROWS[variant]]
    assert len(gap) == len(ours) and (gap.optimism >= 0).all()  # the best test epoch is never worse


def test_tables_build_from_the_committed_grid(records, variant):
    cells = grid_cells(variant)
    t = R.paper_table(records)
    assert len(t) == len(cells) + 2  # + the oracle's rows
    assert not t[[c for c in t.columns if "swapped" not in str(c)]].isna().any().any()
    assert R.mode_table(records, "MAE", train_protocols=["B"]).shape == (sum(p == "B" for _, p in cells) + 1, 7)
    gap = R.oracle_gap_table(records, numeric=True)
    assert len(gap) == len(cells) and (gap > 0).all().all()  # no trained model beats the Bayes-optimal oracle


@pytest.mark.slow
def test_a_committed_cell_reproduces(tmp_path, restore_torch_globals):
    provenance = json.loads((REF / "provenance.json").read_text())
    cell = provenance["cells"]["baseline-A-1111"]
    new, old = reproduce.rerun_cell(REF, "baseline", "A", 1111, out_dir=tmp_path / "rerun")
    assert len(new) == len(old) > 0
    now = json.loads((tmp_path / "rerun" / "provenance.json").read_text())
    atol = reproduce.rerun_atol(cell, now)
    same_kind = cpu_model() in cell["device"] and cell["torch"] == torch.__version__
    assert atol == (0.0 if same_kind and now["dataset_fingerprint"] == cell["dataset_fingerprint"] else ACROSS_MACHINES_ATOL)
    diffs = reproduce.compare_records(new, old, ignore=("commit", "device"), atol=atol)
    assert diffs == [], (f"{'exact check' if atol == 0 else f'tolerance check (atol {atol})'}: this machine, "
                         f"{cpu_model()} with torch {torch.__version__} and data {now['dataset_fingerprint']}; "
                         f"committed: {cell['device']}, torch {cell['torch']}, data {cell['dataset_fingerprint']}: {diffs}")
    print(f"\nbaseline-A-1111 re-run: {'exact' if atol == 0 else f'within {atol}'} check, {len(new)} records, largest "
          f"difference {(new.value - old.value).abs().max():.2g}")


def test_book_views_of_the_grid(records, variant):
    """What chapters 8-9 draw is the grid itself: mode bars are the mode table's means, the curves the per-rate
    means under the training protocol, the optimism the selection gap in accuracy points."""
    from mmsa_core import book

    ref = book.reference(variant)
    bars = book.mode_means(ref, "MAE").set_index(["model", "mode"])["value"]
    one = records[(records.model == "lnln") & (records.train_protocol == "B") & (records.setting == "mode")
                  & (records["mode"] == "{l}") & (records.metric == "MAE")]
    assert bars[("lnln", "{l}")] == pytest.approx(one.value.mean(), abs=1e-12) and len(one) == len(SEEDS)
    curves = book.robustness_curves(ref, "A", ["MAE", "Acc-2 non-0"])
    at = curves[(curves.model == "baseline") & (curves.metric == "Acc-2 non-0") & (curves.level.round(1) == 0.9)]
    raw = records[(records.model == "baseline") & (records.train_protocol == "A") & (records.protocol == "A")
                  & (records.setting == "rate") & (records.level.round(1) == 0.9) & (records.metric == "Acc-2 non-0")]
    assert at.value.item() == pytest.approx(100 * raw.value.mean(), abs=1e-9)
    opt = book.optimism(ref, ["MAE", "Acc-2 non-0"]).set_index("run")
    gap = R.selection_gap(ref.histories, metrics=["Acc-2 non-0"])
    lnln_a = gap[(gap.model == "lnln") & (gap.train_protocol == "A")].optimism.mean()
    assert opt.loc["lnln (A)", "Acc-2 non-0"] == pytest.approx(100 * lnln_a) and (opt[["MAE"]] >= 0).all().all()


def test_what_chapters_8_and_9_say_holds():
    """The prose of chapters 8-9 reads the committed grids; if a new grid changed these patterns, the prose would
    be wrong and this test says so."""
    red = R.load_records(REFERENCE_GRIDS["redundant"] / "records.csv")
    all_rates = R.rate_table(red, "MAE", numeric=True)
    a_rates = all_rates.xs("A", level="train_protocol")
    assert (a_rates.loc["lnln_authors"] >= a_rates.loc["lnln"]).all()  # test-set selection does not make it better
    assert all_rates.drop("oracle", level="model")[0.0].idxmax() == ("mplmm_authors", "B")
    b_rates = all_rates.xs("B", level="train_protocol").drop("oracle")
    ours_b = b_rates.drop("mplmm_authors")
    assert (ours_b.max() - ours_b.min()).max() < 0.06  # chapter 9: our five within about 0.05 under B
    above = b_rates.loc["mplmm_authors"] - ours_b.max()
    assert (round(above.min(), 2), round(above.max(), 2)) == (0.08, 0.14)  # ... the authors' MPLMM another 0.08 to 0.14
    assert (b_rates.drop("mplmm_authors").idxmin() == "baseline").all()  # "the baseline lowest"
    mae = R.paper_table(red, ["MAE"], numeric=True)["MAE"]
    for proto in ("A", "B"):  # the late-fusion baseline leads LNLN (and every other trained row) over three seeds
        assert mae[("baseline", proto)] == mae.xs(proto, level="train_protocol").drop("oracle").min(), proto
    rates = a_rates.drop("lnln_authors")  # our rows
    at9 = rates[0.9]
    for r in (0.6, 0.7, 0.8, 0.9):  # "ProMMA and the MPLMM-style model fall behind from r = 0.6 on"
        assert min(rates[r][["promma", "mplmm"]]) > max(rates[r][["lnln", "almt", "baseline"]]), r
    assert rates[0.5]["promma"] < rates[0.5]["lnln"]
    trained = a_rates.drop("oracle")  # "the baseline below every other trained model up to r = 0.7; at 0.8 and 0.9
    assert all(trained[r].idxmin() == "baseline" for r in trained.columns if r <= 0.7)  # LNLN and ALMT pass below it"
    assert all(max(trained.loc[["lnln", "almt"], r]) < trained.loc["baseline", r] for r in (0.8, 0.9))
    assert (rates.drop("oracle")[0.0] - rates.loc["oracle", 0.0]).min() > 0.2  # far from the oracle on complete input
    r0 = all_rates.drop("oracle", level="model")[0.0].drop(["lnln_authors", "mplmm_authors"], level="model")
    assert (round(r0.min(), 2), round(r0.max(), 2)) == (0.68, 0.76)  # "our five models at about 0.68 to 0.76"
    # no leak through the token ids: no model beats the oracle (of its training protocol) at any rate, nor any mode
    oracle_rates = all_rates.xs("oracle", level="model")
    for (model, proto), row in all_rates.drop("oracle", level="model").iterrows():
        assert (row > oracle_rates.loc[proto]).all(), (model, proto)
    assert at9.drop("oracle").idxmin() == "almt" and round(at9["almt"] - at9["oracle"], 2) == 0.03  # "0.03 above it"
    modes = R.mode_table(red, "MAE", train_protocols=["B"], numeric=True).droplevel("train_protocol")
    with_l = [m for m in modes.columns if "l" in m]
    orc = modes.loc["oracle"]
    assert orc[with_l].max() < orc.drop(with_l).min()  # the oracle: language dominant
    gap = modes.drop("oracle") - orc
    authors = gap.loc["mplmm_authors"]
    gap = gap.drop("mplmm_authors")  # our rows; the authors' MPLMM is further behind on every mode
    assert (authors > gap.max()).all()
    assert (round(gap["{l}"].min(), 2), round(gap["{l}"].max(), 2)) == (0.28, 0.36)  # words under-read
    near = gap[["{a,v}", "{a}"]]  # "within 0.01 to 0.09 of the oracle on {a,v} and {a}"
    assert (round(near.min().min(), 2), round(near.max().max(), 2)) == (0.01, 0.09)
    assert (modes.drop("oracle") > orc).all().all()  # no model beats the oracle under any mode
    cross = R.cross_protocol_table(red, metrics=["MAE"], numeric=True)[("MAE", "other − same")]
    lose = {m: round(cross[(m, "A")], 2) for m in ("baseline", "mplmm", "promma")}
    assert lose == {"baseline": 0.14, "mplmm": 0.09, "promma": 0.08}  # trained under B, tested under A
    under_b = cross.xs("B", level="tested under").drop(["oracle", "lnln_authors", "mplmm_authors"]).dropna()
    assert len(under_b) == 5 and (under_b < 0).all()  # trained under A, every model does better under B ...
    assert round(-under_b.max(), 3) == 0.003 and under_b.idxmax() == "promma"  # "by 0.003 (ProMMA)
    assert round(-under_b.min(), 3) == 0.030 and under_b.idxmin() == "almt"  # to 0.030 (the ALMT-like model)"
    room = R.oracle_gap_table(red, numeric=True).drop(["lnln_authors", "mplmm_authors"], level="model")  # our rows
    assert (round(room.min().min(), 2), round(room.max().max(), 2)) == (0.13, 0.25)  # chapter 9: "0.13 to 0.25"
    comp = R.paper_table(R.load_records(REFERENCE_GRIDS["complementary"] / "records.csv"), ["MAE"], numeric=True)["MAE"]
    b = comp.xs("B", level="train_protocol")
    assert b["promma"] < b["lnln"] and b["promma"] > b["baseline"] - 0.005  # better than LNLN, not than the baseline
    ours = comp.drop("oracle", level="model")
    for proto, (lo, hi) in (("B", (0.86, 0.89)), ("A", (0.92, 0.97))):  # "within 0.04 (0.86 to 0.89) ... 0.92 to 0.97"
        x = ours.xs(proto, level="train_protocol")
        assert (round(x.min(), 2), round(x.max(), 2)) == (lo, hi), proto
    for proto in ("A", "B"):  # "the late-fusion baseline again has the lowest MAE under both training protocols"
        assert ours.xs(proto, level="train_protocol").idxmin() == "baseline", proto
    assert abs(b["promma"] - b["mplmm"]) < 0.002 and round(b["lnln"] - b["promma"], 3) == 0.007
    assert round(b["almt"] - b["promma"], 3) == 0.034
    room_c = R.oracle_gap_table(R.load_records(REFERENCE_GRIDS["complementary"] / "records.csv"), numeric=True)
    assert (round(room_c.min().min(), 2), round(room_c.max().max(), 2)) == (0.14, 0.23)  # "0.14 to 0.23 of MAE"
