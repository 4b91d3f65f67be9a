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
        assert -0.95 < m["spearman_w_vs_text_drop"] < -0.85, v  # w ranks the samples by their true text damage
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


# ------------------------------------------------------------------ chapters 3-5: ProMMA's modules over three seeds
def _mean(entry, *path):
    for p in path:
        entry = entry[p]
    return entry["mean"]


def test_the_promma_entries_have_three_seeds(mech):
    for v in VARIANTS:
        for key in ("mme", "mpd", "dpw", "mpdc", "ablation"):
            assert mech[v][key]["seeds"] == [1111, 1112, 1113], (v, key)
        assert set(mech[v]["promma_provenance"]["measured_at_commit"]) == {"1111", "1112", "1113"}


def test_what_chapter_3_says_of_the_evaluator_holds(mech):
    red, comp = mech["redundant"]["mme"], mech["complementary"]["mme"]
    auc = red["auc_vs_truth"]["values"]
    assert auc[0] > 0.7 and max(auc[1:]) < 0.3  # "0.74 for seed 1111, 0.28 and 0.25 for the other two"
    assert 0.4 < _mean(red, "pseudo_label_auc_vs_truth") < 0.55  # "at chance against the truth"
    for m in (red, comp):
        assert _mean(m, "decision_minority_share_mean") < 0.05  # "all stand-ins through or none"
    # "which modalities it opens changes with the seed: vision for 1111, text for 1112"
    used = [{(c["present"], c["missing"]): c["stand-in used"] for c in s["cells"]} for s in red["per_seed"][:2]]
    assert used[0][("{l,a}", "vision")] > 0.9 and used[0][("{a,v}", "text")] < 0.1
    assert used[1][("{l,a}", "vision")] < 0.1 and used[1][("{a,v}", "text")] > 0.9
    pol = {p: _mean(red, "metrics", p, "MAE over eta") for p in ("evaluator", "always", "never")}
    assert pol["always"] - pol["evaluator"] > 0.008 and abs(pol["evaluator"] - pol["never"]) < 0.002
    pol = [_mean(comp, "metrics", p, "MAE over eta") for p in ("evaluator", "always", "never")]
    assert max(pol) - min(pol) < 0.003  # "within 0.003"
    assert _mean(comp, "truly_useful_share") < 0.01 < _mean(red, "truly_useful_share")


def test_what_chapter_4_says_of_the_private_prompts_holds(mech):
    for v in VARIANTS:
        r = mech[v]["mpd"]["ratio_own_to_present"]
        assert r["text"]["mean"] < 1 and r["audio"]["mean"] < 1, v
        assert 0.8 < r["vision"]["mean"] < 1.4 and r["vision"]["std"] > 0.3, v  # "near 1, spread about ±0.5"
        changes = [x for s in mech[v]["mpd"]["per_seed"] for part in ("own_missing", "present") for x in s[part].values()]
        assert 1e-5 < min(changes) and max(changes) < 1.3e-3, v  # "between 2e-5 and 1.2e-3"
        rows = mech[v]["ablation"]["rows"]
        gap = _mean(rows, "without MPD", "MAE over eta") - _mean(rows, "ProMMA", "MAE over eta")
        assert 0 < gap < rows["ProMMA"]["MAE over eta"]["std"], v  # "higher, less than the spread between seeds"


def test_what_chapter_5_says_of_the_ablation_dpw_and_mpdc_holds(mech):
    pairs_below_mplmm = 0
    for v in VARIANTS:
        rows = mech[v]["ablation"]["rows"]
        mae = {n: r["MAE over eta"] for n, r in rows.items()}
        best = min(mae, key=lambda n: mae[n]["mean"])
        assert best == "ProMMA", (v, best)  # the lowest mean MAE of the seven rows
        others = [mae[n]["mean"] - mae["ProMMA"]["mean"] for n in mae if n != "ProMMA"]
        assert max(others) < mae["ProMMA"]["std"], v  # "every gap is smaller than ProMMA's own spread"
        pairs_below_mplmm += sum(p < m for p, m in zip(mae["ProMMA"]["values"], mae["MPLMM-style"]["values"]))
        dpw = mech[v]["dpw"]
        assert dpw["weight_drop_missing_source"]["mean"] < 0.05, v  # the 0.05: not met
        assert abs(dpw["spearman_weight_vs_source_content_mean"]["mean"]) < 0.05, v
        drops = [c["drop"] for s in dpw["per_seed"] for c in s["cells"]]
        assert max(drops) > 0.1 and -0.06 < min(drops) < 0, v  # "up to 0.16", "down to -0.05"
        mpdc = mech[v]["mpdc"]
        assert mpdc["levels"] == 2 and 0.03 < mpdc["gate_abs_max"]["mean"] < 0.1, v
        for s in mpdc["per_seed"]:  # gates at 0 change the MAE over the incomplete modes by at most 0.003
            assert abs(s["MAE modes gates zeroed"] - s["MAE modes trained gates"]) <= 0.003, v
    assert pairs_below_mplmm == 5  # "in 5 of the 6 (seed, variant) pairs"
    red, comp = mech["redundant"]["dpw"], mech["complementary"]["dpw"]
    assert red["weight_drop_missing_source"]["mean"] > comp["weight_drop_missing_source"]["mean"]


# ------------------------------------------------------------------ the committed ablations and the chapters' check
def test_the_lnln_ablation_row_of_the_full_model_is_the_grids_lnln_cell(mech):
    """lnln_ablation's "LNLN" row is each seed's lnln cell of the committed grid (protocol A), averaged over the ten
    rates; book.reference_check compares a chapter's run the same way, and says False when one number differs."""
    from types import SimpleNamespace

    from mmsa_core import book, results as R
    from mmsa_core.data import synth

    for v in VARIANTS:
        rec = R.load_records(REFERENCE_GRIDS[v] / "records.csv")
        for s in (1111, 1112, 1113):
            cell = rec[(rec.model == "lnln") & (rec.train_protocol == "A") & (rec.seed == s)]
            run = SimpleNamespace(records=cell, data=SimpleNamespace(name=synth.dataset_name("small", v)),
                                  config=SimpleNamespace(model="lnln", train=SimpleNamespace(seed=s)))
            tab, same = book.reference_check(run)
            assert same, (v, s, tab)
            assert mech[v]["lnln_ablation"]["per_seed"][str(s)]["LNLN"]["MAE"] == M.over_rates(cell)["MAE"]
        changed = cell.assign(value=cell.value + (cell.metric == "MAE") * 1e-9)
        assert not book.reference_check(SimpleNamespace(records=changed, data=run.data, config=run.config))[1]
    with pytest.raises(ValueError, match="seeds"):
        book.reference_check(SimpleNamespace(records=cell, data=run.data,
                                             config=SimpleNamespace(model="lnln", train=SimpleNamespace(seed=7))))


def test_ablation_reference_reads_both_layouts():
    from mmsa_core import book

    p = book.ablation_reference()
    assert list(p.index) == ["ProMMA", "without MME", "without MPD", "without DPW", "without MPDC",
                             "without generation loss", "MPLMM-style"]
    doc = book.mechanisms("redundant")["ablation"]["rows"]["ProMMA"]["MAE over eta"]
    assert p.loc["ProMMA", ("redundant (3 seeds)", "MAE over eta")] == f"{doc['mean']:.3f} ± {doc['std']:.3f}"
    q = book.ablation_reference("lnln_ablation", metrics=("MAE", "Acc-2 non-0"))
    assert list(q.index) == ["LNLN", "without DMC", "without reconstructor", "ALMT-like (all off)"]
    e = book.mechanisms("complementary")["lnln_ablation"]
    want = f"{100 * e['mean']['without DMC.Acc-2 non-0']:.1f} ± {100 * e['std']['without DMC.Acc-2 non-0']:.1f}"
    assert q.loc["without DMC", ("complementary (3 seeds)", "Acc-2 non-0")] == want


def test_what_chapter_7_says_of_the_lnln_ablation_holds(mech):
    mae = {v: {r: (mech[v]["lnln_ablation"]["mean"][f"{r}.MAE"], mech[v]["lnln_ablation"]["std"][f"{r}.MAE"])
               for r in ("LNLN", *M.LNLN_ABLATION_ROWS)} for v in VARIANTS}
    seeds = {v: {r: [mech[v]["lnln_ablation"]["per_seed"][s][r]["MAE"] for s in ("1111", "1112", "1113")]
                 for r in ("LNLN", *M.LNLN_ABLATION_ROWS)} for v in VARIANTS}
    gap = lambda v, r: mae[v][r][0] - mae[v]["LNLN"][0]  # noqa: E731
    assert round(gap("redundant", "ALMT-like (all off)"), 3) == 0.014 and round(gap("complementary", "ALMT-like (all off)"), 3) == 0.022
    assert round(gap("redundant", "without DMC"), 3) == 0.006 and round(gap("complementary", "without DMC"), 3) == 0.027
    wins = lambda v, r: sum(a < b for a, b in zip(seeds[v]["LNLN"], seeds[v][r]))  # noqa: E731
    assert wins("redundant", "ALMT-like (all off)") == 2 and wins("complementary", "ALMT-like (all off)") == 2
    assert wins("redundant", "without DMC") == 3 and wins("complementary", "without DMC") == 2
    rec = seeds["redundant"]["without reconstructor"]
    full = seeds["redundant"]["LNLN"]
    assert round(full[0] - rec[0], 3) == 0.056 and all(0.01 < rec[k] - full[k] < 0.014 for k in (1, 2))
    assert gap("redundant", "without reconstructor") < 0 < gap("complementary", "without reconstructor")
    for v in VARIANTS:  # the smallest spread between seeds of the four rows
        assert min(mae[v], key=lambda r: mae[v][r][1]) == "without reconstructor", v
        assert max(abs(g) for g in (gap(v, r) for r in M.LNLN_ABLATION_ROWS)) < 0.03, v
