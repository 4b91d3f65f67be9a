"""mechanisms.json (one per committed grid, written by ``python -m mmsa_core mechanisms``): its form, and the
statements that chapters 6 and 7 make from it. A new file that broke a statement would fail here, and the prose
would be rewritten."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmsa_core import mechanisms as M
from mmsa_core.book import REFERENCE_GRIDS

VARIANTS = sorted(REFERENCE_GRIDS)


@pytest.fixture(scope="module")
def mech() -> dict:
    return {v: M.read(REFERENCE_GRIDS[v] / "mechanisms.json") for v in VARIANTS}


def test_every_key_is_there_with_its_seeds_and_variant(mech):
    for v, doc in mech.items():
        assert doc["variant"] == v
        for key in M.KEYS:
            assert key in doc, (v, key)
            assert doc[key]["seeds"] and doc[key]["variant"] == v, (v, key)
        for key in ("lnln_dmc", "lnln_reconstructor"):
            assert doc[key]["seeds"] == [1111, 1112, 1113]
        # the named numbers
        assert "weight_drop_missing_source" in doc["dpw"] and "levels" in doc["mpdc"] and "gate_abs_max" in doc["mpdc"]
        assert "auc_vs_truth" in doc["mme"] and "generation_loss" in doc["ablation"]


def test_chapter_6_completeness_and_proxy(mech):
    for v in VARIANTS:
        m = mech[v]["lnln_dmc"]["mean"]
        assert m["spearman_w_vs_text_drop"] < -0.7, v  # w ranks the samples by their true text damage
        assert m["w_at_r0.0"] > 0.95 and m["w_at_r0.9"] > 0.4, v  # ... but is compressed at heavy damage
        assert m["h_d_to_c_l_at_r0.7"] < 0.5 * m["h_l_to_c_l_at_r0.7"], v  # the correction moves h_l towards c_l
    red, comp = mech["redundant"]["lnln_dmc"]["mean"], mech["complementary"]["lnln_dmc"]["mean"]
    assert red["proxy_text_sentiment_r2"] > 0.5 * red["recoverable_text_sentiment_r2"] > 0.1  # most of what is there
    assert red["proxy_text_sentiment_r2"] > red["language_text_sentiment_r2"]
    assert comp["recoverable_text_sentiment_r2"] < 0.1 and comp["proxy_text_sentiment_r2"] < 0.05  # nothing to find


def test_chapter_7_reconstructor(mech):
    for v in VARIANTS:
        m = mech[v]["lnln_reconstructor"]["mean"]
        for mod in ("text", "audio", "vision"):
            assert m[f"{mod}.error"] < m[f"{mod}.error_as_is"], (v, mod)  # better than doing nothing
            assert abs(m[f"{mod}.spearman_error_vs_predictability"]) < 0.15, (v, mod)  # but blind to predictability
    assert mech["redundant"]["lnln_reconstructor"]["mean"]["text.error"] < \
        mech["complementary"]["lnln_reconstructor"]["mean"]["text.error"]


def test_entry_means_and_stds_are_the_per_seed_numbers():
    e = M.entry("redundant", {1111: {"a": 1.0, "b": {"c": 2.0}}, 1112: {"a": 3.0, "b": {"c": 4.0}}})
    assert e["mean"] == {"a": 2.0, "b.c": 3.0} and e["std"]["a"] == pytest.approx(np.std([1.0, 3.0], ddof=1))
    assert e["seeds"] == [1111, 1112]


def test_write_merges_keys_and_refuses_unknown_ones(tmp_path):
    p = tmp_path / "mechanisms.json"
    M.write(p, {"lnln_dmc": M.entry("redundant", {1: {"x": 1.0}})}, {"variant": "redundant"})
    M.write(p, {"mme": {"seeds": [1], "variant": "redundant", "auc_vs_truth": 0.5}})
    doc = json.loads(p.read_text())
    assert set(doc) >= {"lnln_dmc", "mme", "variant"}
    with pytest.raises(ValueError, match="unknown key"):
        M.write(p, {"nonsense": {}})
