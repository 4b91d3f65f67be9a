"""LNLN: sizes, shapes, gradient reversal, the batched pass, masking, and what a short training run learns.

The training-based tests share ONE small LNLN (and one baseline) trained on the embedded default with the settings
of ``mmsa_core/configs/lnln_default.yaml``; every number they assert on is measured here, never stored.
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

import pytest
import torch

from mmsa_core import metrics, missing
from mmsa_core.metrics import spearman
from mmsa_core.config import PRESETS_DIR, RunConfig, config_hash, load_config
from mmsa_core.data.mmsa import Batch, DataSpec
from mmsa_core.evaluate import predict
from mmsa_core.experiment import model_config
from mmsa_core.models import build_model, get_model_class
from mmsa_core.models import lnln as lnln_module
from mmsa_core.models.lnln import LNLN, PAPER_SPECS, ALMTConfig, LNLNConfig, lnln_preset
from mmsa_core.models.text import TextEncoderConfig
from mmsa_core.train import fit
from mmsa_core.utils import set_seed

REPO = Path(__file__).resolve().parent.parent
FEATURES = TextEncoderConfig(kind="features")
TINY = TextEncoderConfig(kind="tiny", tiny_hidden=32, tiny_layers=1, tiny_heads=2)

# the authors' model, measured by instantiating their code (shared/spec/lnln.md); text encoder excluded
AUTHORS_PARAMS = {"mosi": 6_483_012, "mosei": 7_102_404, "sims": 7_112_260}


def random_batch(spec: DataSpec, n: int, seed: int = 0, rate: float | None = None) -> Batch:
    """Random tensors of the shapes of ``spec`` with ragged lengths, corrupted by protocol A (``.complete`` set)."""
    g = torch.Generator().manual_seed(seed)
    pos = lambda L: torch.arange(L)[None, :]  # noqa: E731
    n_tok = torch.randint(4, spec.text_len + 1, (n, 1), generator=g)
    text_mask = (pos(spec.text_len) < n_tok).long()
    ids = torch.randint(1000, 2000, (n, spec.text_len), generator=g)
    ids[:, 0] = 101
    ids = torch.where(pos(spec.text_len) == n_tok - 1, torch.full_like(ids, 102), ids) * text_mask
    a_len = torch.randint(1, spec.audio_len + 1, (n, 1), generator=g)
    v_len = torch.randint(1, spec.vision_len + 1, (n, 1), generator=g)
    a_mask, v_mask = pos(spec.audio_len) < a_len, pos(spec.vision_len) < v_len
    data = Batch(
        text_ids=ids, text_mask=text_mask, text_segment=torch.zeros_like(ids),
        text_feat=torch.randn(n, spec.text_len, spec.text_dim, generator=g) * text_mask[..., None],
        audio=torch.randn(n, spec.audio_len, spec.audio_dim, generator=g) * a_mask[..., None],
        audio_mask=a_mask,
        vision=torch.randn(n, spec.vision_len, spec.vision_dim, generator=g) * v_mask[..., None],
        vision_mask=v_mask,
        labels=torch.empty(n).uniform_(spec.label_min, spec.label_max, generator=g), index=torch.arange(n),
    )
    return missing.apply(data, missing.protocol_a(data, rate, seed, 0, "train"), spec.unk_id)


def paper_model(name: str, text: TextEncoderConfig = FEATURES, **changes) -> LNLN:
    torch.manual_seed(0)
    return LNLN(replace(lnln_preset(name), text=text, **changes), PAPER_SPECS[name])


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------------------------------------- sizes, shapes


@pytest.mark.parametrize("name", ["mosi", "mosei", "sims"])
def test_parameter_count_equals_the_authors(name):
    model = paper_model(name)
    assert model.num_params() == AUTHORS_PARAMS[name]
    assert model.num_params() == count(model) - count(model.text_encoder)


def test_parameter_breakdown_mosi():
    """Per part, as shared/spec/lnln.md lists it (our proxy generator and DMML each hold their learned tokens)."""
    m = paper_model("mosi")
    assert count(m.embed_text) == 699_520
    assert count(m.embed_audio) == 643_456
    assert count(m.embed_vision) == 661_376
    assert count(m.proxy) == 597_760 + 1_024
    assert count(m.discriminator) == 8_386
    assert count(m.completeness) == 602_241
    assert count(m.reconstructor) == 1_780_992
    assert count(m.dmml) == 1_487_233 + 1_024
    assert len(m.dmml.fusion.layers) == 2 and len(paper_model("sims").dmml.fusion.layers) == 4


def test_shapes_through_every_stage_mosi():
    model = paper_model("mosi", share_unchanged=False).train()  # every complete row in the pass (2B rows)
    B, T, d = 3, 8, 128
    batch = random_batch(PAPER_SPECS["mosi"], B)
    seen = {}

    def hook(name):
        def fn(module, args, out):
            seen[name] = out
        return fn

    parts = {"embed_text": model.embed_text, "embed_audio": model.embed_audio, "embed_vision": model.embed_vision,
             "completeness": model.completeness, "proxy": model.proxy, "language_encoder": model.dmml.language_encoder,
             "fusion": model.dmml.fusion, "head": model.dmml.head, "rec_text": model.reconstructor[0]}
    for k, mod in parts.items():
        mod.register_forward_hook(hook(k))
    out = model(batch)
    for k in ("embed_text", "embed_audio", "embed_vision"):
        assert seen[k].shape == (2 * B, T, d)  # incomplete and complete inputs in one pass
    assert seen["completeness"].shape == (B,) and ((seen["completeness"] > 0) & (seen["completeness"] < 1)).all()
    assert seen["proxy"].shape == (B, T, d)
    assert [s.shape for s in seen["language_encoder"]] == [(B, T, d)] * 3
    assert seen["fusion"].shape == (B, T + 1, d)
    assert seen["head"].shape == (B, 1) and out.pred.shape == (B,)
    assert seen["rec_text"].shape == (B, T, d)
    assert set(out.losses) == {"completeness", "adversarial", "reconstruction", "sentiment"}
    assert all(v.ndim == 0 and torch.isfinite(v) for v in out.losses.values())
    ex = out.extras
    assert ex["w"].shape == (B,) and ex["disc_acc"].shape == (B,) and ex["rec_error"].shape == (B, 3)
    assert ex["hyper_attn_audio"].shape == ex["hyper_attn_vision"].shape == (B, 3, T, T)
    torch.testing.assert_close(ex["hyper_attn_audio"].sum(-1), torch.ones(B, 3, T))
    assert not any(v.requires_grad for v in ex.values())
    # the weighted terms are what the trainer sums
    cfg = model.cfg
    torch.testing.assert_close(out.losses["reconstruction"], cfg.gamma * ex["rec_error"].mean())
    sum(out.losses.values()).backward()
    assert all(p.grad is not None for n, p in model.named_parameters()), "a parameter got no gradient"

    model.eval()  # evaluation: one pass over the incomplete input only, no complete-input losses
    seen.clear()
    with torch.no_grad():
        out = model(batch)
    assert seen["embed_text"].shape == (B, T, d)
    assert set(out.losses) == {"completeness", "sentiment"} and "rec_error" not in out.extras


def test_presets_and_yaml_configs_agree():
    assert lnln_preset("mosei").fusion_depth == 4 and lnln_preset("sims").beta == 0.6
    assert lnln_preset("sims").text.name_or_path == "bert-base-chinese"
    assert lnln_preset("default") == replace(LNLNConfig(), text=TextEncoderConfig(kind="pretrained", finetune=False))
    with pytest.raises(ValueError, match="unknown LNLN preset"):
        lnln_preset("imdb")
    for name in ("mosi", "mosei", "sims", "default"):
        cfg = load_config(PRESETS_DIR / f"lnln_{name}.yaml")
        assert cfg.model == "lnln"
        assert asdict(model_config(cfg)) == asdict(lnln_preset(name)), name
    cfg = load_config(PRESETS_DIR / "almt_default.yaml")
    assert model_config(cfg) == ALMTConfig(**{k: v for k, v in asdict(lnln_preset("default")).items()
                                              if k not in ("use_dmc", "use_reconstructor", "use_adversarial", "text")},
                                           text=lnln_preset("default").text)


def test_registry_and_almt_ablation():
    spec = PAPER_SPECS["mosi"]
    assert get_model_class("lnln") == (LNLNConfig, LNLN) and get_model_class("almt") == (ALMTConfig, LNLN)
    almt = build_model("almt", replace(ALMTConfig(), text=FEATURES), spec)
    assert not hasattr(almt, "completeness") and not hasattr(almt, "reconstructor")
    assert not hasattr(almt, "discriminator") and not almt.needs_complete
    calls = []
    almt.embed_text.register_forward_hook(lambda m, a, o: calls.append(o.shape[0]))
    out = almt.train()(random_batch(spec, 2))
    assert calls == [2]  # nothing needs the complete input: one pass over the incomplete input
    assert set(out.losses) == {"sentiment"}
    # one switch at a time
    no_rec = LNLN(replace(LNLNConfig(), text=FEATURES, use_reconstructor=False), spec).train()
    assert set(no_rec(random_batch(spec, 2)).losses) == {"completeness", "adversarial", "sentiment"}
    no_adv = LNLN(replace(LNLNConfig(), text=FEATURES, use_adversarial=False), spec).train()
    assert set(no_adv(random_batch(spec, 2)).losses) == {"completeness", "reconstruction", "sentiment"}


# ---------------------------------------------------------------------------------------------- mechanics


@pytest.mark.parametrize("grl_only_discriminator", [False, True])
def test_gradient_reversal_flips_the_generators_gradient(monkeypatch, grl_only_discriminator):
    """The proxy generator's gradient from the discriminator loss is exactly minus that of a plain connection; the
    sentiment loss's gradient is reversed too where the GRL sits on h_p (the authors), not otherwise."""
    spec = PAPER_SPECS["mosi"]
    batch = random_batch(spec, 4, seed=3)

    def generator_grads(loss_name):
        torch.manual_seed(0)
        model = LNLN(replace(LNLNConfig(), text=FEATURES, grl_only_discriminator=grl_only_discriminator), spec)
        model.train()(batch).losses[loss_name].backward()
        return torch.cat([p.grad.flatten() for p in model.proxy.parameters()]), model

    reversed_adv, model = generator_grads("adversarial")
    disc_grad = model.discriminator[0].weight.grad.clone()
    reversed_sent, _ = generator_grads("sentiment")
    with monkeypatch.context() as mp:
        mp.setattr(lnln_module, "grad_reverse", lambda x, scale=1.0: x)  # a plain connection
        plain_adv, plain_model = generator_grads("adversarial")
        plain_sent, _ = generator_grads("sentiment")
    assert plain_adv.abs().max() > 1e-6 and plain_sent.abs().max() > 1e-6
    torch.testing.assert_close(reversed_adv, -plain_adv, rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(reversed_sent, plain_sent if grl_only_discriminator else -plain_sent,
                               rtol=1e-5, atol=1e-9)
    # the discriminator itself is trained normally in both cases
    torch.testing.assert_close(plain_model.discriminator[0].weight.grad, disc_grad, rtol=1e-5, atol=1e-9)


def test_one_batched_pass_equals_two_passes():
    """[incomplete; complete] through the text encoder and the embeddings at once = two separate passes."""
    spec = DataSpec(text_len=12, text_dim=16, audio_len=20, audio_dim=5, vision_len=15, vision_dim=7)
    torch.manual_seed(0)
    model = LNLN(replace(LNLNConfig(), text=TINY), spec).eval()
    batch = random_batch(spec, 5, seed=1)
    calls = []
    model.text_encoder.register_forward_hook(lambda m, a, o: calls.append(o.shape[0]))
    with torch.no_grad():
        inc, com = model.embed_pair(batch, batch.complete)
        inc2, com2 = model.embed_batch(batch), model.embed_batch(batch.complete)
    assert calls == [10, 5, 5]
    for a, b in zip(inc + com, inc2 + com2):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(inc[0], com[0])  # the two inputs do differ
    calls.clear()
    model.train()(batch)  # training: exactly one text-encoder pass, over 2B samples
    assert calls == [10]


# ---------------------------------------------------------------------------------------------- speed levers

LEVER_SPEC = DataSpec(text_len=12, text_dim=16, audio_len=20, audio_dim=5, vision_len=15, vision_dim=7)


def padded(batch: Batch, extra: int) -> Batch:
    """``batch`` (and its complete input) with ``extra`` more trailing padding positions in every modality."""
    def pad(t, value=0):
        return torch.cat([t, t.new_full((t.shape[0], extra, *t.shape[2:]), value)], 1)

    seq = ("text_ids", "text_mask", "text_segment", "text_feat", "audio", "audio_mask", "vision", "vision_mask")
    out = batch.with_(**{k: pad(getattr(batch, k)) for k in seq})
    return out if batch.complete is None else out.with_(complete=padded(batch.complete, extra))


def losses_and_grads(model: LNLN, batch: Batch):
    model.zero_grad(set_to_none=True)
    out = model.train()(batch)
    sum(out.losses.values()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    with torch.no_grad():
        pred = model.eval()(batch.with_(complete=None)).pred
    return out.pred.detach(), {k: v.detach() for k, v in out.losses.items()}, grads, pred


def twin_models(spec: DataSpec, text=TINY, **levers):
    """Two LNLNs with the same weights: without, then with the given levers."""
    torch.manual_seed(0)
    plain = LNLN(replace(LNLNConfig(), text=text), spec)
    fast = LNLN(replace(LNLNConfig(), text=text, **levers), spec)
    fast.load_state_dict(plain.state_dict())
    return plain, fast


def assert_same_training(a, b, rtol=1e-5, atol=1e-6):
    (pa, la, ga, ea), (pb, lb, gb, eb) = a, b
    torch.testing.assert_close(pa, pb, rtol=rtol, atol=atol)
    torch.testing.assert_close(ea, eb, rtol=rtol, atol=atol)
    assert la.keys() == lb.keys() == {"completeness", "adversarial", "sentiment", "reconstruction"}
    for k in la:
        torch.testing.assert_close(la[k], lb[k], rtol=rtol, atol=atol)
    assert ga.keys() == gb.keys() and any(k.startswith("text_encoder.") for k in ga)
    for k in ga:
        torch.testing.assert_close(ga[k], gb[k], rtol=rtol, atol=atol, msg=lambda m: f"gradient of {k}: {m}")


def test_trimming_the_padding_changes_nothing_but_the_lengths():
    """Cut to the batch's longest valid length, the embeddings see shorter sequences; predictions (training and
    evaluation), losses and every gradient are those of the full-length batch."""
    extra = 9
    spec = replace(LEVER_SPEC, text_len=LEVER_SPEC.text_len + extra, audio_len=LEVER_SPEC.audio_len + extra,
                   vision_len=LEVER_SPEC.vision_len + extra)
    batch = padded(random_batch(LEVER_SPEC, 6, seed=2), extra)
    plain, fast = twin_models(spec, trim_padding=True)
    seen = {}
    for name in ("text_encoder", "embed_audio", "embed_vision"):
        getattr(fast, name).register_forward_hook(lambda m, a, o, name=name: seen.setdefault(name, []).append(a[0].shape[1]))
    assert_same_training(losses_and_grads(plain, batch), losses_and_grads(fast, batch))
    longest = {"text_encoder": int(batch.text_mask.sum(1).max()), "embed_audio": int(batch.complete.audio_mask.sum(1).max()),
               "embed_vision": int(batch.complete.vision_mask.sum(1).max())}
    full = {"text_encoder": spec.text_len, "embed_audio": spec.audio_len, "embed_vision": spec.vision_len}
    for name, lengths in seen.items():
        assert lengths[0] == longest[name] < full[name], (name, lengths)  # training: the joint pass
        assert max(lengths) <= longest[name]


def test_evaluation_in_length_order_is_the_same_function_with_less_padding():
    """``by_length``: the split is predicted in batches of similar length and returned in its own order; every
    prediction (and introspection extra) is the one of the split's order, and the trimmed batches are shorter."""
    data = random_batch(LEVER_SPEC, 24, seed=3).with_(complete=None)
    _, fast = twin_models(LEVER_SPEC, trim_padding=True)
    seen = []
    fast.text_encoder.register_forward_hook(lambda m, a, o: seen.append(a[0].shape[1]))
    plain_pred, plain_ex = predict(fast, data, None, LEVER_SPEC.unk_id, batch_size=6, amp=False, extras=True)
    in_order = sum(seen)
    seen.clear()
    pred, ex = predict(fast, data, None, LEVER_SPEC.unk_id, batch_size=6, amp=False, extras=True, by_length=True)
    torch.testing.assert_close(pred, plain_pred, rtol=1e-5, atol=1e-6)
    assert ex.keys() == plain_ex.keys() and "w" in ex
    for k in ex:
        torch.testing.assert_close(ex[k], plain_ex[k], rtol=1e-5, atol=1e-6)
    assert len(seen) == 4 and sum(seen) < in_order, (seen, in_order)  # sorted batches: less text to encode
    assert seen == sorted(seen)


def test_trimming_an_all_padding_modality_keeps_one_position():
    spec = LEVER_SPEC
    batch = random_batch(spec, 3, seed=4)
    none = batch.with_(audio=torch.zeros_like(batch.audio), audio_mask=torch.zeros_like(batch.audio_mask), complete=None)
    plain, fast = twin_models(spec, trim_padding=True)
    with torch.no_grad():
        torch.testing.assert_close(fast.eval()(none).pred, plain.eval()(none).pred, rtol=1e-5, atol=1e-6)


def test_unchanged_rows_are_embedded_once_with_the_same_gradients():
    """A modality whose incomplete row equals its complete one is embedded once and used in both roles: the text
    encoder sees B + K rows (K = rows that differ), and predictions, losses and gradients are those of 2B rows."""
    batch = random_batch(LEVER_SPEC, 8, seed=1)
    plain, fast = twin_models(LEVER_SPEC, share_unchanged=True)
    rows = []
    fast.text_encoder.register_forward_hook(lambda m, a, o: rows.append(o.shape[0]))
    assert_same_training(losses_and_grads(plain, batch), losses_and_grads(fast, batch))
    differ = int((batch.text_ids != batch.complete.text_ids).any(1).sum())
    assert 0 < differ < len(batch)  # the batch has both kinds of rows
    assert rows[0] == len(batch) + differ  # training: B + K rows, not 2B
    assert rows[1] == len(batch)  # evaluation: the incomplete input only


def test_summary_queries_only_in_the_last_layer_change_nothing_but_the_work():
    """``summary_only_last``: the last layer of each unimodal embedding computes the T summary outputs only (its
    feed-forward sees T positions, not T + L); predictions, losses and gradients are those of the full layer."""
    batch = random_batch(LEVER_SPEC, 6, seed=7)
    plain, fast = twin_models(LEVER_SPEC, summary_only_last=True)
    rows = []
    fast.embed_vision.summary.transformer.layers[-1].ff.register_forward_hook(lambda m, a, o: rows.append(a[0].shape[1]))
    assert_same_training(losses_and_grads(plain, batch), losses_and_grads(fast, batch))
    assert rows and set(rows) == {LNLNConfig().n_tokens}


def test_leaving_out_masked_frames_changes_nothing_but_the_lengths():
    """``drop_masked``: dropped and padded frames leave the unimodal embeddings' sequences (after the positional
    embedding); at missing rate 0.5 the evaluation's audio and vision sequences are shorter, and predictions,
    losses and gradients are unchanged."""
    batch = random_batch(LEVER_SPEC, 8, seed=8, rate=0.5)
    plain, fast = twin_models(LEVER_SPEC, drop_masked=True)
    seen = []
    fast.embed_vision.summary.transformer.layers[0].register_forward_hook(lambda m, a, o: seen.append(a[0].shape[1]))
    assert_same_training(losses_and_grads(plain, batch), losses_and_grads(fast, batch))
    T = LNLNConfig().n_tokens
    valid = int(batch.vision_mask.sum(1).max())  # the incomplete input's most kept frames of a row
    assert seen[-1] == T + valid < T + LEVER_SPEC.vision_len  # evaluation: the kept frames only
    with pytest.raises(ValueError, match="drop_masked needs mask_attention"):
        LNLN(replace(LNLNConfig(), drop_masked=True, mask_attention=False), LEVER_SPEC)


def test_dropping_the_masked_positions_keeps_each_rows_valid_positions_in_order():
    from mmsa_core.models.layers import drop_masked_positions

    x = torch.arange(2 * 5, dtype=torch.float).view(2, 5, 1)
    mask = torch.tensor([[True, False, True, False, True], [False, False, False, True, False]])
    out, m = drop_masked_positions(x, mask)
    assert out[0, :, 0].tolist() == [0.0, 2.0, 4.0] and out[1, 0, 0].item() == 8.0  # row 1's other slots: masked
    assert m.tolist() == [[True, True, True], [True, False, False]]


def test_levers_together_on_a_paper_preset():
    """The MOSI preset turns every exact lever on; with them, the paper-sized model trains as without them."""
    levers = ("trim_padding", "share_unchanged", "summary_only_last", "drop_masked")
    assert all(getattr(lnln_preset("mosi"), k) for k in levers)
    assert not any(getattr(LNLNConfig(), k) for k in levers)  # the default preset is untouched
    spec = replace(LEVER_SPEC, text_dim=768)
    batch = padded(random_batch(LEVER_SPEC, 6, seed=5), 0)
    batch = batch.with_(text_feat=torch.randn(6, spec.text_len, 768), complete=batch.complete.with_(
        text_feat=torch.randn(6, spec.text_len, 768)))
    torch.manual_seed(0)
    fast = LNLN(replace(lnln_preset("mosi"), text=FEATURES), spec)
    plain = LNLN(replace(lnln_preset("mosi"), text=FEATURES, **dict.fromkeys(levers, False)), spec)
    plain.load_state_dict(fast.state_dict())
    (pa, la, ga, ea), (pb, lb, gb, eb) = losses_and_grads(plain, batch), losses_and_grads(fast, batch)
    torch.testing.assert_close(pa, pb, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ea, eb, rtol=1e-4, atol=1e-5)
    for k in ga:
        torch.testing.assert_close(ga[k], gb[k], rtol=1e-4, atol=1e-5, msg=lambda m: f"gradient of {k}: {m}")


def test_text_encoder_checkpointing_recomputes_with_the_same_gradients():
    batch = random_batch(LEVER_SPEC, 4, seed=6)
    plain, fast = twin_models(LEVER_SPEC, checkpoint_text=True)
    calls = []
    inner = fast.text_encoder.bert.encoder.layer[0].intermediate  # inside the checkpointed layer
    inner.register_forward_hook(lambda m, a, o: calls.append(torch.is_grad_enabled()))
    assert_same_training(losses_and_grads(plain, batch), losses_and_grads(fast, batch), rtol=0, atol=0)
    assert len(calls) == 3  # training: forward, recomputed in backward; evaluation: one forward


def test_cpu_bf16_autocast(monkeypatch, caplog):
    """Opt-in bf16 on a CPU with native bf16: float32 outputs within bf16 rounding of fp32, not equal to them;
    on a CPU without it, a warning and the fp32 result."""
    batch = random_batch(LEVER_SPEC, 6, seed=7).with_(complete=None)
    plain, fast = twin_models(LEVER_SPEC, cpu_bf16=True)
    plain.eval(), fast.eval()
    with torch.no_grad():
        ref = plain(batch).pred
        monkeypatch.setattr(lnln_module, "cpu_has_native_bf16", lambda: False)
        with caplog.at_level("WARNING"):
            assert torch.equal(fast(batch).pred, ref)
        assert "no native bf16" in caplog.text
        monkeypatch.setattr(lnln_module, "cpu_has_native_bf16", lambda: True)
        out = fast(batch)
    assert out.pred.dtype == torch.float32 and all(v.dtype == torch.float32 for v in out.losses.values())
    diff = (out.pred - ref).abs().max()
    assert 0 < diff < 0.05 * (1 + ref.abs().max()), diff
    assert isinstance(lnln_module.cpu_has_native_bf16(), bool)


# ---------------------------------------------------------------------------------------------- training




@pytest.fixture(scope="module")
def trained(synth_ds, tmp_path_factory):
    """LNLN trained once with its embedded-default preset (lnln_default.yaml) on the embedded default, on one
    thread as the grid and the chapters train it (selected on validation as usual). That the late-fusion baseline
    leads LNLN on this testbed is held over three seeds by tests/test_reference.py, not by one run here."""
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    warn = torch.is_deterministic_algorithms_warn_only_enabled()
    preset = load_config(PRESETS_DIR / "lnln_default.yaml")
    try:
        cfg = replace(preset, train=replace(preset.train, out_dir=str(tmp_path_factory.mktemp("lnln")), progress=False))
        set_seed(cfg.train.seed, True, 1)
        model = build_model("lnln", model_config(cfg), synth_ds.spec)
        t0 = time.perf_counter()
        res = fit(model, synth_ds, cfg.train, cfg.train.out_dir, config_hash(cfg))
        wall = time.perf_counter() - t0
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(det, warn_only=warn)
    print(f"\ntraining LNLN on 1 thread ({preset.train.epochs} epochs): {wall:.1f} s")
    return {"lnln": {"model": model.eval(), "train_s": wall, "best_epoch": res.best_epoch}}


@pytest.mark.slow
def test_completeness_score_tracks_the_text_missing_rate(trained, synth_ds):
    model = trained["lnln"]["model"]
    test = synth_ds["test"].data
    plan = missing.protocol_a(test, None, seed=5, epoch=0, split="test")  # per-sample rates, as in training
    _, ex = predict(model, test, plan, synth_ds.spec.unk_id, extras=True)
    rho = spearman(ex["w"].numpy(), plan.rates[:, 0].numpy())
    print(f"\nSpearman(w, text missing rate) = {rho:.3f}")
    assert rho < -0.5


@pytest.mark.slow
def test_language_dominates(trained, synth_ds):
    """Acc-2 drops more when only the text is corrupted than when only the vision is (same rate). With the
    precomputed text features this failed (the trained LNLN leaned on the audio as much as on the words); through
    the token ids, where a dropped word is really gone, it holds, and chapter 6 says so."""
    model, test, spec = trained["lnln"]["model"], synth_ds["test"].data, synth_ds.spec
    y = test.labels.numpy()

    def acc2(plan):
        return metrics.compute(predict(model, test, plan, spec.unk_id).numpy(), y)["Acc-2 non-0"]

    full = missing.protocol_a(test, 0.8, seed=0, epoch=0, split="test")
    keep_all = lambda t: torch.ones_like(t)  # noqa: E731
    text_only = replace(full, audio_keep=keep_all(full.audio_keep), vision_keep=keep_all(full.vision_keep))
    vision_only = replace(full, text_keep=keep_all(full.text_keep), audio_keep=keep_all(full.audio_keep))
    clean = acc2(None)
    drop_text, drop_vision = clean - acc2(text_only), clean - acc2(vision_only)
    print(f"\nAcc-2 clean {clean:.3f}; drop with text at r=0.8 {drop_text:.3f}, with vision at r=0.8 {drop_vision:.3f}")
    assert drop_text > drop_vision
    assert drop_text > 0.02


@pytest.mark.slow
def test_dropped_frames_cannot_leak(trained, synth_ds):
    """Eval mode: any values at dropped or padded audio/vision frames (and padded text) give the same prediction."""
    model, spec = trained["lnln"]["model"], synth_ds.spec
    data = synth_ds["test"].data.take(torch.arange(64))
    b = missing.apply(data, missing.protocol_a(data, 0.5, 0, 0, "test"), spec.unk_id)
    g = torch.Generator().manual_seed(0)
    noisy = lambda x, keep: torch.where(keep[..., None], x, 100 * torch.randn(x.shape, generator=g))  # noqa: E731
    garbage = b.with_(audio=noisy(b.audio, b.audio_mask), vision=noisy(b.vision, b.vision_mask),
                      text_feat=noisy(b.text_feat, b.text_mask.bool()))
    assert (~b.audio_mask).any() and (~b.vision_mask).any()
    model.eval()
    with torch.no_grad():
        p, p_garbage = model(b).pred, model(garbage).pred
        # control: the same change at KEPT frames does change the prediction (the test can fail)
        p_kept = model(b.with_(audio=noisy(b.audio, ~b.audio_mask), vision=noisy(b.vision, ~b.vision_mask))).pred
    torch.testing.assert_close(p_garbage, p, rtol=0, atol=1e-5)
    assert (p_kept - p).abs().max() > 1e-2


@pytest.mark.slow
def test_introspection_extras(trained, synth_ds):
    model, test, spec = trained["lnln"]["model"], synth_ds["test"].data, synth_ds.spec
    plan = missing.protocol_a(test, 0.5, 0, 0, "test")
    _, ex = predict(model, test, plan, spec.unk_id, extras=True)
    assert "rec_error" not in ex and ex["w"].shape == (len(test),)  # evaluation is one pass by default
    model.introspect = True
    try:
        _, ex = predict(model, test, plan, spec.unk_id, extras=True)
    finally:
        model.introspect = False
    assert ex["rec_error"].shape == (len(test), 3) and (ex["rec_error"] >= 0).all()
    assert ex["disc_acc"].shape == (len(test),) and ((ex["disc_acc"] >= 0) & (ex["disc_acc"] <= 1)).all()
    assert ex["hyper_attn_vision"].shape == (len(test), 3, 8, 8)


def test_the_discriminator_recorder_reads_every_epoch_and_changes_nothing(synth_ds, tmp_path, restore_torch_globals):
    """Chapter 6 records the discriminator while its run trains: with the recorder held by fit, the run is the
    same (history and weights), the recorder has every epoch's training and validation accuracy, and the hook is
    gone once fit returns."""
    from mmsa_core.book import DiscriminatorRecorder
    from mmsa_core.config import load_config
    from mmsa_core.train import fit
    from mmsa_core.utils import set_seed

    ds = replace(synth_ds, splits={k: replace(v, data=v.data.take(torch.arange(40))) for k, v in synth_ds.splits.items()})
    cfg = load_config("lnln_default")
    t = replace(cfg.train, epochs=2, progress=False, threads=1)

    def once(name, hook):
        set_seed(t.seed, t.deterministic, 1)
        net = build_model("lnln", model_config(cfg), ds.spec)
        return net, fit(net, ds, replace(t, out_dir=str(tmp_path / name)), tmp_path / name, name, forward_hook=hook)

    rec = DiscriminatorRecorder()
    (a, ra), (b, rb) = once("plain", None), once("watched", rec)
    assert ra.history == rb.history
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    tab = rec.frame()
    assert tab["epoch"].tolist() == [0, 1]
    for c in ("disc. accuracy (train)", "disc. accuracy (valid)"):
        assert tab[c].between(0, 1).all() and tab[c].notna().all(), tab
    b.train()
    b(ds["train"].data.take(torch.arange(4)))
    assert rec.epoch == 1  # fit removed the hook: this forward is not seen
