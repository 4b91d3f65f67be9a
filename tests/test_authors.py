"""The authors' practices: each switch (TrainConfig / model config field) does what the fact it reproduces says."""

from __future__ import annotations

import math
from dataclasses import asdict, replace

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import REPO
from mmsa_core import metrics, missing, practices
from mmsa_core import train as trainer
from mmsa_core.config import RunConfig, TrainConfig, config_hash, from_dict, load_config
from mmsa_core.models import build_model
from mmsa_core.models.baseline import BaselineConfig
from mmsa_core.models.lnln import LNLNAuthorsConfig, LNLNConfig
from mmsa_core.models.mplmm import MPLMMAuthorsConfig, causal_mask
from mmsa_core.reproduce import grid
from mmsa_core.utils import set_seed

SMALL_LNLN = dict(dim=16, heads=2, dim_head=8, mlp_dim=16, n_tokens=2, hyper_dim_head=8, disc_hidden=8, cc_hidden=8)
SMALL_MPLMM = dict(dim=8, heads=2, layers=1, prompt_len=2)


# ------------------------------------------------------------------------------------------- corruption
def test_frozen_training_corruption_is_the_same_every_epoch(synth_ds):
    train = synth_ds["train"].data
    frozen = [missing.draw("A", train, None, 1111, e, "train", frozen=True) for e in (0, 5)]
    fresh = [missing.draw("A", train, None, 1111, e, "train") for e in (0, 5)]
    for k in ("text_keep", "audio_keep", "vision_keep"):
        assert torch.equal(getattr(frozen[0], k), getattr(frozen[1], k)), k
        assert not torch.equal(getattr(fresh[0], k), getattr(fresh[1], k)), k
    # exactly floor(N / 2) samples per modality drawn at rate 0 (random.sample), so at least that many drop nothing
    n = len(train)
    zero = (frozen[0].rates == 0).sum(0)
    assert (zero >= n // 2).all() and (zero < n).all()


def test_trainer_uses_the_frozen_draw(synth_ds, tmp_path, monkeypatch, restore_torch_globals):
    seen = []
    real = missing.draw

    def spy(protocol, data, level, seed, epoch, split, mode=None, nested=False, frozen=False):
        plan = real(protocol, data, level, seed, epoch, split, mode=mode, nested=nested, frozen=frozen)
        if split == "train":
            seen.append(plan)
        return plan

    monkeypatch.setattr(missing, "draw", spy)
    set_seed(1111, True, 1)
    model = build_model("baseline", BaselineConfig(), synth_ds.spec)
    cfg = TrainConfig(epochs=2, progress=False, threads=1, train_corruption="frozen")
    trainer.fit(model, synth_ds, cfg, tmp_path, "h")
    assert len(seen) == 2 and torch.equal(seen[0].audio_keep, seen[1].audio_keep)


def test_nested_test_masks_nest_across_rates(synth_ds):
    test = synth_ds["test"].data
    lo, hi = (missing.draw("A", test, r, 0, 0, "test", nested=True) for r in (0.3, 0.6))
    for k in ("text_keep", "audio_keep", "vision_keep"):
        assert not (~getattr(lo, k) & getattr(hi, k)).any(), f"{k}: dropped at 0.3 but kept at 0.6"
    lo, hi = (missing.draw("A", test, r, 0, 0, "test") for r in (0.3, 0.6))  # ours: one seed per rate
    assert (~lo.audio_keep & hi.audio_keep).any()


# ------------------------------------------------------------------------------------------- attention
def test_unmasked_attention_lets_a_dropped_frame_change_the_prediction(synth_ds):
    data = synth_ds["test"].data.take(torch.arange(4))
    plan = missing.draw("A", data, 0.5, 0, 0, "test")
    batch = missing.apply(data, plan, synth_ds.spec.unk_id)
    dropped = ~batch.audio_mask  # dropped or padded frames
    assert dropped.any()
    changed = batch.with_(audio=torch.where(dropped[..., None], torch.full_like(batch.audio, 3.0), batch.audio))
    for cfg, differs in ((LNLNConfig(**SMALL_LNLN), False), (LNLNAuthorsConfig(**SMALL_LNLN), True)):
        torch.manual_seed(0)
        model = build_model("lnln", cfg, synth_ds.spec).eval()
        with torch.no_grad():
            a, b = model(batch).pred, model(changed).pred
        assert (not torch.allclose(a, b, atol=1e-6)) == differs, cfg.mask_attention


def test_trimming_padding_is_refused_without_attention_masks(synth_ds):
    """Unmasked attention reads the padding, so cutting it would change the result: one clear error, not a
    silently different model (the paper presets trim; the authors' presets must not)."""
    from mmsa_core.config import ConfigError
    from mmsa_core.experiment import model_config

    with pytest.raises(ConfigError, match="trim_padding.*mask_attention"):
        model_config(load_config("lnln_authors_mosi", {"model_config": {"trim_padding": True}}))
    with pytest.raises(ValueError, match="trim_padding needs mask_attention"):
        build_model("lnln_authors", LNLNAuthorsConfig(**SMALL_LNLN, trim_padding=True), synth_ds.spec)
    assert model_config(load_config("lnln_authors_mosi")).trim_padding is False


def test_sweep_with_nested_masks_and_swapped_f1_equals_one_evaluation_per_setting(synth_ds):
    """evaluate.sweep predicts each distinct corruption once; with the authors' nested masks and swapped F1 its
    records are still those of one evaluate() per rate and mode."""
    from mmsa_core.evaluate import evaluate, sweep

    torch.manual_seed(0)
    model = build_model("baseline", BaselineConfig(), synth_ds.spec).eval()
    test = synth_ds["test"].data
    recs = pd.DataFrame(sweep(model, test, synth_ds.spec, ("A", "B"), 0, "test", rates=(0.0, 0.3, 0.6), amp=False,
                              nested=True, f1_swapped=True))
    assert "F1 has-0 swapped" in set(recs["metric"])
    for proto in ("A", "B"):
        for r in (0.0, 0.3, 0.6):
            want = evaluate(model, test, synth_ds.spec, proto, r, 0, "test", amp=False, nested=True, f1_swapped=True)
            got = recs[(recs.protocol == proto) & (recs.setting == "rate") & (recs.level == r)]
            assert dict(zip(got.metric, got.value)) == pytest.approx(want, nan_ok=True), (proto, r)
    a3 = recs[(recs.protocol == "A") & (recs.level == 0.3) & (recs.metric == "MAE")]["value"].iloc[0]
    plain = evaluate(model, test, synth_ds.spec, "A", 0.3, 0, "test", amp=False)["MAE"]
    assert a3 != plain  # nested masks are another draw than ours (one seed per rate)


# ------------------------------------------------------------------------------------------- schedules
def test_lnln_authors_schedule_values():
    f = practices.lnln_authors_lr(20)  # warm-up over 2 epochs, cosine T_max 18 from epoch 3
    assert [f(e) for e in range(4)] == [0.0, 0.5, 1.0, 1.0]
    assert f(4) == pytest.approx(0.5 * (1 + math.cos(math.pi / 18)))
    assert f(19) == pytest.approx(0.5 * (1 + math.cos(math.pi * 16 / 18)))


def test_lnln_authors_schedule_first_epoch_runs_at_lr_zero(synth_ds, tmp_path, restore_torch_globals):
    set_seed(1111, True, 1)
    model = build_model("baseline", BaselineConfig(), synth_ds.spec)
    init = [p.detach().clone() for p in model.parameters()]
    cfg = TrainConfig(epochs=1, progress=False, threads=1, schedule="lnln_authors")
    res = trainer.fit(model, synth_ds, cfg, tmp_path, "h")
    assert res.history[0]["lr"] == 0.0
    assert all(torch.equal(a, b) for a, b in zip(init, model.parameters()))  # epoch 1 did not move the weights
    set_seed(1111, True, 1)
    ours = build_model("baseline", BaselineConfig(), synth_ds.spec)
    trainer.fit(ours, synth_ds, replace(cfg, schedule="warmup_cosine"), tmp_path / "ours", "h")
    assert not all(torch.equal(a, b) for a, b in zip(init, ours.parameters()))


def test_plateau_schedule_cuts_the_lr_after_ten_epochs_without_progress():
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    s = practices.schedule(opt, TrainConfig(schedule="plateau"), 10)
    s.after_batch()  # per-epoch schedule: a batch changes nothing
    lrs = []
    for _ in range(12):
        s.after_epoch({"MAE": 1.0})
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[:11] == [1e-3] * 11 and lrs[11] == pytest.approx(1e-4)


def test_unknown_practice_value_is_one_clear_error():
    with pytest.raises(ValueError, match="train.select_split"):
        practices.check(TrainConfig(select_split="tst"))


# ------------------------------------------------------------------------------------------- data order
def test_shuffle_false_trains_in_file_order(synth_ds, tmp_path, restore_torch_globals):
    set_seed(1111, True, 1)
    model = build_model("baseline", BaselineConfig(), synth_ds.spec)
    order = []
    forward = model.forward
    model.forward = lambda b: (order.append(b.index.clone()) if model.training else None, forward(b))[1]
    trainer.fit(model, synth_ds, TrainConfig(epochs=1, progress=False, threads=1, shuffle=False), tmp_path, "h")
    assert torch.equal(torch.cat(order), torch.arange(len(synth_ds["train"].data)))


def test_valid_redraw_changes_the_validation_corruption_per_epoch(synth_ds, tmp_path, monkeypatch, restore_torch_globals):
    for redraw in (False, True):
        seeds = []
        real = missing.draw

        def spy(protocol, data, level, seed, epoch, split, **kw):
            if split == "valid":
                seeds.append(seed)
            return real(protocol, data, level, seed, epoch, split, **kw)

        monkeypatch.setattr(missing, "draw", spy)
        set_seed(1111, True, 1)
        model = build_model("baseline", BaselineConfig(), synth_ds.spec)
        trainer.fit(model, synth_ds, TrainConfig(epochs=2, progress=False, threads=1, valid_redraw=redraw),
                    tmp_path / str(redraw), "h")
        assert (seeds[0] != seeds[1]) == redraw
        monkeypatch.setattr(missing, "draw", real)


# ------------------------------------------------------------------------------------------- selection
def test_picker_keeps_each_metric_groups_best_epoch(tmp_path):
    model = torch.nn.Linear(1, 1)
    p = practices.Picker("en", tmp_path)
    base = {"Acc-2 has-0": 0.5, "Acc-2 non-0": 0.5, "Acc-7": 0.1, "Acc-5": 0.1, "MAE": 1.0}
    p.update(0, base, model)
    p.update(1, {**base, "MAE": 0.8}, model)  # MAE improves at epoch 1 only
    p.update(2, {**base, "Acc-2 has-0": 0.7, "MAE": 0.9}, model)  # Acc-2 has-0 improves at epoch 2 only
    p.update(3, {**base, "Acc-2 has-0": 0.7, "MAE": 0.8}, model)  # ties do not move a choice (strictly better)
    epochs = {k: torch.load(tmp_path / "best_by" / f"{practices.slug(k)}.pt", weights_only=False)["epoch"] for k in base}
    assert epochs == {"Acc-2 has-0": 2, "Acc-2 non-0": 0, "Acc-7": 0, "Acc-5": 0, "MAE": 1}


def test_per_metric_test_selection_reads_each_group_from_its_best_test_epoch(synth_ds, tmp_path, restore_torch_globals):
    """The authors' selection end to end: each metric group's records come from the epoch whose TEST score
    at r = 0.5 (the history's test_ columns) is best for the group's key metric."""
    from mmsa_core.experiment import run

    cfg = from_dict(RunConfig, {"model": "baseline", "train": {
        "epochs": 4, "progress": False, "threads": 1, "out_dir": str(tmp_path), "select_split": "test",
        "select_per_metric": True, "f1_swapped": True, "nested_test_masks": True}})
    df = run(cfg, synth_ds)
    hist = pd.read_csv(tmp_path / "history.csv")
    for key, rest in practices.groups("en").items():
        col = hist[f"test_{key}"]
        want = int(hist["epoch"][col.idxmin() if key == "MAE" else col.idxmax()])
        got = df[df["metric"].isin((key, *rest))]["selected_epoch"].unique()
        assert list(got) == [want], key
    assert {"F1 has-0 swapped", "F1 non-0 swapped"} <= set(df["metric"])
    r5 = df[(df.protocol == "A") & (df.setting == "rate") & (df.level == 0.5) & (df.metric == "MAE")]["value"].iloc[0]
    assert r5 == pytest.approx(hist["test_MAE"].min())  # the chosen epoch's test MAE at r = 0.5, as the history says


# ------------------------------------------------------------------------------------------- metrics
def test_swapped_f1_weights_classes_by_predicted_counts():
    y = np.array([2.0, 1.0, 0.5, -1.0])  # has-0 truth: T T T F
    p = np.array([1.0, 0.5, -0.5, -2.0])  # predicted:   T T F F
    # per class F1: positive 4/5, negative 2/3; weights by truth (3/4, 1/4) vs by predictions (1/2, 1/2)
    assert metrics.mosi_metrics(p, y)["F1 has-0"] == pytest.approx(0.75 * 0.8 + 0.25 * 2 / 3)
    assert metrics.swapped_f1(p, y)["F1 has-0 swapped"] == pytest.approx(0.5 * 0.8 + 0.5 * 2 / 3)
    assert set(metrics.compute(p, y, f1_swapped=True)) == set(metrics.compute(p, y)) | {"F1 has-0 swapped",
                                                                                         "F1 non-0 swapped"}
    assert set(metrics.swapped_f1(p / 3, y / 3, "zh")) == {"F1 swapped"}


# ------------------------------------------------------------------------------------------- MPLMM
def _mplmm_batch(synth_ds, n=6):
    data = synth_ds["train"].data.take(torch.arange(n))
    plan = missing.draw("B", data, 1.0, 0, 0, "train")
    return missing.apply(data, plan, synth_ds.spec.unk_id)


@pytest.mark.parametrize("init,stays_zero", [("zeros", True), ("uniform", False)])
def test_mplmm_missing_type_prompts_stay_zero_at_head(synth_ds, init, stays_zero):
    torch.manual_seed(0)
    model = build_model("mplmm_authors", MPLMMAuthorsConfig(**SMALL_MPLMM, prompt_init=init), synth_ds.spec)
    model.start_adapt(1111)
    before = model.type_prompt.detach().clone()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        opt.zero_grad()
        model(_mplmm_batch(synth_ds)).losses["sentiment"].backward()
        opt.step()
    assert torch.equal(model.type_prompt, before) == stays_zero
    assert (model.type_prompt.abs().sum() == 0) == stays_zero
    assert model.signal_missing[0].abs().sum() > 0  # the signal prompts are added to inputs: they do train


def test_mplmm_adapt_stage_refreshes_projections_and_head_and_freezes_the_encoders(synth_ds):
    torch.manual_seed(0)
    model = build_model("mplmm_authors", MPLMMAuthorsConfig(**SMALL_MPLMM), synth_ds.spec)
    model.start_pretrain()
    assert not model.type_prompt.requires_grad and model.cross[0].layers[0].fc1.weight.requires_grad
    proj, cross = model.proj[0].weight.detach().clone(), model.cross[0].layers[0].fc1.weight.detach().clone()
    model.start_adapt(1111)
    assert not torch.equal(proj, model.proj[0].weight) and torch.equal(cross, model.cross[0].layers[0].fc1.weight)
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"proj", "out", "generative", "to_prompt", "time_map", "signal_missing", "signal_present",
                         "type_prompt", "type_factor"}
    assert bool(model.prompting) and "prompting" in model.state_dict()


def test_mplmm_causal_attention_and_last_position_readout(synth_ds):
    m = causal_mask(3, 5)  # query i sees keys j <= i + 2
    assert torch.equal(torch.isinf(m), torch.tensor([[0, 0, 0, 1, 1], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0]]).bool())
    torch.manual_seed(0)
    model = build_model("mplmm_authors", MPLMMAuthorsConfig(**SMALL_MPLMM), synth_ds.spec).eval()
    enc = model.mem[0]
    x = torch.randn(2, 6, 16)
    y = x.clone()
    y[:, -1] += torch.randn(16)  # a change at the last position cannot reach the earlier ones (causal), only the last
    a, b = enc(x), enc(y)
    assert torch.allclose(a[:, :-1], b[:, :-1], atol=1e-6) and not torch.allclose(a[:, -1], b[:, -1])
    batch = _mplmm_batch(synth_ds)
    out = model(batch)
    assert out.pred.shape == (len(batch),) and set(out.losses) == {"sentiment"}
    assert float(out.losses["sentiment"].detach()) == pytest.approx(float((out.pred - batch.labels).abs().mean().detach()), rel=1e-5)


# ------------------------------------------------------------------------------------------- presets, grid, hashes
def test_presets_are_sets_of_switches():
    for name in ("lnln_authors_default", "lnln_authors_mosi", "lnln_authors_mosei", "lnln_authors_sims"):
        t = load_config(name).train
        assert (t.schedule, t.train_corruption, t.nested_test_masks, t.select_split, t.select_per_metric,
                t.f1_swapped, t.amp) == ("lnln_authors", "frozen", True, "test", True, True, False), name
    for name in ("mplmm_authors_default", "mplmm_authors_mosi", "mplmm_authors_mosei", "mplmm_authors_sims"):
        t = load_config(name).train
        assert (t.schedule, t.shuffle, t.valid_redraw, t.select_split, t.weight_decay, t.grad_clip) == \
            ("plateau", False, True, "valid", 0.0, 0.8), name
    assert TrainConfig().schedule == "warmup_cosine" and TrainConfig().select_split == "valid"  # ours by default
    from mmsa_core.experiment import model_config
    from mmsa_core.models.lnln import lnln_preset

    for name in ("mosi", "mosei", "sims"):  # the authors' model: the paper preset with attention masks off (and
        # so no trimming or dropping of padding, which the unmasked attention reads)
        assert asdict(model_config(load_config(f"lnln_authors_{name}"))) == \
            asdict(replace(lnln_preset(name), mask_attention=False, trim_padding=False, drop_masked=False)), name
    ours = asdict(model_config(load_config("lnln_default")))
    assert asdict(model_config(load_config("lnln_authors_default"))) == \
        {**ours, "mask_attention": False, "grl_only_discriminator": False}


def test_practice_fields_change_the_hash_only_when_set():
    """At their defaults the new fields leave every hash as it was (test_results checks the exact dict)."""
    from mmsa_core.config import HASH_NEUTRAL

    base = config_hash(RunConfig())
    others = {"schedule": "plateau", "train_corruption": "frozen", "nested_test_masks": True, "shuffle": False,
              "valid_redraw": True, "select_split": "test", "select_per_metric": True, "f1_swapped": True,
              "report_split": "valid"}
    assert set(others) == set(HASH_NEUTRAL)
    for k, v in others.items():
        assert config_hash(from_dict(RunConfig, {"train": {k: v}})) != base, k
        assert config_hash(from_dict(RunConfig, {"train": {k: HASH_NEUTRAL[k]}})) == base, k


def test_grid_runs_each_authors_model_under_its_own_protocol_only():
    cells = grid(["lnln", "lnln_authors", "mplmm_authors"], ("A", "B"), (1,))
    assert [c.name for c in cells] == ["lnln-A-1", "lnln-B-1", "lnln_authors-A-1", "mplmm_authors-B-1"]


# ------------------------------------------------------------------------------------------- the walk
def test_each_walk_ends_at_our_protocol(tmp_path):
    """The last trained step of the LNLN walk is lnln_default (ours) in every field that changes results."""
    from mmsa_core.experiment import model_config
    from mmsa_core.walk import WALKS, step_config

    steps = WALKS["lnln"][2]
    last = step_config("lnln", len(steps) - 2, 1111, tmp_path)
    ours = load_config("lnln_default")
    skip = {"out_dir", "progress", "seed", "f1_swapped"}  # f1_swapped only adds records (the F1 step reads them)
    assert {k: v for k, v in asdict(last.train).items() if k not in skip} == \
        {k: v for k, v in asdict(ours.train).items() if k not in skip}
    assert asdict(model_config(last)) == asdict(model_config(ours))
    first = step_config("lnln", 0, 1111, tmp_path).train
    assert (first.select_split, first.schedule, first.train_corruption) == ("test", "lnln_authors", "frozen")
    with pytest.raises(ValueError, match="trains nothing"):
        step_config("lnln", len(steps) - 1, 1111, tmp_path)
    m = step_config("mplmm", len(WALKS["mplmm"][2]) - 2, 1111, tmp_path).train
    assert (m.shuffle, m.valid_redraw, m.schedule, m.report_split) == (True, False, "warmup_cosine", "test")


def test_walk_table_reads_the_swapped_f1_until_the_f1_step():
    from mmsa_core.walk import WALKS, walk_table

    steps = WALKS["mplmm"][2]
    rows = []
    for i, st in enumerate(steps[:-1]):
        for seed in (1, 2):
            for lvl in (0.0, 0.5):
                for met, v in (("MAE", 1.0 - 0.1 * i), ("F1 has-0", 0.6), ("F1 has-0 swapped", 0.7)):
                    rows.append({"step": i, "seed": seed, "protocol": "B", "setting": "rate", "level": lvl,
                                 "metric": met, "value": v})
    t = walk_table(pd.DataFrame(rows), "mplmm", numeric=True)
    assert list(t.index) == [s.label for s in steps]
    assert list(t["F1 has-0"]) == pytest.approx([0.7] * (len(steps) - 1) + [0.6])  # swapped until the last row
    assert t["MAE"].iloc[-1] == pytest.approx(t["MAE"].iloc[-2])  # the F1 step trains nothing
    assert list(t["numbers from the selecting split"]) == ["yes (defect)"] + ["no"] * (len(steps) - 1)


def test_walk_findings_name_the_step_that_moved_a_metric_most():
    from mmsa_core.walk import WALKS, walk_findings

    steps = WALKS["mplmm"][2]
    jump = 3  # the step whose switch moves MAE by far the most
    rows = []
    for i, _ in enumerate(steps[:-1]):
        for seed, noise in ((1, 0.0), (2, 0.02)):
            mae = 1.0 - 0.01 * i - (0.2 if i >= jump else 0.0) + noise
            rows += [{"step": i, "seed": seed, "protocol": "B", "setting": "rate", "level": lvl, "metric": "MAE",
                      "value": mae} for lvl in (0.0, 0.5)]
    (line,) = walk_findings(pd.DataFrame(rows), "mplmm", metrics=("MAE", "Acc-2 has-0"))  # no accuracy: no line
    assert line.startswith("MAE: 1.010 under the authors' protocol, 0.760 under ours (total -0.250)")
    assert f"'{steps[jump].label}' (-0.210)" in line and "seed std of up to 0.014" in line


def test_reproduce_authors_flag_adds_both_authors_models(monkeypatch):
    import argparse

    from mmsa_core import reproduce

    seen = {}

    def fake(models=None, **kw):
        seen["models"] = models
        raise SystemExit(0)

    monkeypatch.setattr(reproduce, "run_grid", fake)
    p = argparse.ArgumentParser()
    reproduce.add_arguments(p)
    with pytest.raises(SystemExit):
        reproduce.cli(p.parse_args(["--authors"]))
    assert seen["models"] == [*reproduce.default_models(), "lnln_authors", "mplmm_authors"]
    with pytest.raises(SystemExit):
        reproduce.cli(p.parse_args(["--models", "lnln_authors", "mplmm_authors"]))
    assert seen["models"] == ["lnln_authors", "mplmm_authors"]


def test_what_chapter_11_says_holds():
    """The prose of chapter 11 reads the shipped walks and the redundant grid; if a new walk changed these
    patterns, the prose would be wrong and this test says so."""
    from mmsa_core import results as R
    from mmsa_core import walk
    from mmsa_core.book import REFERENCE_GRID, REFERENCE_WALK

    grid = R.load_records(REFERENCE_GRID / "records.csv")
    key = ["seed", "protocol", "setting", "level", "mode", "metric"]

    def same(w, step, model, protocol, swapped=True):
        a = w[(w.step == step) & (swapped | ~w.metric.str.endswith(" swapped"))].sort_values(key)
        b = grid[(grid.model == model) & (grid.train_protocol == protocol)].sort_values(key)
        labels = ["seed", "protocol", "setting", "metric"]
        return len(a) == len(b) > 0 and (a[labels].astype(str).to_numpy() == b[labels].astype(str).to_numpy()).all() \
            and np.array_equal(a.level.to_numpy(float), b.level.to_numpy(float), equal_nan=True) \
            and (a.value.to_numpy() == b.value.to_numpy()).all()

    lnln, mplmm = walk.load_walk(REFERENCE_WALK, "lnln"), walk.load_walk(REFERENCE_WALK, "mplmm")
    names = [s.name for s in walk.WALKS["lnln"][2]]
    assert same(lnln, 0, "lnln_authors", "A") and same(lnln, names.index("one"), "lnln", "A", swapped=False)
    assert same(mplmm, 1, "mplmm_authors", "B")  # the first row that reports the test split

    def deltas(records, model):
        t = walk.walk_table(records, model, numeric=True)
        return t, t.drop(columns="numbers from the selecting split").diff()

    t, d = deltas(lnln, "lnln")
    labels = {s.name: s.label for s in walk.WALKS["lnln"][2]}
    fresh = d.loc[labels["corruption"]]
    assert d["MAE"].abs().idxmax() == labels["corruption"]
    assert fresh["MAE"] < 0 and fresh["Corr"] > 0 and (fresh.drop(["MAE", "Corr"]) > 0).all()  # every metric better
    assert round(d.loc[labels["masks"], "MAE"], 3) == -0.017  # "masks help a little: MAE 0.017 lower,
    assert d["MAE"].abs().dropna().sort_values().index[-2] == labels["masks"]  # the second largest step"
    assert round(d.loc[labels["grl"], "MAE"], 3) == -0.003  # "the gradient reversal barely moves it (0.003)"
    assert d.loc[labels["valid"], "MAE"] > 0  # the test set's optimism removed
    assert t["MAE"].iloc[0] > t["MAE"].iloc[-1]  # the authors' protocol ends behind ours

    t, d = deltas(mplmm, "mplmm")
    labels = {s.name: s.label for s in walk.WALKS["mplmm"][2]}
    spread = walk.step_values(mplmm, "mplmm").query("metric == 'MAE'").groupby("step").value.std().max()
    assert -d.loc[labels["test"], "MAE"] > spread  # validation printout: a higher MAE than the test split
    assert abs(d.loc[labels["shuffle"], "MAE"]) < spread and abs(d.loc[labels["valid"], "MAE"]) < spread  # little
    assert d.loc[labels["schedule"], "MAE"] > 0 and d.loc[labels["loss"], "MAE"] < 0
