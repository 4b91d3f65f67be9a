"""The command line: help, synth, train under both protocols, evaluate and sweep on best.pt, clear errors."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
import yaml

from conftest import make_mmsa_splits, run_cli
from mmsa_core.__main__ import main
from mmsa_core.data.mmsa import DataError, load_mmsa, write_mmsa
from mmsa_core.experiment import load_checkpoint

SMALL_MODEL = ["--set", "model_config.dim=16", "--set", "model_config.dim_head=8", "--set", "train.threads=1"]
METRICS = {"Acc-2 has-0", "F1 has-0", "Acc-2 non-0", "F1 non-0", "Acc-7", "Acc-5", "MAE", "Corr"}


@pytest.fixture(autouse=True)
def _one_thread():
    """evaluate / sweep have no thread setting: on 2 shared cores one thread is several times faster."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _main(capsys, *args) -> tuple[int, str, str]:
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def runs(tmp_path_factory, mmsa_cache_dir):
    """Two one-epoch runs on the embedded default: protocol A from flags, protocol B from a YAML file whose
    values the flags and --set override."""
    root = tmp_path_factory.mktemp("cli")
    cfg = root / "run.yaml"
    cfg.write_text(yaml.safe_dump({"model": "baseline", "train": {"epochs": 3, "protocol": "A", "lr": "1e-4"},
                                   "model_config": {"dim": 32, "dim_head": 8}}))
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("MMSA_CACHE", str(mmsa_cache_dir))
            assert main(["train", "-p", "A", "--epochs", "1", "--quiet", "--out", str(root / "A"), *SMALL_MODEL]) == 0
            assert main(["train", "--config", str(cfg), "-p", "B", "--quiet", "--out", str(root / "B"),
                         "--set", "train.epochs=1", *SMALL_MODEL]) == 0
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(det)
    return {"A": root / "A", "B": root / "B"}


def test_help_exits_zero():
    r = run_cli(["--help"], "/nonexistent")
    assert r.returncode == 0 and r.stderr == ""
    for cmd in ("synth", "train", "evaluate", "sweep"):
        assert cmd in r.stdout


@pytest.mark.parametrize("cmd", ["synth", "train", "evaluate", "sweep"])
def test_subcommand_help_exits_zero(cmd, capsys):
    with pytest.raises(SystemExit) as ei:
        main([cmd, "--help"])
    assert ei.value.code == 0
    assert f"usage: python -m mmsa_core {cmd}" in capsys.readouterr().out


def test_synth_writes_a_loadable_file(tmp_path, capsys):
    path = tmp_path / "out" / "synth.pkl"
    rc, out, _ = _main(capsys, "synth", "--out", path, "--seed", "3")
    assert rc == 0 and str(path) in out
    ds = load_mmsa(path)
    assert (ds.spec.text_len, ds.spec.audio_len, ds.spec.vision_dim) == (24, 32, 20)
    assert [len(ds[s]) for s in ("train", "valid", "test")] == [600, 200, 400]


def test_synth_mosi_shape(tmp_path, capsys, monkeypatch):
    # the real --shape mosi writes 2199 samples (~450 MB, seconds): same shapes, 2 samples per split here
    from dataclasses import replace

    from mmsa_core.data import synth

    monkeypatch.setitem(synth.SHAPES, "mosi", replace(synth.SHAPES["mosi"], n_train=2, n_valid=2, n_test=2))
    rc, _, _ = _main(capsys, "synth", "--shape", "mosi", "--out", tmp_path / "mosi.pkl")
    spec = load_mmsa(tmp_path / "mosi.pkl").spec
    assert rc == 0 and (spec.text_len, spec.text_dim, spec.audio_len, spec.audio_dim, spec.vision_len,
                        spec.vision_dim) == (50, 384, 375, 5, 500, 20)


@pytest.mark.parametrize("proto", ["A", "B"])
def test_train_writes_results_history_provenance(runs, proto, synth_path):
    out = runs[proto]
    df = pd.read_csv(out / "results.csv")
    assert {"model", "dataset", "train_protocol", "seed", "protocol", "setting", "level", "mode", "metric", "value",
            "selected_epoch", "commit", "config_hash", "device"} <= set(df.columns)
    assert (df.train_protocol == proto).all() and (df.model == "baseline").all() and (df.dataset == "synth-small-redundant").all()
    assert set(df.protocol) == {"A", "B"}  # every model is tested under both protocols
    for p in ("A", "B"):
        rates = df[(df.protocol == p) & (df.setting == "rate")]
        assert sorted(set(rates.level.round(1))) == [round(0.1 * i, 1) for i in range(10)]
        assert set(rates.metric) == METRICS and len(rates) == 10 * len(METRICS)
    modes = df[df.setting == "mode"]
    assert (modes.protocol == "B").all() and modes["mode"].nunique() == 7 and len(modes) == 7 * len(METRICS)
    assert df.value[df.metric == "MAE"].notna().all()
    hist = pd.read_csv(out / "history.csv")
    assert list(hist.epoch) == [0] and {"train_sentiment", "valid_MAE", "lr"} <= set(hist.columns)
    prov = json.loads((out / "provenance.json").read_text())
    assert {"commit", "config_hash", "dataset_fingerprint", "device", "torch"} <= set(prov)
    assert prov["torch"] == torch.__version__ and prov["device"].startswith("cpu")
    assert prov["dataset_fingerprint"] == load_mmsa(synth_path).fingerprint
    assert prov["config_hash"] == df.config_hash.iloc[0] and prov["commit"] == str(df.commit.iloc[0])
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["train"]["protocol"] == proto and cfg["train"]["epochs"] == 1 and cfg["model_config"]["dim"] == 16


def test_yaml_config_with_overrides(runs):
    a = yaml.safe_load((runs["A"] / "config.yaml").read_text())
    b = yaml.safe_load((runs["B"] / "config.yaml").read_text())
    # from the YAML file: lr (written "1e-4", which YAML reads as a string: it must still be a number)
    assert b["train"]["lr"] == pytest.approx(1e-4) and isinstance(b["train"]["lr"], float)
    assert a["train"]["lr"] == pytest.approx(1e-3)  # the default
    # overridden: protocol A -> B by -p, epochs 3 -> 1 by --set, dim 32 -> 16 by --set; dim_head kept
    assert (b["train"]["protocol"], b["train"]["epochs"], b["model_config"]) == ("B", 1, {"dim": 16, "dim_head": 8})


def test_evaluate_on_best_checkpoint(runs, capsys):
    best = runs["A"] / "best.pt"
    rc, out, err = _main(capsys, "evaluate", "--checkpoint", best, "--level", "0.0")
    assert rc == 0, err
    printed = {line[:12].strip(): float(line[12:]) for line in out.strip().splitlines()}
    assert set(printed) == METRICS
    # the same checkpoint and eval seed as the test sweep of the run: the same numbers
    df = pd.read_csv(runs["A"] / "results.csv")
    row = df[(df.protocol == "A") & (df.setting == "rate") & (df.level == 0.0)].set_index("metric").value
    for k, v in printed.items():
        assert v == pytest.approx(row[k], abs=6e-5), k
    rc, out, err = _main(capsys, "evaluate", "--checkpoint", best, "-p", "B", "--mode", "4")
    assert rc == 0 and "MAE" in out, err


def test_sweep_on_best_checkpoint(runs, tmp_path, capsys):
    csv = tmp_path / "sweep" / "b.csv"
    rc, out, err = _main(capsys, "sweep", "--checkpoint", runs["B"] / "best.pt", "-p", "B", "--out", csv)
    assert rc == 0, err
    sw = pd.read_csv(csv)
    assert len(sw) == (10 + 7) * len(METRICS)
    df = pd.read_csv(runs["B"] / "results.csv")
    ref = df[df.protocol == "B"].reset_index(drop=True)
    assert list(sw.metric) == list(ref.metric) and (sw.value - ref.value).abs().max() < 1e-12
    assert "0.9" in out and "MAE" in out  # the printed table of rates


def test_checkpoint_on_other_data_is_a_clear_error(runs, tmp_path, capsys):
    other = write_mmsa(tmp_path / "other.pkl", make_mmsa_splits())
    rc, out, err = _main(capsys, "evaluate", "--checkpoint", runs["A"] / "best.pt", "--data", other)
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert "model and data do not match" in err and "text_len: model expects 24, data has 5" in err
    with pytest.raises(DataError, match="audio_dim: model expects 5, data has 3"):
        load_checkpoint(runs["A"] / "best.pt", load_mmsa(other).spec)
    model, ck = load_checkpoint(runs["A"] / "best.pt")  # without a spec: the saved one
    assert ck["model_name"] == "baseline" and not model.training
    rc, _, err = _main(capsys, "sweep", "--checkpoint", tmp_path / "none.pt")
    assert rc == 2 and "checkpoint not found" in err


def test_not_a_checkpoint_is_a_clear_error(tmp_path, capsys):
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    data = write_mmsa(tmp_path / "data.pkl", make_mmsa_splits())  # a data pickle passed as the checkpoint
    torch.save({"x": 1}, tmp_path / "full.pt")
    cut = tmp_path / "cut.pt"
    cut.write_bytes((tmp_path / "full.pt").read_bytes()[:100])
    for path, expected in ((text, "not a readable checkpoint"), (cut, "not a readable checkpoint"),
                           (data, "not a readable checkpoint"), (tmp_path / "full.pt", "not a best.pt written by mmsa_core")):
        rc, _, err = _main(capsys, "evaluate", "--checkpoint", path)
        assert rc == 2 and err.startswith("error: ") and expected in err and str(path) in err, err


def test_changed_config_in_the_same_out_dir(runs, capsys, restore_torch_globals):
    rc, _, err = _main(capsys, "train", "-p", "A", "--epochs", "1", "--quiet", "--out", runs["A"], *SMALL_MODEL,
                       "--set", "train.lr=0.01")
    assert rc == 2 and "config hash" in err and "--out" in err
    # the folder still describes its own run
    assert yaml.safe_load((runs["A"] / "config.yaml").read_text())["train"]["lr"] == pytest.approx(1e-3)


def test_bad_data_path_exits_nonzero_without_traceback(tmp_path):
    bad = tmp_path / "missing" / "unaligned_50.pkl"
    r = run_cli(["train", "--data", bad, "--epochs", "1", "--quiet", "--out", tmp_path / "run"], tmp_path)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr and r.stdout == ""
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(bad) in lines[0] and "not found" in lines[0]


@pytest.mark.parametrize("args,expected", [
    (["--set", "train.epoch=1"], ["unknown key(s) ['epoch']", "'epochs'"]),
    (["--set", "model_config.width=8"], ["unknown key(s) ['width']", "'dim'"]),
    (["--set", "train.epochs=abc"], ["train.epochs", "expected int", "'abc'"]),
    (["--set", "train.epochs"], ["expected KEY=VALUE"]),
    (["--model", "transformer-xl"], ["unknown model 'transformer-xl'", "baseline"]),
    (["--config", "missing.yaml"], ["missing.yaml", "config file not found"]),
    (["--config", "lnln_imdb"], ["no preset lnln_imdb.yaml", "lnln_default", "promma_mosi"]),
])
def test_bad_config_is_a_clear_error(args, expected, tmp_path, capsys, restore_torch_globals):
    rc, out, err = _main(capsys, "train", "--quiet", "--out", tmp_path / "run", *args)
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    for part in expected:
        assert part in err, (part, err)
    assert not (tmp_path / "run" / "last.pt").exists()


def test_diverging_training_is_a_clear_error(tmp_path, capsys, restore_torch_globals):
    data = write_mmsa(tmp_path / "tiny.pkl", make_mmsa_splits())
    rc, _, err = _main(capsys, "train", "--data", data, "--epochs", "3", "--quiet", "--out", tmp_path / "run",
                       "--set", "train.lr=1e30", "--set", "train.warmup_frac=0", *SMALL_MODEL)
    assert rc == 2 and err.startswith("error: ") and "loss is nan" in err and "lower the lr" in err


def test_unknown_key_in_yaml_file(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  epochs: 1\ntrian:\n  lr: 0.1\n")
    rc, _, err = _main(capsys, "train", "--config", cfg, "--out", tmp_path / "run")
    assert rc == 2 and "unknown key(s) ['trian']" in err and "'train'" in err


def test_config_by_preset_name_is_the_packaged_file(monkeypatch, tmp_path):
    """``--config lnln_default`` loads the preset that ships in mmsa_core/configs/ (a pip install has no checkout);
    a ./configs/ of the user's takes precedence."""
    import argparse

    from mmsa_core.__main__ import _common_run_args, _run_config
    from mmsa_core.config import PRESETS_DIR, load_config

    monkeypatch.chdir(tmp_path)
    p = argparse.ArgumentParser()
    _common_run_args(p)
    cfg = _run_config(p.parse_args(["--config", "lnln_default"]))
    assert cfg.model == "lnln" and cfg.model_config == load_config(PRESETS_DIR / "lnln_default.yaml").model_config
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "lnln_default.yaml").write_text("model: lnln\ntrain: {epochs: 3}\n")
    assert _run_config(p.parse_args(["--config", "lnln_default"])).train.epochs == 3
