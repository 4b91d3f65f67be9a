"""What ProMMA's modules do after training (mmsa_core/mechanisms_promma.py), on a short run of the embedded data.

Each mechanism claim of chapters 3-5 has a test here: a missing source lowers its DPW weight, the weights differ
between samples, the MPDC gates move away from 0 at two levels, the MME decisions differ between samples of one
missing mode, the private prompts change predictions, and the protocol-B summary equals the evaluation sweep. The
measurements against the testbed's ground truth are checked on a constructed truth (AUC) here; the numbers on the
testbed itself are in results/<set>/mechanisms.json.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmsa_core import mechanisms_promma as mp
from mmsa_core.evaluate import sweep

SHORT = {"pretrain_epochs": 4, "adapt_epochs": 4}


@pytest.fixture(scope="module")
def trained(synth_ds):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    models = mp.train_variants(synth_ds, 1111, ("ProMMA",), model_config=SHORT)
    torch.set_num_threads(threads)
    m = models["ProMMA"]
    return m, mp._per_mode(m, synth_ds)


def test_auc_known_values():
    assert mp.auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
    assert mp.auc([1, 1, 1, 1], [0, 1, 0, 1]) == 0.5  # ties count half
    assert mp.auc([0.2, 0.9], [1, 0]) == 0.0
    assert np.isnan(mp.auc([0.2, 0.9], [1, 1]))


@pytest.mark.slow
def test_summary_equals_the_sweep(synth_ds, trained):
    """Under protocol B a prediction depends on the sample's mode alone: the 7-pass summary equals the 17-pass sweep."""
    model, per = trained
    rec = sweep(model, synth_ds["test"].data, synth_ds.spec, "B", 0)
    want = np.mean([r["value"] for r in rec if r["setting"] == "rate" and r["metric"] == "MAE"])
    assert mp.ablation_row(model, synth_ds, per=per)["MAE over eta"] == pytest.approx(want, abs=1e-6)


@pytest.mark.slow
def test_dpw_a_missing_source_lowers_its_weight(synth_ds, trained):
    """Averaged over the cells where one of a target's two sources is missing, the weight of that source's stream
    is lower than with the source present (by at least 0.02 on this short run; the preset's own run: see the
    report in mechanisms.json), and the weights differ between samples."""
    model, per = trained
    out = mp.measure_dpw(model, synth_ds, per=per)
    assert out["weight_drop_missing_source"] > 0.02, out["cells"]
    assert out["weight_std_across_samples_complete"] > 0.005


@pytest.mark.slow
def test_mpdc_gates_move_at_every_level(synth_ds, trained):
    model, per = trained
    out = mp.measure_mpdc(model, synth_ds, per=per)
    assert out["levels"] >= 2
    assert out["gate_abs_max"] > 0.01, out["gates"]
    assert out["pred_change_gates_zeroed"] > 1e-3


@pytest.mark.slow
def test_mme_decisions_are_per_sample_and_scored_against_truth(synth_ds, trained):
    """The evaluator's scores differ between samples of one (mode, modality) cell; against a constructed truth that
    IS its own decision the AUC is 1, against its negation 0; and the three policies give finite metrics."""
    model, per = trained
    n = len(synth_ds["test"].data)
    s_text = per[1][1]["mme_score"][:, 0].numpy()  # text missing alone
    assert s_text.std() > 1e-3
    fake = {"test": {f"useful_{m}": np.zeros(n, bool) for m in ("text", "audio", "vision")}}
    fake["test"]["useful_text"] = s_text > np.median(s_text)
    out = mp.measure_mme(model, synth_ds, fake, per=per)
    assert out["auc_vs_truth_per_modality"]["text"] == pytest.approx(1.0)
    for policy in ("evaluator", "always", "never"):
        assert np.isfinite(out[f"metrics {policy}"]["MAE over eta"])
    assert out["metrics never"] != out["metrics always"]


@pytest.mark.slow
def test_mpd_private_prompts_change_predictions(synth_ds, trained):
    model, per = trained
    out = mp.measure_mpd(model, synth_ds, per=per)
    assert all(v > 0 for v in out["own_missing"].values()), out


def test_each_seed_is_kept_and_an_interrupted_measurement_resumes(synth_ds, tmp_path, monkeypatch):
    """promma_mechanisms(cache_dir=...) writes each seed's measurement as soon as it is done and reads it back on the
    next call (a measurement killed after seed 1 trains only the seeds after it); a file measured on other data or
    with another preset is refused by name, not reused."""
    calls = []

    def fake(ds, truth, seed, names, preset, threads):
        calls.append(seed)
        if len(calls) == 2 and seed == 1112:
            raise KeyboardInterrupt  # killed during the second seed
        return {"seed": seed, "dpw": {"weight_drop_missing_source": seed / 1e4}, "mpdc": {"levels": 2},
                "mme": {f"metrics {p}": {"MAE": 1.0} for p in ("evaluator", "always", "never")},
                "mpd": {"ratio_own_to_present": {m: 1.0 for m in ("text", "audio", "vision")}},
                "ablation": {"ProMMA": {"MAE over eta": 0.8}}}

    monkeypatch.setattr(mp, "measure_seed", fake)
    with pytest.raises(KeyboardInterrupt):
        mp.promma_mechanisms(synth_ds, None, (1111, 1112), "redundant", cache_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["promma-1111.json"]
    out = mp.promma_mechanisms(synth_ds, None, (1111, 1112), "redundant", cache_dir=tmp_path)
    assert calls == [1111, 1112, 1112]  # 1111 read from its file
    assert out["dpw"]["weight_drop_missing_source"]["values"] == [0.1111, 0.1112]
    assert set(mp.seed_commits(tmp_path, (1111, 1112))) == {1111, 1112}
    with pytest.raises(ValueError, match="preset"):
        mp.promma_mechanisms(synth_ds, None, (1111,), "redundant", preset="promma_mosi", cache_dir=tmp_path)


@pytest.mark.slow
def test_refitted_decoders_tell_a_present_source_from_a_missing_one(synth_ds, trained):
    """Chapter 5's diagnosis: fitted further on the trained model's own inputs, DPW's decoders claim much more
    information when the source is present than when it is missing (a larger score gap than the decoders the run
    left), and fit the present source better; the trained model keeps its own decoders."""
    model, _ = trained
    own = model.critic
    out = mp.refit_decoders(model, synth_ds, steps=400, lr=3e-3)
    assert model.critic is own
    assert out["refit_gap"] > max(0.1, 2 * out["in_run_gap"]), out
    better = [r["refit NLL present"] < r["in-run NLL present"] for r in out["streams"].values()]
    assert sum(better) >= 5, out["streams"]
    assert out["weight_drop_refit_decoders"] > mp.measure_dpw(model, synth_ds)["weight_drop_missing_source"]


def test_dpw_decoder_seeds_are_kept_and_combined(synth_ds, tmp_path, monkeypatch):
    """dpw_decoder_mechanisms keeps each seed in dpw-decoders-<seed>.json, reads it back, combines the seeds as
    mean/std/values, and refuses a file measured with another fast-decoder scale."""
    calls = []

    def fake(ds, truth, seed, preset, threads):
        calls.append(seed)
        row = {"MAE over eta": seed / 1e3}
        return {"seed": seed, "refit": {"in_run_gap": 0.1, "refit_gap": 0.5, "weight_drop_refit_decoders": 0.3},
                "ProMMA": row, mp.FAST_DECODERS: {**row, "weight_drop_missing_source": 0.2}}

    monkeypatch.setattr(mp, "measure_dpw_decoders", fake)
    out = mp.dpw_decoder_mechanisms(synth_ds, None, (1111, 1112), "redundant", cache_dir=tmp_path)["dpw_decoders"]
    again = mp.dpw_decoder_mechanisms(synth_ds, None, (1111, 1112), "redundant", cache_dir=tmp_path)["dpw_decoders"]
    assert calls == [1111, 1112] and again == out
    assert out["rows"]["ProMMA"]["MAE over eta"]["values"] == [1.111, 1.112]
    assert out["rows"][mp.FAST_DECODERS]["weight_drop_missing_source"]["mean"] == 0.2
    assert set(mp.seed_commits(tmp_path, (1111, 1112), "dpw-decoders")) == {1111, 1112}
    monkeypatch.setattr(mp, "FAST_DECODER_SCALE", 30.0)
    with pytest.raises(ValueError, match="fast_decoder_scale"):
        mp.dpw_decoder_mechanisms(synth_ds, None, (1111,), "redundant", cache_dir=tmp_path)


def test_every_variant_starts_its_second_stage_from_the_first_stage(synth_ds, restore_torch_globals):
    """train_variants shares stage 1 between the rows: a row trained after ProMMA is the row trained alone (which
    is how experiment.run trains it), not a row that starts from ProMMA's adapted weights."""
    from dataclasses import replace

    ds = replace(synth_ds, splits={k: replace(v, data=v.data.take(torch.arange(48))) for k, v in synth_ds.splits.items()})
    tiny = {"pretrain_epochs": 1, "adapt_epochs": 2}
    after = mp.train_variants(ds, 1111, ("ProMMA", "without DPW"), model_config=tiny)["without DPW"]
    alone = mp.train_variants(ds, 1111, ("without DPW",), model_config=tiny)["without DPW"]
    for k, v in alone.state_dict().items():
        assert torch.equal(v, after.state_dict()[k]), k


@pytest.mark.slow
def test_standins_are_read_against_the_true_content(synth_ds, trained):
    """measure_standins: per modality the content R² of the real features, of the stand-ins and of a ridge from the
    present modalities, next to the truth's predictability; the real audio features carry content whatever the
    model (a full-rank projection of 5 channels), and the truth's predictability is the dataset's."""
    from mmsa_core.data import synth

    model, _ = trained
    _, truth = synth.truth(synth_ds.path)
    out = mp.measure_standins(model, synth_ds, truth)
    for m in ("text", "audio", "vision"):
        assert set(out[m]) == {"real", "stand-in", "stand-in own probe", "linear from present", "truth predictability"}
        assert all(np.isfinite(v) and v <= 1 for v in out[m].values()), out[m]
        assert out[m]["truth predictability"] == pytest.approx(float(np.mean(truth["test"][f"predictability_{m}"])))
    assert out["audio"]["real"] > 0.3
    assert out["content R2 gap"] == pytest.approx(np.mean([out[m]["linear from present"] - out[m]["stand-in own probe"]
                                                           for m in ("text", "audio", "vision")]))
