"""The embedded testbed has the structure its knobs claim, independently of any model (issue: a testbed with
ground truth). Each check reads the data or the truth the generator writes beside it, and the oracle."""

from __future__ import annotations

import numpy as np
import pytest

from mmsa_core import missing, oracle
from mmsa_core.data import synth
from mmsa_core.data.mmsa import load_mmsa

SMALL = synth.SHAPES["small"]


@pytest.fixture(scope="session")
def complementary_path(mmsa_cache_dir):
    p = mmsa_cache_dir / synth.default_path("small", 0, "complementary").name
    if not p.exists():
        synth.generate(p, "small", 0, "complementary")
    return p


@pytest.fixture(scope="session")
def variants(synth_path, complementary_path):
    return {"redundant": synth_path, "complementary": complementary_path}


def _oracle_mae(path, protocol="B", mode=None, rate=None):
    ds = load_mmsa(path)
    meta, truth = synth.truth(path)
    test = ds["test"].data
    plan = missing.draw(protocol, test, rate, 0, 0, "test", mode=mode)
    pred = oracle.Oracle(truth["test"], meta)(missing.apply(test, plan, ds.spec.unk_id)).pred.numpy()
    return float(np.abs(pred - test.labels.numpy()).mean())


@pytest.mark.parametrize("variant", ["redundant", "complementary"])
def test_the_oracle_beats_every_single_modality_and_language_dominates(variants, variant):
    mae = {missing.MODE_NAMES[m]: _oracle_mae(variants[variant], mode=m) for m in range(7)}
    full, l, a, v = mae["{l,a,v}"], mae["{l}"], mae["{a}"], mae["{v}"]
    assert full < min(l, a, v) - 0.05, mae  # fusion beats the best single modality by a margin
    assert l < a < v, mae  # language dominant, then voice, then face
    # dropping text or audio costs; vision, the weakest, adds little (on 400 test samples its gain can be within noise)
    assert mae["{a,v}"] > full + 0.1 and mae["{l,v}"] > full, mae
    assert mae["{l,a}"] > full - 0.01, mae
    # and corruption costs more the more is dropped (protocol A)
    rates = [_oracle_mae(variants[variant], "A", rate=r) for r in (0.0, 0.5, 0.9)]
    assert rates[0] == pytest.approx(full) and rates[0] < rates[1] < rates[2], rates


def test_missing_modalities_are_predictable_in_the_redundant_variant_only(variants):
    """A linear regressor fitted on train predicts the audio content from what text and vision show (the oracle's
    reading of them) far better in the redundant variant than in the complementary one."""

    def r2(path):
        ds = load_mmsa(path)
        meta, truth = synth.truth(path)

        def xy(split):
            obs, var = oracle.statistics(ds[split].data, truth[split], meta)
            seen = np.isfinite(var)
            X = np.c_[np.where(seen[:, [0, 2]], obs[:, [0, 2]], 0.0), seen[:, [0]], np.ones(len(obs))]
            return X, truth[split]["content_audio"]

        X, y = xy("train")
        w = np.linalg.lstsq(X, y, rcond=None)[0]
        Xt, yt = xy("test")
        return 1 - np.mean((Xt @ w - yt) ** 2) / np.var(yt)

    red, comp = r2(variants["redundant"]), r2(variants["complementary"])
    assert red > 0.3 and red > comp + 0.25, (red, comp)
    # the truth says the same, per sample: predictability is high where redundancy is
    _, t_red = synth.truth(variants["redundant"])
    _, t_comp = synth.truth(variants["complementary"])
    for m in ("audio", "vision"):
        assert t_red["test"][f"predictability_{m}"].mean() > t_comp["test"][f"predictability_{m}"].mean() + 0.3


def test_per_sample_usefulness_varies_within_the_redundant_variant(synth_path):
    _, truth = synth.truth(synth_path)
    for m in ("audio", "vision"):
        p = truth["test"][f"predictability_{m}"]
        assert p.std() > 0.1
        assert 0.2 < truth["test"][f"useful_{m}"].mean() < 0.8  # an evaluator has something to decide


def test_the_congruence_cue_shows_each_samples_redundancy(synth_path):
    """The cue direction of the vision frames tracks the sample's redundancy; with the knob at 0 it does not."""
    meta, truth = synth.truth(synth_path)

    def cue_corr(d, rho, seed=0):
        w = synth._direction(SMALL.vision_dim, seed, "vision", 1)
        m = np.arange(SMALL.vision_len)[None] < d["vision_lengths"][:, None]
        proj = (np.einsum("btd,d->bt", d["vision"], w) * m).sum(1) / m.sum(1)
        return np.corrcoef(proj, rho)[0, 1]

    on, t_on = synth.make_split(SMALL, 300, 0, "test", "redundant", with_truth=True)
    off, t_off = synth.make_split(SMALL, 300, 0, "test", synth.with_knobs("redundant", congruence_cue=0.0), with_truth=True)
    assert cue_corr(on, t_on["redundancy_vision"]) > 0.5
    assert abs(cue_corr(off, t_off["redundancy_vision"])) < 0.15


def test_knobs_move_what_they_claim():
    n = 300
    base, tb = synth.make_split(SMALL, n, 0, "test", "redundant", with_truth=True)
    # more redundancy -> more predictable modalities (same latents: the draws depend on (seed, split) only)
    _, hi = synth.make_split(SMALL, n, 0, "test", synth.with_knobs("redundant", redundancy_a=20.0, redundancy_b=1.0),
                             with_truth=True)
    assert hi["predictability_audio"].mean() > tb["predictability_audio"].mean() + 0.05
    assert (hi["shared"] == tb["shared"]).all()
    # language weight: the label follows the text content more closely when text weighs more
    _, lang = synth.make_split(SMALL, n, 0, "test", synth.with_knobs("redundant", weights=(1.0, 0.1, 0.1)), with_truth=True)
    corr = lambda t: np.corrcoef(t["label_clean"], t["content_text"])[0, 1]  # noqa: E731
    assert corr(lang) > corr(tb) + 0.02
    # audio noise: the oracle's audio statistic is noisier
    noisy, tn = synth.make_split(SMALL, n, 0, "test", synth.with_knobs("redundant", audio_noise=5.0), with_truth=True)
    assert (tn["obs_var_complete"][:, 1] > tb["obs_var_complete"][:, 1]).all()


def test_the_oracles_statistics_are_calibrated(synth_path):
    """What the oracle reads from a modality is its content plus noise of exactly the variance it assumes."""
    ds = load_mmsa(synth_path)
    meta, truth = synth.truth(synth_path)
    test = ds["test"].data
    for rate in (0.0, 0.6):
        b = missing.apply(test, missing.draw("A", test, rate, 0, 0, "test"), ds.spec.unk_id)
        obs, var = oracle.statistics(b, truth["test"], meta)
        for j, m in enumerate(synth.MODALITIES):
            ok = np.isfinite(var[:, j])
            z = (obs[ok, j] - truth["test"][f"content_{m}"][ok]) / np.sqrt(var[ok, j])
            assert 0.7 < z.var() < 1.4, (m, rate, z.var())  # text is a Gaussian approximation of the lexicon's grid


def test_oracle_records_form_a_model_row(synth_path):
    df = oracle.records(synth_path, "synth-small-redundant")
    assert set(df["model"]) == {oracle.ORACLE} and set(df["train_protocol"]) == {"A", "B"}
    a = df[(df.train_protocol == "A") & (df.protocol == "A") & (df.metric == "MAE")].set_index("level")["value"]
    assert a.loc[0.0] < a.loc[0.5] < a.loc[0.9]


def test_truth_is_written_beside_the_data_and_read_without_pickle(tmp_path):
    p = synth.generate(tmp_path / "s.pkl", "small", 3, "complementary")
    assert synth.truth_path(p).is_file()
    meta, truth = synth.truth(p)
    assert meta["variant"] == "complementary" and meta["version"] == synth.VERSION
    assert set(truth) == {"train", "valid", "test"} and len(truth["valid"]["shared"]) == SMALL.n_valid
    with pytest.raises(FileNotFoundError, match="no ground truth"):
        synth.truth(tmp_path / "other.pkl")
