"""torchrun with 2 CPU processes (gloo): replicas stay in sync and match a 1-process run of the same global batch;
every model through the real fit() (ProMMA under A and B, LNLN with a BERT that has a pooler, a last global batch
smaller than the world size), and a resume that gives each rank its own RNG state back."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

import ddp_workers
from conftest import cli_env, make_mmsa_splits

ARGS = ["--model", "baseline", "--epochs", "2", "--quiet", "--set", "train.batch_size=64", "--set", "train.threads=1",
        "--set", "model_config.dropout=0.0", "--set", "train.deterministic=false"]


def _train(cmd_prefix, out, env):
    proc = subprocess.run([*cmd_prefix, "-m", "mmsa_core", "train", *ARGS, "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return pd.read_csv(out / "history.csv"), pd.read_csv(out / "results.csv")


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tmp_path, mmsa_cache_dir):
    env = cli_env(mmsa_cache_dir)
    one_hist, one_res = _train([sys.executable], tmp_path / "one", env)
    two_hist, two_res = _train([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                                "--master_port=29517"], tmp_path / "two", env)
    assert two_hist["ranks_in_sync"].astype(bool).all()  # DDP kept both replicas identical after every epoch
    assert "ranks_in_sync" not in one_hist
    # same global batch and order: the same optimisation up to floating-point summation order
    pd.testing.assert_series_equal(one_hist["train_sentiment"], two_hist["train_sentiment"], rtol=1e-4, check_names=False)
    key = ["protocol", "setting", "level", "mode", "metric"]
    merged = one_res.merge(two_res, on=key, suffixes=("_1", "_2"))
    assert len(merged) == len(one_res) > 0
    mae = merged[(merged.metric == "MAE")]
    assert (mae.value_1 - mae.value_2).abs().max() < 1e-3


# ---------------------------------------------------------------- every model through the real fit(), 2 gloo ranks



# 9 training samples in batches of 4: the last global batch has 1 sample, fewer than the 2 ranks (an empty shard)
TINY = dict(n=(9, 6, 6), Lt=6, Dt=8, La=6, Da=3, Lv=5, Dv=2, seed=3)
NO_DROPOUT = {"promma": {"dropout": 0.0, "embed_dropout": 0.0, "out_dropout": 0.0},
              "mplmm": {"dropout": 0.0, "embed_dropout": 0.0, "out_dropout": 0.0}, "baseline": {"dropout": 0.0}}
# name -> (model, train protocol, model_config); LNLN reads a small BERT saved WITH a pooler (the pooler never
# reaches a loss). The runs whose losses are per-sample means must match one process on the same global batches.
RUNS = {
    "baseline-B": ("baseline", "B", NO_DROPOUT["baseline"]),
    "lnln-bert-A": ("lnln", "A", "bert"),
    "almt-A": ("almt", "A", {}),
    "promma-A": ("promma", "A", {}),
    "promma-B": ("promma", "B", {}),
    "mplmm-B": ("mplmm", "B", NO_DROPOUT["mplmm"]),
}
DECOMPOSABLE = ("baseline-B", "lnln-bert-A", "almt-A", "mplmm-B")  # ProMMA's InfoNCE and MME losses are batch-level
RESUME = "baseline-dropout"  # dropout on and uneven shards (5 = 3 + 2): the ranks' RNG streams differ


def _run_dict(name, model, protocol, mcfg, data, out, **train) -> dict:
    t = {"epochs": 2, "batch_size": 4, "eval_batch_size": 4, "threads": 1, "progress": False, "protocol": protocol,
         "out_dir": str(out / name), **train}
    return {"model": model, "data": {"dataset": str(data), "name": "tiny"}, "train": t, "model_config": mcfg}


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory):
    """Every model trained by 2 gloo processes through experiment.run -> fit (one process group), plus the
    resume run; returns (folder, run dicts, data path)."""
    from transformers import BertConfig, BertModel

    from mmsa_core.data.mmsa import write_mmsa

    root = tmp_path_factory.mktemp("ddp")
    data = write_mmsa(root / "tiny.pkl", make_mmsa_splits(**TINY))
    bert = root / "bert"
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=2048, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=16, hidden_dropout_prob=0.0,
                         attention_probs_dropout_prob=0.0), add_pooling_layer=True).save_pretrained(bert)
    bert_cfg = {"text": {"kind": "pretrained", "name_or_path": str(bert)}}
    runs = {n: _run_dict(n, m, p, bert_cfg if c == "bert" else c, data, root / "two") for n, (m, p, c) in RUNS.items()}
    runs[RESUME] = _run_dict(RESUME, "baseline", "A", {"dropout": 0.1}, data, root / "two", epochs=3, batch_size=5)
    ddp_workers.spawn(ddp_workers.run_configs, 2, str(data), list(runs.values()), err_dir=root / "err")
    return root, runs, data


@pytest.mark.slow
@pytest.mark.parametrize("name", list(RUNS))
def test_every_model_trains_under_ddp(ddp_runs, name, restore_torch_globals):
    """ProMMA under A (no modality ever missing: the evaluator gets no gradient) and B, LNLN with a BERT that has
    a pooler, and a last global batch smaller than the world size: each run finishes, the replicas stay equal, and
    where every loss is a per-sample mean the 2-process run is the 1-process run (same global batches)."""
    from mmsa_core import experiment
    from mmsa_core.config import RunConfig, from_dict

    root, runs, _ = ddp_runs
    two = root / "two" / name
    hist, res = pd.read_csv(two / "history.csv"), pd.read_csv(two / "results.csv")
    assert hist["ranks_in_sync"].astype(bool).all()
    assert len(res) > 0 and res.value.notna().all()
    assert hist.train_sentiment.notna().all() and np.isfinite(hist.filter(like="train_").to_numpy(float)).sum() > 0
    assert not np.isinf(hist.filter(like="train_").to_numpy(float)).any()
    if name not in DECOMPOSABLE:
        return
    one_cfg = dict(runs[name], train={**runs[name]["train"], "out_dir": str(root / "one" / name)})
    experiment.run(from_dict(RunConfig, one_cfg))
    one_res = pd.read_csv(root / "one" / name / "results.csv")
    one_hist = pd.read_csv(root / "one" / name / "history.csv")
    for col in [c for c in one_hist if c.startswith("train_")]:
        pd.testing.assert_series_equal(one_hist[col], hist[col], rtol=1e-4, check_names=False)
    key = ["protocol", "setting", "level", "mode", "metric"]
    merged = one_res.merge(res, on=key, suffixes=("_1", "_2"))
    assert len(merged) == len(one_res) > 0
    mae = merged[merged.metric == "MAE"]
    assert (mae.value_1 - mae.value_2).abs().max() < 1e-3


@pytest.mark.slow
def test_ddp_resume_restores_every_ranks_rng(ddp_runs, tmp_path):
    """Killed after epoch 1 and resumed, a 2-process run with dropout and uneven shards continues exactly as the
    uninterrupted one: each rank gets its own RNG state back (rank 0's alone would change rank 1's dropout)."""
    root, runs, data = ddp_runs
    cfg = dict(runs[RESUME], train={**runs[RESUME]["train"], "out_dir": str(tmp_path / "resumed")})
    ddp_workers.spawn(ddp_workers.run_interrupted, 2, str(data), cfg, err_dir=tmp_path / "err")
    ck = torch.load(tmp_path / "resumed" / "last.pt", map_location="cpu", weights_only=False)
    assert len(ck["rng_ranks"]) == 2 and not torch.equal(ck["rng_ranks"][0]["torch"], ck["rng_ranks"][1]["torch"])
    full = pd.read_csv(root / "two" / RESUME / "history.csv")
    resumed = pd.read_csv(tmp_path / "resumed" / "history.csv")
    assert full.train_sentiment.tolist() == resumed.train_sentiment.tolist()
    a, b = pd.read_csv(root / "two" / RESUME / "results.csv"), pd.read_csv(tmp_path / "resumed" / "results.csv")
    assert a.value.tolist() == b.value.tolist()
