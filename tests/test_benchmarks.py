"""The benchmark scripts compute what they claim (same weights, same function, representative batches) and run end
to end on small data; no test reads a timing (speed figures come from the scripts, never from tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from conftest import REPO, cli_env
from mmsa_core import missing
from mmsa_core.data.mmsa import DataSpec

sys.path.insert(0, str(REPO / "benchmarks"))
import bench_lnln  # noqa: E402

SPEC = DataSpec(text_len=10, text_dim=16, audio_len=14, audio_dim=5, vision_len=12, vision_dim=7)


@pytest.fixture(scope="module")
def variants():
    return {v: bench_lnln.build(v, "tiny", SPEC).eval() for v in ("authors", "straightforward", "ours")}


def test_variants_share_weights_and_ours_computes_the_straightforward_function(variants):
    ref = variants["ours"].state_dict()
    for v, m in variants.items():
        sd = m.state_dict()
        assert sd.keys() == ref.keys() and all(torch.equal(sd[k], ref[k]) for k in ref), v
    batch = bench_lnln.mosi_batch(SPEC, 6, "cpu", seed=3)
    torch.manual_seed(0)
    with torch.no_grad():
        pred = {v: m(batch.with_(complete=None)).pred for v, m in variants.items()}
    torch.testing.assert_close(pred["ours"], pred["straightforward"], rtol=1e-5, atol=1e-5)
    assert (pred["ours"] - pred["authors"]).abs().max() > 1e-4  # the authors attend to the padding
    # training: the same losses from one batched pass as from two passes
    losses = {v: m.train()(batch).losses for v, m in variants.items() if v != "authors"}
    for k in losses["ours"]:
        torch.testing.assert_close(losses["ours"][k], losses["straightforward"][k], rtol=1e-5, atol=1e-5)


def test_the_authors_protocol_is_unmasked_and_two_pass(variants):
    m = variants["authors"]
    assert isinstance(m, bench_lnln.TwoPassLNLN) and not m.cfg.trim_padding and not m.cfg.share_unchanged
    attn = [x for x in m.modules() if isinstance(x, bench_lnln.Attention)]
    assert attn and all(type(x) is bench_lnln.UnmaskedEinsumAttention for x in attn)
    q = torch.randn(2, 4, 128)
    mask = torch.tensor([[True, True, False, False]] * 2)
    torch.testing.assert_close(attn[0](q, q, q, mask), attn[0](q, q, q, None))
    ours = variants["ours"]
    assert ours.cfg.trim_padding and ours.cfg.share_unchanged and type(ours) is bench_lnln.LNLN


def test_quick_mode_times_full_batches_spread_over_the_epochs_cost():
    batches = [torch.arange(i * 4, i * 4 + 4) for i in range(10)] + [torch.arange(40, 42)]
    cost = lambda i: -i  # noqa: E731 - batch 9 cheapest ... batch 0 dearest
    chosen = bench_lnln.pick(batches, 3, cost)
    assert chosen == [8, 4, 1]  # ranked cheap to dear, the middles of three equal strata; never the short batch
    assert bench_lnln.pick(batches, None, cost) == list(range(11))
    assert len(bench_lnln.pick(batches, 50, cost)) == 10


@pytest.mark.slow
def test_benchmark_runs_end_to_end_on_small_data(tmp_path, mmsa_cache_dir):
    out = tmp_path / "lnln.json"
    cmd = [sys.executable, str(REPO / "benchmarks" / "bench_lnln.py"), "--shape", "small", "--encoder", "tiny", "--quick",
           "--quick-batches", "2", "--batch", "8", "--eval-batch", "8", "--threads", "1", "--variants",
           "authors,ours", "--out", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=cli_env(mmsa_cache_dir), timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["benchmark"] == "lnln_step" and r["quick"] and r["variants"] == ["authors", "ours"]
    assert set(r["wall_s"]) == {"total", "authors", "ours"} and r["wall_s"]["total"] >= r["wall_s"]["authors"] + r["wall_s"]["ours"]
    for v in ("authors", "ours"):
        e = r[v]["epoch"]
        assert e["train"]["batches_timed"] == 2 and e["train"]["extrapolated"] and e["train"]["samples_timed"] == 16
        assert e["train"]["batches_per_epoch"] == 75 and e["eval"]["batches_per_epoch"] == 50
        assert e["train"]["epoch_s"] == pytest.approx(600 / e["train"]["samples_per_s"])
        assert r[v]["peak_memory_mb"] > 0
    for k in ("speedup_train_vs_authors", "speedup_eval_vs_authors", "memory_ratio_vs_authors", "eval_vs_train_per_sample"):
        assert r[k] > 0 and k in r["targets"]
    assert r["speedup_train_vs_straightforward"] is None  # not measured in this run: no number
    assert any("scaled_dot_product" in k for k in r["sdpa_backend"]["train"] + r["sdpa_backend"]["eval"])
    # the appendix's views read these figures back
    from mmsa_core.book import benchmarks as bench_tables

    ratios = bench_tables.lnln_ratios([("lnln.json", r)]).set_index("key")
    assert set(bench_tables.RATIOS) & set(ratios.index) >= set(r["targets"])
    for k in r["targets"]:
        assert ratios.loc[k, "measured"] == round(r[k], 3) and ratios.loc[k, "quick (extrapolated)"]
        ceiling = bench_tables.is_ceiling(k)
        assert ratios.loc[k, "met"] == (r[k] <= r["targets"][k] if ceiling else r[k] >= r["targets"][k])
    epochs = bench_tables.lnln_epochs([("lnln.json", r)])
    assert list(epochs.index.get_level_values("variant")) == ["authors", "ours"]
    assert epochs.loc[("lnln.json", "ours"), "batches timed"] == "2/75"
    assert bench_tables.lnln_ratios([("old.json", {"benchmark": "lnln_step"})]).empty  # a file without the authors
    # this run windows memory per epoch and names the process peak apart; a file without the windows is labelled so
    assert "epochs" in ratios.loc["memory_ratio_vs_authors", "ratio"]
    assert "whole process" in ratios.loc["memory_ratio_vs_authors_process", "ratio"]
    older = {k: v for k, v in r.items() if not k.endswith("_process")}
    assert "whole process" in bench_tables.lnln_ratios([("old.json", older)]).set_index("key").loc["memory_ratio_vs_authors", "ratio"]


@pytest.mark.slow
def test_gpu_check_dry_run_on_the_cpu(tmp_path, mmsa_cache_dir):
    """``benchmarks/gpu_check.py --device cpu --dry-run``: every section runs (tiny sizes) and the JSON says so."""
    out = tmp_path / "gpu.json"
    cmd = [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--dry-run", "--out", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=cli_env(mmsa_cache_dir), timeout=1200)
    assert res.returncode == 0, res.stderr[-3000:]
    r = json.loads(out.read_text())
    s = r["sections"]
    assert r["benchmark"] == "gpu_check" and r["dry_run"]
    assert {k: v["ok"] for k, v in s.items()} == {k: True for k in ("amp", "text_encoder", "steps", "ddp", "lnln_mosi")}, \
        {k: v.get("error") for k, v in s.items()}
    from mmsa_core.models import model_names

    assert set(s["amp"]) - {"ok", "section_s"} == set(model_names())
    for m in model_names():  # bf16 rounding: close to fp32, not equal
        assert 0 < s["amp"][m]["max_abs_diff"] < 0.1, (m, s["amp"][m])
    assert s["text_encoder"]["flops_per_pass"] > 0 and s["text_encoder"]["fraction_of_peak"] is None  # no CPU peak
    assert "error" not in s["steps"]["lnln"] and "error" not in s["steps"]["promma"], s["steps"]
    assert s["ddp"]["skipped"].startswith("0 CUDA device")
    t = s["lnln_mosi"]
    assert t["epochs_timed"] == 1 and t["projected_200_epochs_h"] == pytest.approx(200 * t["seconds_per_epoch"] / 3600)


def test_gpu_peak_table():
    import gpu_check

    assert gpu_check.peak_tflops("NVIDIA H200") == 989.4 and gpu_check.peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert gpu_check.peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0 and gpu_check.peak_tflops("Quadro K600") is None
