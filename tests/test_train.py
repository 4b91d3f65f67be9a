"""The trainer: learning, checkpoints, resume (also after SIGKILL, bit for bit), config changes; text loading."""

from __future__ import annotations

import math
import pickle
import signal
import subprocess
import sys
import time
from dataclasses import asdict

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import REPO, cli_env
from mmsa_core import train as trainer
from mmsa_core.config import TrainConfig
from mmsa_core.data import synth
from mmsa_core.data.mmsa import write_mmsa
from mmsa_core.evaluate import evaluate
from mmsa_core.models import build_model
from mmsa_core.models.baseline import BaselineConfig
from mmsa_core.utils import set_seed

EPOCHS = 2


def _fit(ds, out, config_hash="hash-1", epochs=EPOCHS, seed=1111):
    set_seed(seed, True, 1)
    model = build_model("baseline", BaselineConfig(), ds.spec)
    cfg = TrainConfig(epochs=epochs, progress=False, threads=1, out_dir=str(out), seed=seed)
    meta = {"model_name": "baseline", "model_config": asdict(BaselineConfig()), "data_spec": asdict(ds.spec)}
    return model, cfg, trainer.fit(model, ds, cfg, out, config_hash, meta)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, synth_ds):
    """The baseline trained for two epochs on the embedded default (training protocol A)."""
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    out = tmp_path_factory.mktemp("fit")
    try:
        model, cfg, res = _fit(synth_ds, out)
        yield model, cfg, res, out
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(det)


def test_training_learns(fitted, synth_ds):
    model, cfg, res, out = fitted
    h = res.history
    assert [r["epoch"] for r in h] == list(range(EPOCHS))
    assert h[-1]["train_sentiment"] < 0.95 * h[0]["train_sentiment"], h
    assert all(math.isfinite(r["valid_MAE"]) for r in h)
    assert res.best_epoch in range(EPOCHS) and res.best_score == min(r["valid_MAE"] for r in h)
    # on complete test data it beats every constant predictor: the train mean, and even the test median
    # (the constant with the lowest possible test MAE)
    test = synth_ds["test"].data
    m = evaluate(model, test, synth_ds.spec, None, None, 0, "test")
    y, y_train = test.labels.numpy(), synth_ds["train"].data.labels.numpy()
    assert m["MAE"] < np.abs(y - y_train.mean()).mean() - 0.05
    assert m["MAE"] < np.abs(y - np.median(y)).mean() - 0.05
    assert m["Corr"] > 0.3
    # the returned model holds the selected (best) epoch's weights
    best = torch.load(out / "best.pt", weights_only=False)
    assert best["epoch"] == res.best_epoch
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in best["model"].items())


def test_checkpoints_hold_everything_needed_to_resume(fitted, synth_ds):
    model, cfg, res, out = fitted
    ck = torch.load(out / "last.pt", weights_only=False)
    assert {"model", "optimizer", "scheduler", "scaler", "rng", "epoch", "best_score", "best_epoch", "history",
            "config_hash"} <= set(ck)
    assert ck["epoch"] == EPOCHS - 1 and ck["config_hash"] == "hash-1" and len(ck["history"]) == EPOCHS
    assert ck["model"].keys() == model.state_dict().keys()
    n_params = sum(1 for p in model.parameters() if p.requires_grad)
    state = ck["optimizer"]["state"]
    assert len(state) == n_params and all({"exp_avg", "exp_avg_sq", "step"} <= set(s) for s in state.values())
    n_batches = math.ceil(len(synth_ds["train"]) / cfg.batch_size)
    assert ck["scheduler"]["last_epoch"] == EPOCHS * n_batches
    assert {"torch", "numpy", "python"} <= set(ck["rng"]) and ck["rng"]["torch"].dtype == torch.uint8
    best = torch.load(out / "best.pt", weights_only=False)
    assert {"model", "epoch", "score", "model_name", "model_config", "data_spec"} <= set(best)


def test_rng_state_round_trip():
    st = trainer._rng_state()
    a = (torch.rand(3), np.random.rand(), __import__("random").random())
    trainer._set_rng_state(st)
    b = (torch.rand(3), np.random.rand(), __import__("random").random())
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]


def test_finished_run_resumes_without_training(fitted, synth_ds, restore_torch_globals):
    model, cfg, res, out = fitted
    before = (out / "last.pt").stat().st_mtime_ns
    model2, _, res2 = _fit(synth_ds, out, seed=1111)
    assert res2.resumed_from == EPOCHS and res2.history == res.history and res2.best_epoch == res.best_epoch
    assert (out / "last.pt").stat().st_mtime_ns == before  # nothing was trained or rewritten
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in model2.state_dict().items())


def test_changed_config_in_the_same_out_dir_is_a_clear_error(fitted, synth_ds, restore_torch_globals):
    *_, out = fitted
    with pytest.raises(RuntimeError) as ei:
        _fit(synth_ds, out, config_hash="hash-2")
    msg = str(ei.value)
    assert "hash-1" in msg and "hash-2" in msg and "--out" in msg and str(out / "last.pt") in msg


def test_zero_epochs_is_an_error(tmp_path, synth_ds, restore_torch_globals):
    with pytest.raises(RuntimeError, match="no epoch was trained"):
        _fit(synth_ds, tmp_path, epochs=0)


# ------------------------------------------------------------------------------- resume after SIGKILL

def _train_cmd(data, out, epochs):
    return [sys.executable, "-m", "mmsa_core", "train", "--data", str(data), "--epochs", str(epochs), "--quiet",
            "--out", str(out), "--seed", "7", "--set", "train.threads=1", "--set", "train.batch_size=32", "--set", "train.lr=3e-3",
            "--set", "model_config.dim=16", "--set", "model_config.dim_head=8"]


def _last_epoch(path) -> int:
    try:
        return int(torch.load(path, weights_only=False)["epoch"])
    except (FileNotFoundError, EOFError, RuntimeError, pickle.UnpicklingError):
        return -1


def test_resume_after_sigkill_reproduces_the_uninterrupted_run(tmp_path, mmsa_cache_dir):
    # a small file in the MMSA format from the embedded generator: epochs take a fraction of a second
    data = write_mmsa(tmp_path / "small.pkl", {s: synth.make_split(synth.SHAPES["small"], n, 0, s)
                                               for s, n in (("train", 256), ("valid", 128), ("test", 96))})
    env, epochs = cli_env(mmsa_cache_dir), 5
    full, killed = tmp_path / "full", tmp_path / "killed"
    r = subprocess.run(_train_cmd(data, full, epochs), cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr

    proc = subprocess.Popen(_train_cmd(data, killed, epochs), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    seen, deadline = -1, time.monotonic() + 240
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            seen = _last_epoch(killed / "last.pt")
            if seen >= 1:  # two epochs finished and saved: kill it in the middle of the run
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.02)
    finally:
        if proc.poll() is None and seen < 1:
            proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"the run ended ({proc.returncode}) before it could be killed"
    assert 1 <= _last_epoch(killed / "last.pt") < epochs - 1 and not (killed / "results.csv").exists()

    r = subprocess.run(_train_cmd(data, killed, epochs), cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "resuming" in r.stderr
    # bit for bit: the same records, the same history, the same selected weights
    assert (killed / "results.csv").read_bytes() == (full / "results.csv").read_bytes()
    assert (killed / "history.csv").read_bytes() == (full / "history.csv").read_bytes()
    a, b = (torch.load(d / "best.pt", weights_only=False) for d in (full, killed))
    assert a["epoch"] == b["epoch"] and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    # (this setting improves every epoch: the selected checkpoint, hence results.csv, comes from the resumed epochs)
    assert a["epoch"] > 1
    prov = pd.read_json(killed / "provenance.json", typ="series")
    assert prov["resumed_from"] is not None and int(prov["resumed_from"]) >= 2


# --------------------------------------------------------------------------- pretrained text encoders

def test_pretrained_text_encoder_from_a_saved_folder(tmp_path):
    """A tiny random BERT saved with save_pretrained loads through the same path as real BERT (no network)."""
    from transformers import BertConfig, BertModel

    from mmsa_core.models.text import TextEncoder, TextEncoderConfig, load_pretrained

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=200, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                     max_position_embeddings=64)
    ref = BertModel(cfg, add_pooling_layer=False).eval()
    ref.save_pretrained(tmp_path / "bert")
    loaded = load_pretrained(str(tmp_path / "bert"))
    assert loaded.config.hidden_size == 32
    enc = TextEncoder(TextEncoderConfig(kind="pretrained", name_or_path=str(tmp_path / "bert"), finetune=False), 8).eval()
    assert enc.out_dim == 32 and not any(p.requires_grad for p in enc.parameters())
    ids = torch.tensor([[101 % 200, 5, 7, 102 % 200, 0], [101 % 200, 9, 102 % 200, 0, 0]])
    mask = (ids != 0).long()
    out = enc(ids, mask, torch.zeros_like(ids), torch.zeros(2, 5, 8))
    assert out.shape == (2, 5, 32) and torch.isfinite(out).all()
    with torch.no_grad():
        expected = ref(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids)).last_hidden_state
    # the saved weights, not a fresh initialisation; a frozen encoder's states are zero at padding (as the features)
    assert torch.allclose(out, expected * mask[..., None], atol=1e-5) and not out[1, 3:].any()
    # fine-tuning: gradients reach the encoder
    enc_ft = TextEncoder(TextEncoderConfig(kind="pretrained", name_or_path=str(tmp_path / "bert")), 8)
    enc_ft(ids, mask, torch.zeros_like(ids), torch.zeros(2, 5, 8)).sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in enc_ft.parameters())


def test_pretrained_text_encoder_missing_folder_is_a_clear_error(tmp_path):
    from mmsa_core.models.text import load_pretrained

    with pytest.raises(RuntimeError, match="cannot load text encoder") as ei:
        load_pretrained(str(tmp_path / "no-such-model"))
    assert "no-such-model" in str(ei.value)


# ---------------------------------------------------------------------------------------------- length grouping


def test_group_by_length_keeps_every_sample_and_groups_lengths(synth_ds):
    """A seeded permutation of the epoch's order whose batches span narrower text lengths than random batches;
    the short last batch stays last, so the trainer's slicing is unchanged."""
    data = synth_ds["train"].data
    n, bs = len(data), 64
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    grouped = trainer.group_by_length(order, data, bs, torch.Generator().manual_seed(1))
    again = trainer.group_by_length(order, data, bs, torch.Generator().manual_seed(1))
    other = trainer.group_by_length(order, data, bs, torch.Generator().manual_seed(2))
    assert torch.equal(grouped, again) and not torch.equal(grouped, other)
    assert sorted(grouped.tolist()) == list(range(n))
    lengths = data.text_mask.sum(1)

    def mean_span(o):
        return float(np.mean([float(lengths[b].max() - lengths[b].min()) for b in o.split(bs)]))

    assert mean_span(grouped) < 0.5 * mean_span(order)
    last = n - (n // bs) * bs
    assert last and set(grouped[-last:].tolist()) == set(  # the sorted chunk's last `last` samples
        order[torch.sort(lengths[order] * 1000 + data.audio_mask.sum(1)[order] + data.vision_mask.sum(1)[order],
                         stable=True).indices][-last:].tolist())


def test_group_by_length_trains_and_leaves_existing_hashes(tmp_path, synth_ds, restore_torch_globals):
    """Off by default and absent from the config hash when off (a run configured before the switch existed keeps
    its hash); on, a run trains on the grouped batches and the hash says so."""
    import dataclasses

    from mmsa_core.config import RunConfig, config_hash

    before = dataclasses.make_dataclass("TrainConfig", [(f.name, f.type, dataclasses.field(default=f.default))
                                                        for f in dataclasses.fields(TrainConfig) if f.name != "group_by_length"])
    assert not TrainConfig().group_by_length
    assert config_hash(RunConfig(train=before())) == config_hash(RunConfig())
    on = RunConfig(train=TrainConfig(group_by_length=True))
    assert config_hash(on) != config_hash(RunConfig())
    set_seed(1111, True, 1)
    model = build_model("baseline", BaselineConfig(), synth_ds.spec)
    cfg = TrainConfig(epochs=1, progress=False, threads=1, out_dir=str(tmp_path), group_by_length=True)
    res = trainer.fit(model, synth_ds, cfg, tmp_path, "hash-g", {})
    assert math.isfinite(res.history[0]["train_sentiment"])
