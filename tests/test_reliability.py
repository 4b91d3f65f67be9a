"""Reliability and security (issue 16): each finding has a test here that failed before its fix, and a fuzz test
feeds randomly corrupted small pickles and configs through loading and one training step: every failure must be
one of the project's own errors (``mmsa_core.__main__.PROJECT_ERRORS``), never a raw exception."""

from __future__ import annotations

import io
import pickle
import random
import threading
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import make_mmsa_splits
from mmsa_core.__main__ import main
from mmsa_core.config import DataConfig, TrainConfig
from mmsa_core.data.mmsa import DataError, DataSpec, load_mmsa, write_mmsa

TINY = ["--set", "model_config.dim=8", "--set", "model_config.dim_head=4", "--set", "model_config.heads=2",
        "--set", "train.threads=1", "--set", "train.batch_size=4"]
CJK = "这部电影很好看但是结局太仓促了"


@pytest.fixture(autouse=True)
def _globals(restore_torch_globals):
    """main() seeds and sets torch's thread count and deterministic mode: undone after every test."""
    torch.set_num_threads(1)
    yield


def _main(capsys, *args):
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def _one_error_line(rc, err, *parts):
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    for p in parts:
        assert str(p) in err, (p, err)


def _sims_splits(unimodal=True, chinese=True, seed=0):
    d = make_mmsa_splits(seed=seed, label_scale=1.0)
    for s in d.values():
        n = len(s["regression_labels"])
        s["regression_labels"] = (np.round(s["regression_labels"] * 5) / 5).astype(np.float32)  # SIMS's grid
        if chinese:
            s["raw_text"] = np.array([CJK[: 4 + i % 8] for i in range(n)])
        if unimodal:
            for m in "TAV":
                s[f"regression_labels_{m}"] = s["regression_labels"].copy()
    return d


# ----------------------------------------------------------------- 1. the dataset family comes from the data

def test_sims_under_any_path_gets_sims_range_and_metrics(tmp_path):
    path = write_mmsa(tmp_path / "CH" / "Processed" / "unaligned_39.pkl", _sims_splits())  # no "sims" in the path
    ds = load_mmsa(path)
    assert (ds.spec.family, ds.spec.language, ds.spec.label_min, ds.spec.label_max) == ("sims", "zh", -1.0, 1.0)
    assert "unimodal label keys" in ds.family_source and "Chinese raw_text" in ds.family_source


def test_cmu_data_under_a_folder_named_sims(tmp_path, caplog):
    path = write_mmsa(tmp_path / "mysims_project" / "unaligned_50.pkl", make_mmsa_splits())
    ds = load_mmsa(path)  # refused before: the path's "sims" set the range to [-1, 1]
    assert (ds.spec.family, ds.spec.language, ds.spec.label_max) == ("mosi", "en", 3.0)
    assert any("the path names sims" in r.getMessage() for r in caplog.records)  # the guess is checked and reported
    # an explicit label range changes the range check only, never the metrics (was: SIMS metrics clipped to [-1, 1])
    assert load_mmsa(path, label_range=(-3.0, 3.0)).spec.language == "en"


def test_family_override_and_undecidable_data(tmp_path):
    d = _sims_splits(unimodal=False, chinese=False)
    for s in d.values():
        s.pop("raw_text")
    path = write_mmsa(tmp_path / "x.pkl", d)  # labels in [-1, 1], no text, no unimodal labels: cannot tell
    with pytest.raises(DataError, match="cannot tell from the data.*data.family"):
        load_mmsa(path)
    ds = load_mmsa(path, family="sims")
    assert (ds.spec.family, ds.spec.language, ds.family_source) == ("sims", "zh", "set by data.family")
    from mmsa_core.experiment import load_dataset

    assert load_dataset(DataConfig(dataset=str(path), family="mosei")).spec.family == "mosei"


def test_evaluate_uses_the_family_stored_in_the_checkpoint(tmp_path, capsys):
    from mmsa_core.models import build_model
    from mmsa_core.models.baseline import BaselineConfig
    from mmsa_core.utils import atomic_save

    # English text, labels in [-1, 1]: alone these data read as MOSI; the checkpoint was trained as SIMS
    d = make_mmsa_splits(label_scale=1.0)
    data = write_mmsa(tmp_path / "eval.pkl", d)
    spec = load_mmsa(data, family="sims").spec
    mcfg = BaselineConfig(dim=8, dim_head=4, heads=2)
    model = build_model("baseline", mcfg, spec)
    atomic_save({"model": model.state_dict(), "epoch": 0, "score": 0.0, "model_name": "baseline",
                 "model_config": asdict(mcfg), "data_spec": asdict(spec)}, tmp_path / "best.pt")
    rc, out, err = _main(capsys, "evaluate", "--checkpoint", tmp_path / "best.pt", "--data", data, "--device", "cpu")
    assert rc == 0, err
    names = {line[:12].strip() for line in out.strip().splitlines()}
    assert {"Acc-3", "Acc-5", "F1"} <= names and "Acc-7" not in names  # SIMS metrics
    assert "family sims" in err


# ------------------------------------------------------------------ 2. no file runs code when it is loaded

class _Payload:
    """Unpickling this runs ``open(marker, "w")``: it proves that the loader executed code from the file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_planted_cached_embedded_pickle_does_not_run(tmp_path, monkeypatch):
    from mmsa_core.data import synth
    from mmsa_core.experiment import load_dataset

    monkeypatch.setenv("MMSA_CACHE", str(tmp_path / "cache"))
    marker = tmp_path / "pwned"
    planted = synth.default_path("small", 0)
    planted.parent.mkdir(parents=True)
    planted.write_bytes(pickle.dumps({"train": _Payload(marker), "valid": {}, "test": {}}))
    synth.truth_path(planted).write_bytes(b"")  # planted beside it too: ensure() regenerates a pickle without its truth
    with pytest.raises(DataError, match=r"(builtins|io)\.open is not allowed") as ei:
        load_dataset(DataConfig())
    assert str(planted) in str(ei.value) and not marker.exists()


def test_checkpoints_never_run_code(tmp_path, synth_ds):
    from mmsa_core import train as trainer
    from mmsa_core.experiment import load_checkpoint
    from mmsa_core.utils import CheckpointError

    marker = tmp_path / "pwned"
    bad = tmp_path / "best.pt"
    torch.save({"model_name": "baseline", "model": _Payload(marker)}, bad)
    with pytest.raises(CheckpointError, match=r"refused (builtins|io)\.open") as ei:
        load_checkpoint(bad)
    assert str(bad) in str(ei.value) and not marker.exists()
    run = tmp_path / "run"  # a last.pt planted in a run folder, found on resume
    run.mkdir()
    torch.save({"config_hash": "h", "rng": _Payload(marker)}, run / "last.pt")
    with pytest.raises(CheckpointError, match="--restart"):
        trainer.fit(_tiny_model(synth_ds.spec), synth_ds, TrainConfig(epochs=1, progress=False), run, "h")
    assert not marker.exists()


def test_written_checkpoints_hold_only_tensors_and_plain_values(tmp_path):
    from mmsa_core import train as trainer

    ds = load_mmsa(write_mmsa(tmp_path / "d.pkl", make_mmsa_splits()))
    meta = {"model_name": "baseline", "data_spec": asdict(ds.spec)}
    trainer.fit(_tiny_model(ds.spec), ds, TrainConfig(epochs=1, batch_size=4, progress=False), tmp_path / "r", "h", meta)
    for name in ("last.pt", "best.pt"):
        torch.load(tmp_path / "r" / name, weights_only=True)  # raised before: NumPy's RNG state array
    st = trainer._rng_state()
    a = np.random.rand(3)
    trainer._set_rng_state(st)
    assert np.array_equal(np.random.rand(3), a)


def _tiny_model(spec):
    from mmsa_core.models import build_model
    from mmsa_core.models.baseline import BaselineConfig

    return build_model("baseline", BaselineConfig(dim=8, dim_head=4, heads=2), spec)


# --------------------------------------------------- 3 and 8. every config field is checked when it is loaded

@pytest.mark.parametrize("override,key", [
    ("train.batch_size=-4", "train.batch_size"),  # trained nothing and exited 0
    ("train.batch_size=0", "train.batch_size"),  # ZeroDivisionError
    ("train.eval_batch_size=0", "train.eval_batch_size"),  # failed after a whole epoch
    ("train.lr=-0.1", "train.lr"),
    ("train.lr=0", "train.lr"),
    ("train.epochs=0", "train.epochs"),
    ("train.warmup_frac=1.5", "train.warmup_frac"),
    ("train.protocol=C", "train.protocol"),
    ("train.select_level=2", "train.select_level"),
    ("train.device=gpu0", "train.device"),
    ("model_config.dim=0", "model_config (baseline).dim"),  # trained
    ("model_config.heads=0", "model_config (baseline).heads"),  # a torch message without the key
    ("model_config.dropout=1.5", "model_config (baseline).dropout"),
    ("model_config.text.tiny_heads=3", "model_config (baseline).text.tiny_hidden"),
    ("data.family=imdb", "data.family"),
    ("data.label_range=[1,-1]", "data.label_range"),
    ("data.synth_shape=huge", "data.synth_shape"),
])
def test_bad_config_value_is_refused_at_load_naming_the_key(override, key, tmp_path, capsys):
    rc, _, err = _main(capsys, "train", "--quiet", "--epochs", "1", "--out", tmp_path / "run", *TINY, "--set", override)
    _one_error_line(rc, err, key, "expected")
    assert not (tmp_path / "run" / "best.pt").exists() and not (tmp_path / "run" / "results.csv").exists()


def test_evaluate_mode_needs_protocol_b(tmp_path, capsys):
    rc, _, err = _main(capsys, "evaluate", "--checkpoint", tmp_path / "none.pt", "-p", "A", "--mode", "3")
    _one_error_line(rc, err, "--mode 3", "-p B")  # protocol A silently ignored the mode
    with pytest.raises(SystemExit):  # sweep has no --mode: argparse refuses it
        main(["sweep", "--checkpoint", "x.pt", "-p", "A", "--mode", "3"])


# ----------------------------------------------------------------- 4. token ids against the encoder's vocabulary

@pytest.mark.parametrize("bad_id,where", [(99999, "token id 99999"), (-5, "token ids in [0, 2**31)")])
def test_token_ids_outside_the_vocabulary_stop_before_training(bad_id, where, tmp_path, capsys):
    d = make_mmsa_splits()
    d["test"]["text_bert"][2, 0, 1] = bad_id  # the TEST split: found only in the final sweep before
    data = write_mmsa(tmp_path / "ids.pkl", d)
    rc, _, err = _main(capsys, "train", "--data", data, "--quiet", "--epochs", "1", "--out", tmp_path / "run", *TINY,
                       "--set", "model_config.text.kind=tiny", "--set", "model_config.text.tiny_hidden=8",
                       "--set", "model_config.text.tiny_layers=1", "--set", "model_config.text.tiny_heads=2")
    _one_error_line(rc, err, data, "'test'", "'text_bert'", where)
    assert not (tmp_path / "run" / "last.pt").exists()  # nothing trained


# ------------------------------------------------------------------------------- 5. one run per run folder

def test_second_run_into_a_locked_folder_stops(tmp_path, capsys):
    from filelock import FileLock

    out = tmp_path / "run"
    out.mkdir()
    other = FileLock(out / ".lock")  # another process's run holding the folder (its own lock object and fd)
    other.acquire()
    try:
        rc, _, err = _main(capsys, "train", "--quiet", "--epochs", "1", "--out", out, *TINY, "--seed", "2")
    finally:
        other.release()
    _one_error_line(rc, err, out, "another run is writing into this folder")
    assert not (out / "last.pt").exists() and not (out / "config.yaml").exists()


def test_atomic_save_uses_a_unique_temporary_name(tmp_path, monkeypatch):
    import os

    from mmsa_core import utils

    seen = []
    real = os.replace
    monkeypatch.setattr(utils.os, "replace", lambda a, b: (seen.append(Path(a).name), real(a, b)))
    for _ in range(2):
        utils.atomic_save({"x": torch.ones(2)}, tmp_path / "best.pt")
    assert len(set(seen)) == 2 and "best.pt.tmp" not in seen, seen
    monkeypatch.undo()
    errors = []

    def writer(k):
        try:
            for i in range(20):
                utils.atomic_save({"k": k, "i": i}, tmp_path / "last.pt")
        except Exception as e:  # noqa: BLE001 - ENOENT when two writers share a temporary file
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors and torch.load(tmp_path / "last.pt", weights_only=True)["i"] == 19
    assert not list(tmp_path.glob("*.tmp"))


# ------------------------------------------------------------------------------- 6. corrupt checkpoints

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A finished one-epoch run on a tiny pickle: data path, run folder."""
    root = tmp_path_factory.mktemp("tiny")
    data = write_mmsa(root / "d.pkl", make_mmsa_splits())
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        assert main(["train", "--data", str(data), "--quiet", "--epochs", "1", "--out", str(root / "run"), *TINY]) == 0
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(det)
    return data, root / "run"


def test_truncated_best_pt_is_one_clear_error(tiny_run, tmp_path, capsys):
    from mmsa_core.experiment import load_checkpoint
    from mmsa_core.utils import CheckpointError

    data, run = tiny_run
    full = (run / "best.pt").read_bytes()
    cut = tmp_path / "best.pt"
    for k in np.linspace(0, len(full) - 1, 40).astype(int):  # OSError, EOFError, RuntimeError... before
        cut.write_bytes(full[:k])
        with pytest.raises(CheckpointError) as ei:
            load_checkpoint(cut)
        assert str(cut) in str(ei.value)
    rc, _, err = _main(capsys, "evaluate", "--checkpoint", cut, "--data", data)
    _one_error_line(rc, err, cut, "not a readable checkpoint")


def test_corrupt_last_pt_offers_restart(tiny_run, tmp_path, capsys):
    import shutil

    data, run = tiny_run
    mine = tmp_path / "run"
    shutil.copytree(run, mine)
    for f in ("results.csv", "history.csv", "provenance.json", "best.pt"):
        (mine / f).unlink()
    last = mine / "last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    args = ["train", "--data", data, "--quiet", "--epochs", "1", "--out", mine, *TINY]
    rc, _, err = _main(capsys, *args)
    _one_error_line(rc, err, last, "--restart")
    assert not (mine / "results.csv").exists()  # never silently started over
    rc, out, err = _main(capsys, *args, "--restart")
    assert rc == 0, err
    assert (mine / "results.csv").read_bytes() == (run / "results.csv").read_bytes()  # the same run, from epoch 0


# ------------------------------------------------------------------------------------- 7. malformed YAML

def test_malformed_yaml_names_file_line_and_column(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("model: baseline\ntrain: [1,2\n")
    rc, _, err = _main(capsys, "train", "--config", cfg, "--out", tmp_path / "run")
    _one_error_line(rc, err, cfg, "malformed YAML", "line 3, column 1")
    rc, _, err = _main(capsys, "train", "--out", tmp_path / "run", "--set", "train.lr=[1,2")
    _one_error_line(rc, err, "train.lr=[1,2", "not valid YAML", "line 1")


# ---------------------------------------------------------------------- 9. presets derive their out_dir

def test_presets_put_each_seed_and_protocol_in_its_own_folder():
    import argparse

    from mmsa_core.__main__ import _common_run_args, _run_config
    from mmsa_core.config import PRESETS_DIR

    p = argparse.ArgumentParser()
    _common_run_args(p)
    for f in sorted(PRESETS_DIR.glob("*.yaml")):
        a = _run_config(p.parse_args(["--config", str(f), "--seed", "1", "-p", "A"]))
        b = _run_config(p.parse_args(["--config", str(f), "--seed", "2", "-p", "A"]))
        assert (a.train.out_dir, b.train.out_dir) == (f"runs/{a.model}-A-1", f"runs/{a.model}-A-2"), f.name


# ----------------------------------------------------------------------------------------------- fuzzing

def _junk(rng: random.Random, like=None):
    """A random wrong value: wrong types, shapes, dtypes, non-finite and out-of-range numbers."""
    a = np.asarray(like) if like is not None else np.zeros((2, 3))
    choices = [
        lambda: None, lambda: 7, lambda: -1.5, lambda: "x", lambda: [1, [2, 3]], lambda: {"a": 1},
        lambda: a[: max(0, len(a) - 1)], lambda: a.astype(str), lambda: a.astype(object),
        lambda: a.astype(np.complex64), lambda: a.astype(bool),
        lambda: np.full(a.shape, np.nan), lambda: np.full(a.shape, -np.inf), lambda: a * 1e6,
        lambda: np.swapaxes(a, 0, -1) if a.ndim > 1 else a[None], lambda: a.reshape(-1), lambda: a[..., None],
        lambda: np.zeros((0,) + a.shape[1:], a.dtype), lambda: -np.abs(a) - 3, lambda: a + 0.5,
        lambda: np.array(CJK), lambda: np.array([CJK] * len(a)),
    ]
    try:
        return rng.choice(choices)()
    except (TypeError, ValueError):  # e.g. strings cannot become complex numbers: then a plain wrong type
        return rng.choice([None, 7, "x"])


def _fuzz_splits(rng: random.Random) -> dict:
    d = make_mmsa_splits(seed=rng.randrange(1000), label_scale=rng.choice([1.0, 3.0]))
    for _ in range(rng.randint(1, 3)):
        split = rng.choice(list(d))
        op = rng.random()
        if op < 0.1:
            d[split] = _junk(rng)
        elif op < 0.2:
            d.pop(split)
        elif isinstance(d.get(split), dict):
            s = d[split]
            key = rng.choice(sorted(s) + ["regression_labels_T", "text_bert"])
            if op < 0.3:
                s.pop(key, None)
            elif op < 0.45 and key == "text_bert" or op < 0.45 and key in s:
                arr = np.array(s[key]) if key in s else np.zeros(3)
                if arr.dtype.kind in "fiu" and arr.size:
                    flat = arr.reshape(-1).astype(np.float64)
                    flat[rng.randrange(flat.size)] = rng.choice([-5, 99999, 2.5, 2**40, -0.0, 1e30])
                    arr = flat.reshape(arr.shape)
                s[key] = arr
            else:
                s[key] = _junk(rng, s.get(key))
    return d


def _corrupt_bytes(rng: random.Random, b: bytes) -> bytes:
    b = bytearray(b)
    op = rng.random()
    if op < 0.4:
        return bytes(b[: rng.randrange(len(b))])
    for _ in range(rng.randint(1, 8)):
        i = rng.randrange(len(b))
        if op < 0.8:
            b[i] = rng.randrange(256)
        else:
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
    return bytes(b)


def _one_step(model, ds, seed=0):
    """One optimiser step on a batch of the training split, corrupted by protocol A, as the trainer takes it."""
    from mmsa_core import missing
    from mmsa_core.experiment import check_token_ids

    check_token_ids(model, ds)
    train = ds["train"].data
    idx = torch.arange(min(4, len(train)))
    plan = missing.draw("A", train, None, seed, 0, "train")
    batch = missing.apply(train.take(idx), plan.take(idx), ds.spec.unk_id)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss = sum(model(batch).losses.values())
    opt.zero_grad()
    loss.backward()
    opt.step()


BASE_CONFIG = {"model": "baseline", "data": {"dataset": "synth"},
               "train": {"epochs": 1, "batch_size": 4, "lr": 1e-3, "protocol": "A"},
               "model_config": {"dim": 8, "dim_head": 4, "heads": 2, "depth": 1, "text": {"kind": "features"}}}


def _fuzz_config(rng: random.Random) -> str:
    d = yaml.safe_load(yaml.safe_dump(BASE_CONFIG))
    for _ in range(rng.randint(1, 3)):
        section = rng.choice(["model", "data", "train", "model_config", "extra"])
        if section in ("model", "extra"):
            d[section] = rng.choice(["lnln", "promma", "nope", 3, None, ["baseline"], {"x": 1}])
            continue
        node = d.setdefault(section, {})
        if not isinstance(node, dict) or rng.random() < 0.1:
            d[section] = rng.choice([None, 5, "x", [1, 2]])
            continue
        keys = {"data": ["dataset", "family", "label_range", "synth_shape", "name", "synth_seed"],
                "train": list(asdict(TrainConfig())),
                "model_config": ["dim", "heads", "dim_head", "depth", "dropout", "text", "width"]}[section]
        key = rng.choice(keys)
        node[key] = rng.choice([-3, -1, 0, 1, 2, 3, 0.5, 1.5, -0.1, 1e-9, float("nan"), float("inf"), True, "B",
                                "mosi", "sims", "cpu", "1e-3", "", None, [1], [-1, 1], [1, -1], {"kind": "tiny"},
                                {"kind": "nope"}, {"tiny_heads": 3}])
    text = yaml.safe_dump(d)
    if rng.random() < 0.25:  # broken YAML text
        i = rng.randrange(len(text))
        text = text[:i] + rng.choice(["[", "{", ": :", "\t", "'", "&a *b", "\n  - "]) + text[i:]
    return text


def test_fuzz_corrupted_pickles_and_configs_fail_only_with_project_errors(tmp_path, synth_ds):
    """Several hundred corrupted small pickles (structure and bytes) and configs (values and YAML text) through
    loading + one training step: each either works or raises one of PROJECT_ERRORS naming the problem."""
    from mmsa_core.__main__ import PROJECT_ERRORS
    from mmsa_core.config import load_config
    from mmsa_core.experiment import model_config
    from mmsa_core.models import build_model

    rng = random.Random(16)
    torch.manual_seed(0)
    good = pickle.dumps(make_mmsa_splits(), protocol=4)
    outcomes = {"ok": 0, "error": 0}
    failures = []
    path = tmp_path / "f.pkl"
    for case in range(300):
        kind = "pickle-bytes" if case % 3 == 0 else "pickle-structure" if case % 3 == 1 else "config"
        try:
            if kind == "config":
                cfg_file = tmp_path / "c.yaml"
                cfg_file.write_text(_fuzz_config(rng))
                cfg = load_config(cfg_file)
                ds = synth_ds
                model = build_model(cfg.model, model_config(cfg), ds.spec)
            else:
                if kind == "pickle-bytes":
                    path.write_bytes(_corrupt_bytes(rng, good))
                else:
                    write_mmsa(path, _fuzz_splits(rng))
                ds = load_mmsa(path, family=rng.choice([None, None, "sims", "mosi"]))
                model = _tiny_model(ds.spec)
            _one_step(model, ds, case)
            outcomes["ok"] += 1
        except PROJECT_ERRORS as e:
            outcomes["error"] += 1
            assert str(e).strip(), (kind, case)
        except Exception as e:  # noqa: BLE001 - collected: the test's point
            failures.append(f"case {case} ({kind}): {type(e).__name__}: {str(e)[:200]}")
    print("fuzz outcomes:", outcomes)
    assert not failures, "\n".join(failures[:20])
    assert outcomes["ok"] >= 20 and outcomes["error"] >= 100, outcomes  # the fuzzing reaches both outcomes
