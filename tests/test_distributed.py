"""torchrun with 2 CPU processes (gloo): replicas stay in sync and match a 1-process run of the same global batch."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from conftest import cli_env

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
