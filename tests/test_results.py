"""Tables from tidy records, their validation, the reported numbers, and the reproduce grid (resume, determinism).

The table tests use a records frame built by hand from a formula whose means and stds are worked out in the
comments; the grid tests train the baseline for one epoch on the embedded dataset (a few seconds each).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import run_cli
from mmsa_core import reproduce
from mmsa_core import results as R
from mmsa_core.__main__ import main
from mmsa_core.config import RunConfig, config_hash
from mmsa_core.missing import MODE_NAMES

RATES = [round(0.1 * i, 1) for i in range(10)]  # mean 0.45
SEEDS = (1111, 1112)
BASE = {"lnln": {"Acc-2 has-0": 0.70, "MAE": 0.80}, "baseline": {"Acc-2 has-0": 0.60, "MAE": 1.00}}
TP_OFF = {"A": 0.0, "B": 0.01}  # training protocol
PROTO_OFF = {"A": 0.0, "B": 0.02}  # test protocol
SEED_OFF = {1111: 0.0, 1112: 0.04}  # over the two seeds: mean +0.02, std (ddof=1) 0.04 / sqrt(2) = 0.028284
SLOPE = {"Acc-2 has-0": -0.10, "MAE": 0.20}  # per unit of missing rate
MODE_STEP = {"Acc-2 has-0": -0.01, "MAE": 0.01}  # per mode index


def make_records(dataset="synth-small", models=("baseline", "lnln")) -> pd.DataFrame:
    rows = []
    for model in models:
        for tp in ("A", "B"):
            for seed in SEEDS:
                for proto in ("A", "B"):
                    for r in RATES:
                        for m in SLOPE:
                            v = BASE[model][m] + TP_OFF[tp] + PROTO_OFF[proto] + SEED_OFF[seed] + SLOPE[m] * r
                            rows.append((model, dataset, tp, seed, proto, "rate", r, "", m, v))
                for i, name in enumerate(MODE_NAMES):
                    for m in SLOPE:
                        v = BASE[model][m] + TP_OFF[tp] + SEED_OFF[seed] + MODE_STEP[m] * i
                        rows.append((model, dataset, tp, seed, "B", "mode", math.nan, name, m, v))
    df = pd.DataFrame(rows, columns=list(R.REQUIRED_COLUMNS))
    df["selected_epoch"], df["commit"], df["config_hash"], df["device"] = 3, "abc1234", "h", "cpu (2 threads)"
    return df


STD2 = 0.04 / math.sqrt(2)


# ------------------------------------------------------------------------------------------ tables
def test_paper_table_values():
    t = R.paper_table(make_records())
    assert list(t.index) == [("lnln", "A"), ("lnln", "B"), ("baseline", "A"), ("baseline", "B")]  # book order
    assert list(t.columns) == ["Acc-2 has-0", "MAE"]
    # lnln, trained and tested under A: Acc 0.70 - 0.10 * 0.45 = 0.655 (seed 1111), 0.695 (1112)
    assert t.loc[("lnln", "A"), "Acc-2 has-0"] == "67.50 ± 2.83"
    # MAE 0.80 + 0.20 * 0.45 = 0.89, 0.93
    assert t.loc[("lnln", "A"), "MAE"] == "0.910 ± 0.028"
    # baseline trained and tested under B: 0.60 + 0.01 + 0.02 - 0.045 = 0.585, 0.625; MAE 1.12, 1.16
    assert t.loc[("baseline", "B"), "Acc-2 has-0"] == "60.50 ± 2.83"
    assert t.loc[("baseline", "B"), "MAE"] == "1.140 ± 0.028"
    n = R.paper_table(make_records(), numeric=True)
    assert n.loc[("lnln", "A"), "MAE"] == pytest.approx(0.91)
    assert n.loc[("baseline", "B"), "Acc-2 has-0"] == pytest.approx(0.605)


def test_rate_table_values():
    df = make_records()
    t = R.rate_table(df, "MAE", numeric=True)
    assert list(t.columns) == RATES
    # lnln A at r = 0.5 under A: 0.80 + 0.10 = 0.90, 0.94
    assert t.loc[("lnln", "A"), 0.5] == pytest.approx(0.92)
    s = R.rate_table(df, "MAE")
    assert s.loc[("lnln", "A"), 0.5] == "0.920 ± 0.028"
    # tested under B instead of the training protocol: + 0.02
    assert R.rate_table(df, "MAE", protocol="B", numeric=True).loc[("lnln", "A"), 0.5] == pytest.approx(0.94)
    # accuracy at r = 0.9, baseline trained A tested A: 0.60 - 0.09 = 0.51, 0.55
    assert R.rate_table(df, "Acc-2 has-0").loc[("baseline", "A"), 0.9] == "53.00 ± 2.83"


def test_mode_table_values():
    t = R.mode_table(make_records(), "MAE")
    assert list(t.columns) == list(MODE_NAMES)
    # lnln trained B, mode 6 ({l}): 0.80 + 0.01 + 0.06 = 0.87, 0.91
    assert t.loc[("lnln", "B"), "{l}"] == "0.890 ± 0.028"
    # complete mode {l,a,v}, baseline trained A: 1.00, 1.04
    assert t.loc[("baseline", "A"), "{l,a,v}"] == "1.020 ± 0.028"
    assert R.mode_table(make_records(), "MAE", train_protocols=["B"]).index.tolist() == [("lnln", "B"), ("baseline", "B")]


def test_cross_protocol_table_values():
    t = R.cross_protocol_table(make_records(), numeric=True)
    # lnln tested under B: trained B 0.80 + 0.01 + 0.02 + 0.09 = 0.92 / 0.96 -> 0.94; trained A 0.93; other - same -0.01
    row = t.loc[("lnln", "B")]
    assert row[("MAE", "trained same")] == pytest.approx(0.94)
    assert row[("MAE", "trained other")] == pytest.approx(0.93)
    assert row[("MAE", "other − same")] == pytest.approx(-0.01)
    s = R.cross_protocol_table(make_records())
    assert s.loc[("lnln", "B"), ("MAE", "trained same")] == "0.940 ± 0.028"
    assert s.loc[("lnln", "B"), ("MAE", "other − same")] == "-0.010"
    # accuracy, baseline tested under A: same 0.555 / 0.595 -> 57.50; other (trained B) +1 point
    assert s.loc[("baseline", "A"), ("Acc-2 has-0", "trained same")] == "57.50 ± 2.83"
    assert s.loc[("baseline", "A"), ("Acc-2 has-0", "other − same")] == "+1.00"


def test_incomplete_rate_sweep_is_refused():
    df = make_records()
    df = df[~((df.model == "lnln") & (df.seed == 1112) & (df.train_protocol == "A") & (df.level == 0.3))]
    with pytest.raises(R.RecordsError, match="every cell must cover the same rates"):
        R.paper_table(df)


def test_formatting_and_markdown():
    assert R.format_mean_std(0.59481, 0.01234, "Acc-7") == "59.48 ± 1.23"
    assert R.format_mean_std(1.39761, 0.0123, "MAE") == "1.398 ± 0.012"
    assert R.format_mean_std(0.5, float("nan"), "Corr") == "0.500"  # one seed: no std
    assert R.format_mean_std(float("nan"), 0.1, "F1 non-0") == "n/a"
    md = R.to_markdown(R.paper_table(make_records()))
    lines = md.splitlines()
    assert lines[0].split("|")[1].strip() == "model" and "Acc-2 has-0" in lines[0]
    assert set(lines[1].replace("|", "").replace(" ", "")) == {"-"}
    assert len(lines) == 2 + 4 and all(line.count("|") == lines[0].count("|") for line in lines)
    assert "<table" in R.to_html(R.paper_table(make_records()))


def test_selection_gap_table():
    rows = []
    # seed 1111 selects epoch 1: test MAE 0.9 there, best 0.8 (epoch 2); accuracy 0.6 selected and best
    # seed 1112 selects epoch 2: test MAE 0.75 there, best 0.7 (epoch 1); accuracy 0.6 selected, best 0.7 (epoch 0)
    hist = {1111: (1, [1.0, 0.9, 0.8], [0.5, 0.6, 0.55]), 1112: (2, [1.0, 0.7, 0.75], [0.7, 0.5, 0.6])}
    for seed, (sel, maes, accs) in hist.items():
        for e in range(3):
            rows.append({"model": "baseline", "train_protocol": "A", "seed": seed, "epoch": e, "valid_MAE": 1.0,
                         "test_MAE": maes[e], "test_Acc-2 has-0": accs[e], "selected_epoch": sel})
    h = pd.DataFrame(rows)
    long = R.selection_gap(h)
    g = long.set_index(["seed", "metric"])
    assert g.loc[(1111, "MAE"), "best_epoch"] == 2 and g.loc[(1112, "Acc-2 has-0"), "best_epoch"] == 0
    t = R.selection_gap_table(h)
    row = t.loc[("baseline", "A")]
    assert row[("MAE", "selected on validation")] == "0.825 ± 0.106"  # 0.9, 0.75
    assert row[("MAE", "best test epoch")] == "0.750 ± 0.071"  # 0.8, 0.7
    assert row[("MAE", "optimism")] == "+0.075 ± 0.035"  # 0.1, 0.05
    assert row[("Acc-2 has-0", "selected on validation")] == "60.00 ± 0.00"
    assert row[("Acc-2 has-0", "best test epoch")] == "65.00 ± 7.07"
    assert row[("Acc-2 has-0", "optimism")] == "+5.00 ± 7.07"
    with pytest.raises(R.RecordsError, match="track_test"):
        R.selection_gap(h.drop(columns=["test_MAE", "test_Acc-2 has-0"]))


# ------------------------------------------------------------------------------------- validation
def _write(df, tmp_path) -> Path:
    d = tmp_path / "res"
    d.mkdir()
    df.to_csv(d / "records.csv", index=False)
    return d


def test_valid_records_round_trip(tmp_path):
    df = make_records()
    df.loc[df.metric == "MAE", "metric"] = "F1 non-0"  # a metric that may legitimately be NaN ...
    df.loc[1, "value"] = math.nan  # ... is accepted as NaN (row 1 is an "F1 non-0" row)
    assert df.loc[1, "metric"] == "F1 non-0"
    back = R.load_records(_write(df, tmp_path))
    assert len(back) == len(df) and back["mode"].eq("").sum() == (df.setting == "rate").sum()


@pytest.mark.parametrize("corrupt, expected", [
    (lambda df: df.drop(columns=["value"]), r"missing column\(s\) \['value'\]"),
    (lambda df: pd.concat([df, df.iloc[[5]]]), r"duplicated cell.*model=baseline, train_protocol=A, seed=1111"),
    (lambda df: df.assign(value=df.value.where(df.index != 7)), r"column 'value': NaN.*line 9 .*metric=MAE"),
    (lambda df: df.assign(seed=df.seed.astype(object).where(df.index != 3, "")), r"column 'seed'.*line 5"),
    (lambda df: df.assign(dataset=df.dataset.where(df.index != 0, "mosi")), r"2 datasets"),
])
def test_corrupt_records_fail_clearly(tmp_path, capsys, corrupt, expected):
    d = _write(corrupt(make_records()), tmp_path)
    with pytest.raises(R.RecordsError, match=expected) as e:
        R.load_records(d)
    assert str(d / "records.csv") in str(e.value)
    assert main(["tables", "--results", str(d)]) != 0
    err = capsys.readouterr().err
    assert str(d / "records.csv") in err and re.search(expected, err)


def test_tables_cli_exit_code_in_a_process(tmp_path, mmsa_cache_dir):
    d = _write(make_records().drop(columns=["metric"]), tmp_path)
    p = run_cli(["tables", "--results", d], mmsa_cache_dir)
    assert p.returncode != 0
    assert "missing column(s) ['metric']" in p.stderr and "records.csv" in p.stderr


def test_tables_cli_writes_files(tmp_path):
    d = _write(make_records(), tmp_path)
    assert main(["tables", "--results", str(d), "--out", str(tmp_path / "md")]) == 0
    md = (tmp_path / "md" / "paper.md").read_text()
    assert "67.50 ± 2.83" in md and "not a real dataset" in md
    assert {p.name for p in (tmp_path / "md").iterdir()} == {"paper.md", "rates.md", "modes.md", "cross_protocol.md"}
    assert main(["tables", "--results", str(d), "--format", "html", "--out", str(tmp_path / "html")]) == 0
    assert "<table" in (tmp_path / "html" / "paper.html").read_text()


# ------------------------------------------------------------------------------------ reported numbers
def test_reported_numbers_are_the_verified_ones():
    rep = R.load_reported()
    absolute = rep[rep.kind == "absolute"]
    assert set(absolute.dataset) == {"CH-SIMS"} and set(absolute.method) == {"LNLN"}
    got = dict(zip(absolute.metric, absolute.value.astype(float)))
    assert got == {"Acc-5": 34.68, "Acc-3": 57.32, "Acc-2": 73.15, "F1": 69.18, "MAE": 0.515, "Corr": 0.387}
    assert (absolute.source.str.contains("corrigendum")).all()
    claims = rep[rep.kind != "absolute"]
    assert claims.value.isna().all()  # relative claims carry no per-table number
    assert any("+5.2%" in n for n in R.reported_notes("mosi")) and any("+4.8%" in n for n in R.reported_notes("mosei"))


def test_reported_block_beside_matching_real_dataset_only():
    sims = make_records(dataset="sims").replace({"metric": {"Acc-2 has-0": "Acc-2"}})
    ours = R.paper_table(sims)
    t = R.with_reported(ours, "sims")
    assert R.REPORTED_LABEL in t.columns.get_level_values(0)
    assert t.loc[("lnln", "A"), (R.REPORTED_LABEL, "Acc-2")] == "73.15"
    assert t.loc[("lnln", "A"), (R.REPORTED_LABEL, "MAE")] == "0.515"
    assert "corrigendum" in t.loc[("lnln", "A"), (R.REPORTED_LABEL, "source")]
    assert (R.REPORTED_LABEL, "Acc-5") not in t.columns  # beside our table: only the metrics it shows
    assert R.reported_block("sims").loc[("lnln", "A"), (R.REPORTED_LABEL, "Acc-5")] == "34.68"
    assert t.loc[("baseline", "A"), (R.REPORTED_LABEL, "MAE")] == ""  # only the method that reported it
    assert t.loc[("lnln", "A"), ("ours (sims)", "MAE")] == ours.loc[("lnln", "A"), "MAE"]
    num = R.reported_block("CH-SIMS", numeric=True)
    assert num.loc[("lnln", "A"), (R.REPORTED_LABEL, "Acc-2")] == pytest.approx(0.7315)  # our scale
    # never beside synthetic results, nor beside a dataset without verified numbers
    synth = R.paper_table(make_records())
    assert R.with_reported(synth, "synth-small") is synth and R.reported_block("synth-small") is None
    assert R.reported_block("mosi") is None and R.reported_notes("synth-small") == []


def test_reported_csv_is_package_data():
    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("mmsa_core = ["))
    assert '"reported.csv"' in line and '"configs/*.yaml"' in line  # the presets ship with the package


# ------------------------------------------------------------------------------------ the grid
def test_track_test_off_keeps_existing_hashes():
    from dataclasses import asdict

    from mmsa_core.utils import stable_hash

    cfg = RunConfig()
    d = asdict(cfg)
    from mmsa_core.config import HASH_NEUTRAL

    for k in ("out_dir", "progress", "device", "eval_batch_size", "amp_dtype", "track_test", "group_by_length",
              *HASH_NEUTRAL):  # not part of the hash, or fields added later (neutral at their defaults)
        d["train"].pop(k)
    d["data"].pop("family")  # unset (decided from the data): likewise
    assert config_hash(cfg) == stable_hash(d)
    cfg.train.track_test = True
    assert config_hash(cfg) != stable_hash(d)


def test_cell_config_presets_and_overrides(tmp_path):
    cfgs = tmp_path / "configs"
    cfgs.mkdir()
    (cfgs / "baseline_default.yaml").write_text("model: baseline\ntrain:\n  lr: 0.01\n  epochs: 7\n")
    (cfgs / "baseline_mosi.yaml").write_text("model: lnln\n")
    cell = reproduce.Cell("baseline", "B", 1112)
    cfg, pf = reproduce.cell_config(cell, "synth", None, None, {"train": {"batch_size": 8}}, tmp_path / "o", configs=cfgs)
    assert pf == cfgs / "baseline_default.yaml"
    assert (cfg.train.lr, cfg.train.epochs, cfg.train.batch_size) == (0.01, 7, 8)
    assert (cfg.train.protocol, cfg.train.seed, cfg.train.track_test) == ("B", 1112, True)
    assert cfg.train.out_dir == str(tmp_path / "o" / "runs" / "baseline-B-1112")
    cfg, _ = reproduce.cell_config(cell, "synth", None, 2, {}, tmp_path / "o", configs=cfgs)
    assert cfg.train.epochs == 2  # --epochs wins over the preset
    cfg, pf = reproduce.cell_config(cell, "synth", None, None, {}, tmp_path / "o", configs=tmp_path / "none")
    assert pf is None and cfg.train.lr == RunConfig().train.lr  # the model's defaults
    with pytest.raises(ValueError, match="preset of model 'lnln'"):
        reproduce.cell_config(cell, "synth", "mosi", None, {}, tmp_path / "o", configs=cfgs)
    with pytest.raises(ValueError, match="the grid sets"):
        reproduce.cell_config(cell, "synth", None, None, {"train": {"seed": 1}}, tmp_path / "o", configs=cfgs)
    assert reproduce.infer_preset("/d/MOSEI/Processed/unaligned_50.pkl") == "mosei"
    assert reproduce.dataset_label("/d/CMU-MOSI/Processed/unaligned_50.pkl") == "mosi"
    assert reproduce.dataset_label("/d/mine.pkl") == "mine"


ONE_THREAD = ["train.threads=1"]


@pytest.fixture(scope="module")
def grid_runs(tmp_path_factory, mmsa_cache_dir):
    """One cell (baseline, protocol A, seed 1111, 1 epoch, embedded dataset) run into two folders."""
    root = tmp_path_factory.mktemp("grid")
    mp = pytest.MonkeyPatch()
    mp.setenv("MMSA_CACHE", str(mmsa_cache_dir))
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    warn = torch.is_deterministic_algorithms_warn_only_enabled()
    # no preset files: the model's defaults, whatever the presets say; 1 thread: fastest on a shared 2-core machine
    args = ["--models", "baseline", "--protocols", "A", "--seeds", "1111", "--epochs", "1", "--quiet",
            "--configs", str(root / "no-presets"), "--set", "train.threads=1"]
    try:
        assert main(["reproduce", *args, "--out", str(root / "a")]) == 0
        res_b = reproduce.run_grid(["baseline"], ["A"], [1111], epochs=1, out=root / "b", quiet=True,
                                   configs=root / "no-presets", overrides=ONE_THREAD)
        yield root, args, res_b
    finally:
        mp.undo()
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(det, warn_only=warn)


def test_same_cell_twice_gives_identical_records(grid_runs):
    root, _, res_b = grid_runs
    a = reproduce.read_csv(root / "a" / "records.csv")
    b = reproduce.read_csv(root / "b" / "records.csv")
    trained = a[a.model != "oracle"]
    assert len(trained) == (10 + 10 + 7) * 8  # tested under A (10 rates) and B (10 rates, 7 modes), 8 metrics
    assert len(a) == 3 * len(trained)  # + the testbed's oracle, once per training protocol
    assert reproduce.compare_records(a, b) == []
    assert a.equals(b)
    pa = json.loads((root / "a" / "provenance.json").read_text())["cells"]["baseline-A-1111"]
    pb = res_b.provenance["cells"]["baseline-A-1111"]
    for k in ("commit", "config_hash", "dataset_fingerprint", "device", "torch"):
        assert pa[k] == pb[k] and pa[k]
    assert pa["wall_s"] > 0


def test_tracked_test_score_is_the_selected_checkpoints(grid_runs):
    root = grid_runs[0]
    cell = root / "a" / "runs" / "baseline-A-1111"
    h = pd.read_csv(cell / "history.csv")
    rec = reproduce.read_csv(cell / "results.csv")
    sel = int(rec.selected_epoch.iloc[0])
    at = rec[(rec.protocol == "A") & (rec.setting == "rate") & (rec.level == 0.5)].set_index("metric")["value"]
    tracked = h.loc[h.epoch == sel, [f"test_{m}" for m in at.index]].iloc[0]
    assert tracked.to_numpy() == pytest.approx(at.to_numpy(), abs=1e-9)  # same checkpoint, same corruption
    t = R.selection_gap_table(root / "a")
    assert t.loc[("baseline", "A"), ("MAE", "optimism")].startswith("+0.000")  # one epoch: nothing to pick


def test_reproduce_skips_finished_and_resumes_unfinished(grid_runs, caplog):
    root, args, _ = grid_runs
    res_file = root / "a" / "runs" / "baseline-A-1111" / "results.csv"
    before = res_file.stat().st_mtime_ns
    caplog.set_level("INFO", logger="mmsa_core.reproduce")
    assert main(["reproduce", *args, "--out", str(root / "a")]) == 0
    assert res_file.stat().st_mtime_ns == before
    assert "skip baseline-A-1111: finished" in caplog.text
    # an unfinished cell (killed after training, before its results were written) resumes through the trainer
    b = root / "b"
    ref = reproduce.read_csv(b / "records.csv")
    (b / "runs" / "baseline-A-1111" / "results.csv").unlink()
    res = reproduce.run_grid(["baseline"], ["A"], [1111], epochs=1, out=b, quiet=True, configs=root / "no-presets",
                             overrides=ONE_THREAD)
    assert res.resumed == ["baseline-A-1111"] and not res.ran
    assert reproduce.compare_records(ref, reproduce.read_csv(b / "records.csv")) == []
    # another configuration in the same folder is refused, naming the difference, and nothing is touched
    with pytest.raises(ValueError, match=r"train.epochs: 1 -> 2"):
        reproduce.run_grid(["baseline"], ["A"], [1111], epochs=2, out=b, quiet=True, configs=root / "no-presets",
                           overrides=ONE_THREAD)


def test_rerun_cell_matches_committed(grid_runs, tmp_path):
    """What a committed results folder holds without its runs/ (checkpoints are not committed) is enough."""
    import shutil

    import yaml

    a = grid_runs[0] / "a"
    committed = tmp_path / "committed"
    committed.mkdir()
    for f in ("records.csv", "histories.csv", "provenance.json"):
        shutil.copy(a / f, committed / f)
    prov = json.loads((committed / "provenance.json").read_text())["cells"]["baseline-A-1111"]
    assert prov["config"] == yaml.safe_load((a / "runs" / "baseline-A-1111" / "config.yaml").read_text())
    new, old = reproduce.rerun_cell(committed, "baseline", "A", 1111, out_dir=tmp_path / "rerun")
    assert len(old) == len(new) > 0
    assert reproduce.compare_records(new, old) == []
    stems = [s for s, _, _ in R.standard_tables(committed)]
    assert "selection_gap" in stems  # from histories.csv


def test_records_tables_from_a_grid(grid_runs):
    tables = R.standard_tables(grid_runs[0] / "a")
    stems = [s for s, _, _ in tables]
    assert stems[0] == "paper" and "rates" in stems and "selection_gap" in stems
    paper = tables[0][2]
    assert paper.index.tolist() == [("baseline", "A"), ("oracle", "A"), ("oracle", "B")] and "MAE" in paper.columns
    assert "oracle_gap" in stems
