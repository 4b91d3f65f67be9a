"""ProMMA and its MPLMM-style baseline (mmsa_core/models/promma.py).

Checked: no leakage from missing modalities or dropped positions, batched forward == per-sample forward, MME
pseudo labels on constructed cases with known answers, the orthogonality loss falls, the InfoNCE critic ranks
correlated pairs above shuffled ones, the zero-initialised modules start as the plain model, the two stages and
the checkpoint round trip, and a short two-stage run of ProMMA vs the MPLMM-style baseline on the embedded default.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from mmsa_core import missing
from mmsa_core.config import PRESETS_DIR as CONFIG_DIR
from mmsa_core.config import TrainConfig, from_dict
from mmsa_core.data.mmsa import Batch, DataSpec
from mmsa_core.evaluate import sweep
from mmsa_core.models import build_model
from mmsa_core.models.promma import (BACKBONE, PAIRS, PRESET_DATA, MPLMMConfig, ProMMA, ProMMAConfig, SourceDecoder,
                                     head_width, mme_targets, promma_preset)
from mmsa_core.train import fit
from mmsa_core.utils import set_seed

SEED = 1111


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny ops: one intra-op thread is as fast as two on an idle 2-core machine and far faster on a busy one."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _batch(ds, n=14, modes=None, split="test", protocol="B", level=None):
    """``n`` samples of ``split`` corrupted by protocol B with the given per-sample ``modes`` (or protocol A)."""
    data = ds[split].data.take(torch.arange(n))
    if protocol == "A":
        plan = missing.protocol_a(data, level, seed=0, epoch=0, split=split)
    else:
        plan = missing.protocol_b(data, mode=0)
        modes = torch.as_tensor(modes if modes is not None else [i % 7 for i in range(n)])
        present = torch.tensor(missing.MODES, dtype=torch.bool)[modes]
        cans = missing.droppable(data)
        keeps = [~((~present[:, i : i + 1]).expand_as(c) & c) for i, c in enumerate(cans)]
        plan = missing.MissingPlan(*keeps, present=present, rates=plan.rates, mode=modes)
    return missing.apply(data, plan, ds.spec.unk_id)


def _scrambled(b: Batch, gen: torch.Generator) -> Batch:
    """``b`` with every feature of every MISSING modality (and its masks) replaced by large random values."""
    miss = ~b.present  # (B, 3)
    rnd = lambda t: torch.randn(t.shape, generator=gen, dtype=t.dtype) * 50  # noqa: E731
    w = lambda m, t: torch.where(miss[:, m].view(-1, *[1] * (t.dim() - 1)), t, torch.zeros_like(t))  # noqa: E731
    return b.with_(
        text_feat=b.text_feat + w(0, rnd(b.text_feat)),
        text_ids=torch.where(miss[:, :1], torch.randint(1000, 2000, b.text_ids.shape, generator=gen), b.text_ids),
        audio=b.audio + w(1, rnd(b.audio)),
        audio_mask=b.audio_mask | miss[:, 1:2],
        vision=b.vision + w(2, rnd(b.vision)),
        vision_mask=b.vision_mask | miss[:, 2:3],
        complete=None,
    )


def _activate(model: ProMMA) -> ProMMA:
    """Give the zero-initialised module parameters non-zero values, so that every path is exercised."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        if hasattr(model, "mpdc_gate"):
            model.mpdc_gate.copy_(torch.randn(model.mpdc_gate.shape, generator=g))
        if hasattr(model, "critic"):
            for c in model.critic:
                c.head.weight.copy_(torch.randn(c.head.weight.shape, generator=g) * 0.3)
    return model.eval()


def _double(b: Batch) -> Batch:
    f = {k: getattr(b, k).double() for k in ("text_feat", "audio", "vision", "labels")}
    return b.with_(**f, complete=None if b.complete is None else _double(b.complete))


def _model(ds, cfg, seed=0) -> ProMMA:
    torch.manual_seed(seed)
    return ProMMA(cfg, ds.spec)


CONFIGS = {
    "promma-hard": ProMMAConfig(),
    "promma-soft": ProMMAConfig(mme_gate="soft", pool="last"),
    "mplmm": MPLMMConfig(),
}


# ------------------------------------------------------------------ leakage and batching

@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_missing_modalities_do_not_leak(synth_ds, name):
    """Changing everything of a modality marked missing changes no prediction (all 6 incomplete modes, eval)."""
    model = _activate(_model(synth_ds, CONFIGS[name]))
    gen = torch.Generator().manual_seed(0)
    for mode in range(1, 7):
        b = _batch(synth_ds, n=8, modes=[mode] * 8)
        with torch.no_grad():
            p = model(b).pred
            q = model(_scrambled(b, gen)).pred
        assert torch.equal(p, q), f"{name}, mode {missing.MODE_NAMES[mode]}: max change {(p - q).abs().max():.3g}"
    model.start_pretrain()  # the stage-1 path (no prompts) must not leak either
    model.eval()
    b = _batch(synth_ds, n=14)
    with torch.no_grad():
        assert torch.equal(model(b).pred, model(_scrambled(b, gen)).pred)


def test_dropped_positions_do_not_leak(synth_ds):
    """Protocol A: features at dropped tokens/frames and padding do not matter."""
    model = _activate(_model(synth_ds, ProMMAConfig()))
    b = _batch(synth_ds, n=12, protocol="A", level=0.5)
    gen = torch.Generator().manual_seed(1)
    tdrop = (b.text_ids == synth_ds.spec.unk_id) | ~b.text_mask.bool()
    noisy = b.with_(
        text_feat=b.text_feat + tdrop[..., None] * torch.randn(b.text_feat.shape, generator=gen) * 50,
        audio=b.audio + (~b.audio_mask)[..., None] * torch.randn(b.audio.shape, generator=gen) * 50,
        vision=b.vision + (~b.vision_mask)[..., None] * torch.randn(b.vision.shape, generator=gen) * 50,
    )
    assert tdrop.any() and (~b.audio_mask).any()
    with torch.no_grad():
        assert torch.equal(model(b).pred, model(noisy).pred)


@pytest.mark.parametrize("name", ["promma-hard", "promma-soft", "mplmm"])
def test_batched_equals_per_sample(synth_ds, name):
    """One batch mixing all 7 modes == each sample alone (float64, eval mode), predictions and extras."""
    model = _activate(_model(synth_ds, CONFIGS[name])).double()
    b = _double(_batch(synth_ds, n=14))
    assert set(b.mode.tolist()) == set(range(7))
    with torch.no_grad():
        out = model(b)
        singles = [model(b.take(torch.tensor([i]))) for i in range(len(b))]
    torch.testing.assert_close(out.pred, torch.cat([s.pred for s in singles]), rtol=0, atol=1e-6)
    for k, v in out.extras.items():
        torch.testing.assert_close(v.double(), torch.cat([s.extras[k] for s in singles]).double(), rtol=0, atol=1e-6)


# ------------------------------------------------------------------ MME

def test_mme_targets_known_values():
    y_full = torch.tensor([0.0, 0.0, 1.0, 1.0, -2.0])
    y_gen = torch.tensor([0.1, 0.5, 1.0, 2.0, -1.0])
    y_abs = torch.tensor([0.5, 0.1, 0.5, 2.0, -3.0])
    # error reductions |abs - full| - |gen - full| = 0.4, -0.4, 0.5, 0 (a tie), 0 (a tie on the other side)
    assert mme_targets(y_full, y_gen, y_abs).tolist() == [1.0, 0.0, 1.0, 0.0, 0.0]
    soft = mme_targets(y_full, y_gen, y_abs, soft=True, temperature=0.1)
    torch.testing.assert_close(soft, torch.sigmoid(torch.tensor([4.0, -4.0, 5.0, 0.0, 0.0])))


def test_mme_pseudo_labels_constructed_case(synth_ds):
    """In the frozen stage-1 model's own input space: a stand-in equal to the real projected modality earns label 1;
    a zero stand-in ties with leaving the modality absent (a zero sequence, as stage 1 learned it) and earns 0; with
    two modalities missing, each label compares exactly the runs the spec names (direct calls to the frozen model)."""
    model = _model(synth_ds, ProMMAConfig(mme_soft_labels=False)).double()
    model.snapshot_teacher()
    T = model._teacher
    n = 6
    b = _double(_batch(synth_ds, n=n, modes=[1, 2, 3, 1, 2, 3]))
    full_mask = lambda t: torch.ones_like(t)  # noqa: E731
    b = b.with_(text_mask=full_mask(b.text_mask), audio_mask=full_mask(b.audio_mask), vision_mask=full_mask(b.vision_mask))
    b = b.with_(complete=b.complete.with_(text_mask=b.text_mask, audio_mask=torch.ones_like(b.audio_mask),
                                          vision_mask=torch.ones_like(b.vision_mask)))
    # text tokens dropped to [UNK] are masked out by the model: use ids without [UNK] so every position is valid
    b = b.with_(text_ids=torch.full_like(b.text_ids, 2000), complete=b.complete.with_(text_ids=torch.full_like(b.text_ids, 2000)))
    raw, masks, present = model._inputs(b)
    raw_c, _, _ = T._inputs(b.complete)
    Z = [torch.zeros(L, model.cfg.dim, dtype=torch.float64) for L in model.lens]  # absent: a zero sequence
    perfect = [T.proj[m](raw_c[m]) for m in range(3)]  # stand-in = the real projected input
    nothing = [torch.zeros_like(p) for p in perfect]
    # samples 0..2: perfect generation; samples 3..5: no generation
    gen = [torch.cat([perfect[m][:3], nothing[m][3:]]) for m in range(3)]
    every = [torch.ones_like(m) for m in masks]  # every position is valid in this constructed case
    with torch.no_grad():
        y = model.pseudo_labels(b, raw, masks, present, gen)
        full, _ = T._encode([T.proj[m](raw_c[m]) for m in range(3)], every)
        absent, _ = T._encode([torch.where(present[:, m, None, None], T.proj[m](raw[m]), Z[m].expand(n, -1, -1)) for m in range(3)], every)
    miss = ~present
    assert ((absent - full).abs() > 1e-9).all()  # the constructed case is not degenerate
    assert y[miss][:3].tolist() == [1.0, 1.0, 1.0] and y[miss][3:].tolist() == [0.0, 0.0, 0.0]

    # two modalities missing (text + audio): label_l compares (l stood in, a absent) with (both absent)
    b2 = _double(_batch(synth_ds, n=4, modes=[4, 4, 6, 6]))
    raw, masks, present = model._inputs(b2)
    g = torch.Generator().manual_seed(5)
    gen = [torch.randn(4, L, model.cfg.dim, generator=g, dtype=torch.float64) for L in model.lens]
    with torch.no_grad():
        y = model.pseudo_labels(b2, raw, masks, present, gen)
        raw_c, masks_c, _ = T._inputs(b2.complete)
        kmask = [torch.where(present[:, m, None], masks[m], torch.ones_like(masks[m])) for m in range(3)]
        y_full, _ = T._encode([T.proj[m](raw_c[m]) for m in range(3)], masks_c)
        base = [torch.where(present[:, m, None, None], T.proj[m](raw[m]), Z[m].expand(4, -1, -1)) for m in range(3)]
        y_abs, _ = T._encode(base, kmask)
        for m in range(3):
            x = [torch.where(~present[:, k, None, None], gen[k], base[k]) if k == m else base[k] for k in range(3)]
            y_gen, _ = T._encode(x, kmask)
            want = ((y_abs - y_full).abs() > (y_gen - y_full).abs()).double()
            assert torch.equal(y[~present[:, m], m], want[~present[:, m]]), m


# ------------------------------------------------------------------ MPD, DPW, MPDC

def test_orthogonality_loss_falls_in_training(synth_ds):
    set_seed(SEED, deterministic=True)
    model = _model(synth_ds, ProMMAConfig(lambda_orth=0.1), seed=SEED)
    model.start_adapt()  # no teacher needed for this test: pseudo labels are simply skipped
    model._teacher = None
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    train = synth_ds["train"].data
    plan = missing.protocol_b(train, 0.7, seed=0, epoch=0, split="train")
    before = model.orth_loss().item()
    for step in range(12):
        idx = torch.arange(step * 32, (step + 1) * 32)
        out = model(missing.apply(train.take(idx), plan.take(idx), synth_ds.spec.unk_id))
        assert "orth" in out.losses
        opt.zero_grad()
        sum(out.losses.values()).backward()
        opt.step()
    after = model.orth_loss().item()
    assert after < 0.5 * before, (before, after)


def test_source_decoder_scores_informative_changes_above_uninformative_ones():
    """DPW's MI estimate: trained by the Gaussian NLL of the real source given the stream's change, it scores a change
    that determines the source (c = A z + noise) above one that carries nothing of it (c independent of z, marked by
    an offset, as a stream that attended to the "missing" prompt is), per sample and without the source at inference."""
    g = torch.Generator().manual_seed(0)
    d, n = 8, 256
    A = torch.linalg.qr(torch.randn(d, d, generator=g))[0]

    def pairs(k, informative):
        z = torch.nn.functional.layer_norm(torch.randn(k, d, generator=g), (d,))
        c = z @ A + 0.3 * torch.randn(k, d, generator=g) if informative else torch.randn(k, d, generator=g) + 3 * A[0]
        return c, z

    dec = SourceDecoder(d)
    c, _ = pairs(4, True)
    assert torch.equal(dec.score(c), torch.zeros(4))  # zero at init: DPW weights exactly 1/2
    opt = torch.optim.Adam(dec.parameters(), lr=0.02)
    for _ in range(300):
        half = [pairs(n // 2, True), pairs(n // 2, False)]
        c, z = torch.cat([h[0] for h in half]), torch.cat([h[1] for h in half])
        loss = dec.nll(c, z)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        good, bad = dec.score(pairs(512, True)[0]), dec.score(pairs(512, False)[0])
    assert good.mean() > bad.mean() + 0.5, (good.mean(), bad.mean())
    assert (good[:, None] > bad[None]).float().mean() > 0.9  # AUC of the score for "informative"
    assert bad.abs().mean() < 0.3  # an uninformative change: about the marginal variance, ~0 nats


def test_zero_initialised_modules_start_as_the_plain_model(synth_ds):
    """MPDC gates start at 0 and DPW critics at W = 0, so at init ProMMA == the same weights with MPDC / DPW
    switched off (exactly); in stage 1 (pretrain) the output does not depend on any prompt or module parameter."""
    model = _model(synth_ds, ProMMAConfig()).eval()
    assert torch.equal(model.mpdc_gate, torch.zeros_like(model.mpdc_gate))
    b = _batch(synth_ds, n=14)
    with torch.no_grad():
        out = model(b)
        for flag in ("use_mpdc", "use_dpw"):
            other = copy.deepcopy(model)
            other.cfg = replace(model.cfg, **{flag: False})
            assert torch.equal(out.pred, other(b).pred), flag
        assert torch.equal(out.extras["dpw_weights"], torch.full((14, 3, 2), 0.5))
    # stage-1 path: perturb every non-backbone parameter, nothing changes
    model.start_pretrain()
    assert all(p.requires_grad == (n.split(".")[0] in BACKBONE) for n, p in model.named_parameters())
    with torch.no_grad():
        p0 = model(b).pred
        for n, p in model.named_parameters():
            if n.split(".")[0] not in BACKBONE:
                p.add_(torch.randn_like(p))
        assert torch.equal(p0, model(b).pred)


@pytest.mark.parametrize("mem_depth", [1, 2])
def test_every_mpdc_gate_gets_a_gradient_at_init(synth_ds, mem_depth):
    """Each MPDC gate, the last layer's included, receives a nonzero gradient of the sentiment loss at its initial 0
    (the residual enters before its layer, so it reaches the pooled positions): no gate is stuck at 0."""
    model = _model(synth_ds, ProMMAConfig(mem_depth=mem_depth)).eval()
    model.start_adapt()
    model(_batch(synth_ds, n=14)).losses["sentiment"].backward()
    grad = model.mpdc_gate.grad
    assert grad is not None and grad.shape == (3, mem_depth)
    assert (grad.abs() > 1e-9).all(), grad


def test_attention_dropout_switch(synth_ds):
    """``attn_dropout`` sets the attention-probability dropout of every attention block alone: the block dropout,
    the weights and the eval-mode output stay those of the preset."""
    from mmsa_core.models.layers import Attention

    base, off = _model(synth_ds, ProMMAConfig()), _model(synth_ds, ProMMAConfig(attn_dropout=0.0))
    attn = [m for m in off.modules() if isinstance(m, Attention)]
    assert attn and all(m.dropout == 0.0 for m in attn)
    assert all(m.dropout == ProMMAConfig().dropout for m in base.modules() if isinstance(m, Attention))
    b = _batch(synth_ds, n=14)
    with torch.no_grad():
        assert torch.equal(base.eval()(b).pred, off.eval()(b).pred)


def test_one_seed_gives_every_variant_the_same_backbone_and_rng_stream(synth_ds):
    """Prompts and modules are drawn from a forked RNG: ProMMA, the baseline and an ablation built from one seed
    share the backbone's initial weights AND the global RNG state after construction (so stage 1 trains alike)."""
    built = []
    for cfg in (ProMMAConfig(), MPLMMConfig(), ProMMAConfig(use_dpw=False, prompt_len=6)):
        torch.manual_seed(7)
        m = ProMMA(cfg, synth_ds.spec)
        built.append(({k: v for k, v in m.state_dict().items() if k.split(".")[0] in BACKBONE}, torch.get_rng_state()))
    for state, rng in built[1:]:
        assert torch.equal(rng, built[0][1])
        assert state.keys() == built[0][0].keys() and all(torch.equal(v, built[0][0][k]) for k, v in state.items())


def test_configs_and_presets():
    assert not any(getattr(MPLMMConfig(), f) for f in ("use_mme", "use_mpd", "use_dpw", "use_mpdc"))
    assert all(getattr(ProMMAConfig(), f) for f in ("use_mme", "use_mpd", "use_dpw", "use_mpdc"))
    for name in ("mosi", "mosei", "sims", "default"):
        cfg = promma_preset(name)
        spec = DataSpec(**PRESET_DATA[name])
        model = build_model("promma", cfg, spec)
        assert len(model.cross) == len(PAIRS) == 6 and len(model.mem) == 3
        assert isinstance(promma_preset(name, baseline=True), MPLMMConfig)
    with pytest.raises(ValueError):
        promma_preset("iemocap")


# ------------------------------------------------------------------ stages, checkpoints, and ProMMA vs MPLMM

def test_two_stages_and_checkpoint_round_trip(synth_ds, tmp_path, restore_torch_globals):
    from mmsa_core.config import load_config
    from mmsa_core.experiment import load_checkpoint, run

    cfg = load_config(CONFIG_DIR / "promma_default.yaml", {
        "train": {"out_dir": str(tmp_path / "run"), "progress": False, "threads": 1, "seed": SEED},
        "model_config": {"pretrain_epochs": 1, "adapt_epochs": 1}})
    df = run(cfg, synth_ds)
    for st in ("pretrain", "adapt"):
        assert (tmp_path / "run" / st / "best.pt").is_file()
    pre = torch.load(tmp_path / "run" / "pretrain" / "best.pt", weights_only=False)["model"]
    model, ck = load_checkpoint(tmp_path / "run" / "best.pt", synth_ds.spec)
    assert ck["stage"] == "adapt" and int(model.phase) == 1 and model._teacher is None
    # the adapt stage kept the frozen backbone parts (crossmodal, memory, fusion) at their stage-1 values
    for k, v in model.state_dict().items():
        top = k.split(".")[0]
        if top in ("cross", "mem", "fusion"):
            assert torch.equal(v, pre[k]), k
    assert any(not torch.equal(v, pre[k]) for k, v in model.state_dict().items() if k.startswith("out."))
    # the rebuilt model reproduces the run's own test records
    rec = df[(df.protocol == "B") & (df.setting == "mode") & (df["mode"] == "{l,a,v}") & (df.metric == "MAE")].value.item()
    again = [r for r in sweep(model, synth_ds["test"].data, synth_ds.spec, "B", 0, rates=()) if r["metric"] == "MAE"]
    assert math.isclose(again[0]["value"], rec, rel_tol=1e-6)
    # history.csv logs both stages in order; the selection-gap table reads only the last (the selected) stage
    import pandas as pd

    from mmsa_core.results import last_stage

    hist = pd.read_csv(tmp_path / "run" / "history.csv")
    assert hist["stage"].tolist() == ["pretrain", "adapt"]
    assert last_stage(hist)["stage"].tolist() == ["adapt"]


@pytest.fixture(scope="module")
def short_runs(synth_ds):
    """Both stages as the presets {promma,mplmm}_default.yaml run them. Stage 1 is shared: the backbone is created
    first from the same seed and trains without prompts, so both models would pretrain to the same weights."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    from mmsa_core.config import load_config
    import tempfile

    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        set_seed(SEED, deterministic=True)
        rc = load_config(CONFIG_DIR / "promma_default.yaml")
        proto = build_model("promma", from_dict(ProMMAConfig, rc.model_config), synth_ds.spec)
        stages = proto.stages(replace(rc.train, seed=SEED))
        stages[0].prepare(proto)
        t0 = time.perf_counter()
        fit(proto, synth_ds, replace(rc.train, seed=SEED, progress=False, **stages[0].train_overrides), f"{tmp}/pre", "x")
        res["pretrain_s"] = time.perf_counter() - t0
        pre_state = proto.state_dict()
        test = synth_ds["test"].data
        for name in ("promma", "mplmm"):
            rc = load_config(CONFIG_DIR / f"{name}_default.yaml")
            set_seed(SEED, deterministic=True)
            model = build_model(name, from_dict(MPLMMConfig if name == "mplmm" else ProMMAConfig, rc.model_config), synth_ds.spec)
            own = model.state_dict()
            model.load_state_dict({k: v for k, v in pre_state.items() if k in own})
            st = model.stages(replace(rc.train, seed=SEED))[1]
            st.prepare(model)
            t0 = time.perf_counter()
            fit(model, synth_ds, replace(rc.train, seed=SEED, progress=False, **st.train_overrides), f"{tmp}/{name}", "x")
            res[f"{name}_adapt_s"] = time.perf_counter() - t0
            recs = [r for r in sweep(model, test, synth_ds.spec, "B", 0) if r["metric"] == "MAE"]
            res[name] = {"eta": sum(r["value"] for r in recs if r["setting"] == "rate") / 10,
                         "modes": sum(r["value"] for r in recs if r["setting"] == "mode") / 7}
    train_y, test_y = synth_ds["train"].data.labels, synth_ds["test"].data.labels
    res["mean_predictor"] = float((test_y - train_y.mean()).abs().mean())
    torch.set_num_threads(threads)
    print("ProMMA vs MPLMM (test MAE, protocol B):", res)
    return res


def test_both_train_well_below_the_mean_predictor(short_runs):
    """Both learn (well below the mean predictor) and neither is far behind the other. (The 3-seed comparison on
    both testbed variants, with every ablation row, is measured by mechanisms_promma into mechanisms.json; the
    numbers once quoted here were of the pre-testbed data and of the old modules.) The run's wall time is printed
    by the fixture, never asserted (tests do not pass or fail on wall-clock time)."""
    mp = short_runs["mean_predictor"]
    for name in ("promma", "mplmm"):
        for k in ("eta", "modes"):
            assert short_runs[name][k] < 0.85 * mp, (name, k, short_runs[name][k], mp)
    for k in ("eta", "modes"):
        assert abs(short_runs["promma"][k] - short_runs["mplmm"][k]) < 0.1, short_runs



# ------------------------------------------------------------------ host-device synchronisation

class _NoHostReads:
    """Within the block, a Python-level read of a tensor's value (``bool()``, ``.item()``, ``.tolist()``,
    ``.nonzero()``, ``.any()``/``.all()`` turned into a bool, boolean-mask indexing) raises: each is a host-device
    synchronisation on a GPU. ATen's own internal checks are not Python calls and are not seen."""

    def __enter__(self):
        T = torch.Tensor
        self.saved = {k: getattr(T, k) for k in ("__bool__", "item", "tolist", "nonzero", "__getitem__", "__index__")}

        def refuse(name):
            def f(*a, **k):
                raise AssertionError(f"host read of a tensor: Tensor.{name}")
            return f

        getitem = self.saved["__getitem__"]

        def checked_getitem(t, idx):
            parts = idx if isinstance(idx, tuple) else (idx,)
            if any(isinstance(p, torch.Tensor) and p.dtype == torch.bool for p in parts):
                raise AssertionError("boolean-mask indexing (its size is data dependent)")
            return getitem(t, idx)

        for k in ("__bool__", "item", "tolist", "nonzero", "__index__"):
            setattr(T, k, refuse(k))
        T.__getitem__ = checked_getitem
        return self

    def __exit__(self, *exc):
        for k, v in self.saved.items():
            setattr(torch.Tensor, k, v)


def test_forward_reads_no_tensor_on_the_host(synth_ds):
    """ProMMA's training forward (teacher pseudo labels, every loss) and its eval forward, both stages, read no tensor
    value on the host: on a GPU no step waits for the device (issue 14, finding 9). The old code failed this on its
    ``bool(self.phase)``, ``.any()``, ``nonzero()`` and ``logit[missing]``."""
    model = _activate(_model(synth_ds, ProMMAConfig()))
    model.start_adapt()
    b = _batch(synth_ds, n=14)
    for train in (True, False):
        model.train(train)
        with _NoHostReads():
            out = model(b)
            total = sum(out.losses.values())
        if train:
            assert {"mme", "gen", "mi", "orth", "sentiment"} <= set(out.losses), out.losses.keys()
            with _NoHostReads():
                total.backward()
    model.start_pretrain()
    with _NoHostReads():
        model(b)
