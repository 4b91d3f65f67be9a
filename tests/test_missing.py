"""Missing-data protocols A (token/frame) and B (whole modality): rates, masks, special tokens, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mmsa_core import missing
from mmsa_core.data.mmsa import Batch

UNK = 7  # deliberately not 100: the protocol must use the id it is given


def fake_batch(n=2000, Lt=12, La=16, Lv=10, Dt=3, Da=2, Dv=4, seed=0, pad=5.0) -> Batch:
    """Random sequences of random lengths; every padding position holds ``pad`` (not zero), so that a protocol
    touching padding is visible."""
    g = torch.Generator().manual_seed(seed)
    ntok = torch.randint(2, Lt + 1, (n,), generator=g)  # [CLS] ... [SEP]: at least 2 tokens
    tmask = (torch.arange(Lt)[None] < ntok[:, None]).long()
    ids = torch.randint(1000, 3000, (n, Lt), generator=g)
    ids[:, 0] = 101
    ids[torch.arange(n), ntok - 1] = 102
    ids = torch.where(tmask.bool(), ids, torch.zeros_like(ids))
    la, lv = torch.randint(0, La + 1, (n,), generator=g), torch.randint(1, Lv + 1, (n,), generator=g)
    amask, vmask = torch.arange(La)[None] < la[:, None], torch.arange(Lv)[None] < lv[:, None]

    def seq(L, D, m):
        x = torch.rand(n, L, D, generator=g) + 0.5  # never zero
        return torch.where(m[..., None], x, torch.full_like(x, pad))

    return Batch(text_ids=ids, text_mask=tmask, text_segment=torch.zeros_like(ids),
                 text_feat=seq(Lt, Dt, tmask.bool()), audio=seq(La, Da, amask), audio_mask=amask,
                 vision=seq(Lv, Dv, vmask), vision_mask=vmask, labels=torch.rand(n, generator=g) * 6 - 3,
                 index=torch.arange(n))


@pytest.fixture(scope="module")
def data():
    return fake_batch()


def _tol(p: float, m: int, z: float = 5.0) -> float:
    """z standard errors of a proportion p estimated from m independent Bernoulli draws."""
    return z * math.sqrt(max(p * (1 - p), 1e-12) / m)


def _check_invariants(data: Batch, out: Batch, plan: missing.MissingPlan):
    """What every corruption must satisfy, whatever was dropped."""
    can_t, can_a, can_v = missing.droppable(data)
    tmask = data.text_mask.bool()
    n_tok = tmask.sum(1)
    rows = torch.arange(len(data))
    # [CLS] (position 0) and [SEP] (last valid position) are never dropped; padding is never touched
    assert (out.text_ids[:, 0] == 101).all() and (out.text_ids[rows, n_tok - 1] == 102).all()
    assert torch.equal(out.text_ids[~tmask], data.text_ids[~tmask])
    assert torch.equal(out.text_feat[~tmask], data.text_feat[~tmask])
    assert torch.equal(out.text_mask, data.text_mask) and torch.equal(out.text_segment, data.text_segment)
    for m, can in (("audio", can_a), ("vision", can_v)):
        x, x0 = getattr(out, m), getattr(data, m)
        mask0 = getattr(data, f"{m}_mask")
        assert torch.equal(x[~mask0], x0[~mask0])  # padding frames keep their values
        assert not getattr(out, f"{m}_mask")[~mask0].any()
    # dropped text tokens are UNK with zero features; kept ones unchanged
    tdrop = ~plan.text_keep
    assert not (tdrop & ~can_t).any()
    assert (out.text_ids[tdrop] == UNK).all() and (out.text_feat[tdrop] == 0).all()
    assert torch.equal(out.text_ids[~tdrop], data.text_ids[~tdrop])
    kept = ~tdrop & plan.present[:, :1]  # (a missing text modality loses the features of [CLS]/[SEP] too)
    assert torch.equal(out.text_feat[kept], data.text_feat[kept])
    # dropped frames are exactly zero and leave the masks; kept valid frames are unchanged and stay in them
    for m, keep in (("audio", plan.audio_keep), ("vision", plan.vision_keep)):
        x, x0, mask0, mask = getattr(out, m), getattr(data, m), getattr(data, f"{m}_mask"), getattr(out, f"{m}_mask")
        dropped = mask0 & ~keep
        assert (x[dropped] == 0).all() and not mask[dropped].any()
        assert torch.equal(x[mask0 & keep], x0[mask0 & keep]) and mask[mask0 & keep].all()
    # the achieved rates are what was dropped, over what could be
    for i, (keep, can) in enumerate(zip((plan.text_keep, plan.audio_keep, plan.vision_keep), (can_t, can_a, can_v))):
        exp = (~keep & can).sum(1).float() / can.sum(1).clamp(min=1).float()
        assert torch.allclose(plan.rates[:, i], exp)
    assert out.complete is data and torch.equal(out.present, plan.present) and torch.equal(out.mode, plan.mode)


# ------------------------------------------------------------------------------------------ protocol A

@pytest.mark.parametrize("r", [0.1, 0.3, 0.5, 0.9])
def test_protocol_a_achieves_the_rate(data, r):
    plan = missing.protocol_a(data, r, seed=3, epoch=0, split="test")
    out = missing.apply(data, plan, UNK)
    _check_invariants(data, out, plan)
    for keep, can in zip((plan.text_keep, plan.audio_keep, plan.vision_keep), missing.droppable(data)):
        m = int(can.sum())  # ~10k-15k independent Bernoulli(r) draws per modality
        achieved = float((~keep & can).sum()) / m
        assert abs(achieved - r) < _tol(r, m), (achieved, r, m)
    assert (plan.mode == 0).all() and plan.present.all()


def test_protocol_a_edges(data):
    none = missing.protocol_a(data, 0.0, 0, 0, "test")
    assert none.text_keep.all() and none.audio_keep.all() and none.vision_keep.all() and (none.rates == 0).all()
    out = missing.apply(data, none, UNK)
    for k in ("text_ids", "text_feat", "audio", "audio_mask", "vision", "vision_mask"):
        assert torch.equal(getattr(out, k), getattr(data, k)), k
    every = missing.protocol_a(data, 1.0, 0, 0, "test")
    cans = missing.droppable(data)
    for keep, can in zip((every.text_keep, every.audio_keep, every.vision_keep), cans):
        assert torch.equal(~keep, can)
    has = [c.any(1) for c in cans]
    assert torch.equal(every.rates, torch.stack(has, 1).float())  # 1 where anything could be dropped
    _check_invariants(data, missing.apply(data, every, UNK), every)
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="missing rate"):
            missing.protocol_a(data, bad, 0, 0, "test")


def test_protocol_a_training_draw(data):
    plan = missing.protocol_a(data, None, seed=1, epoch=0, split="train")
    _check_invariants(data, missing.apply(data, plan, UNK), plan)
    n = len(data)
    for i, can in enumerate(missing.droppable(data)):
        rates, m = plan.rates[:, i], can.sum(1).float()
        ok = m > 0
        # half of the samples get r = 0; the other half r ~ U(0, 1), which drops nothing with probability
        # E[(1 - r)^m] = 1 / (m + 1): the expected share of samples with nothing dropped is exact
        p_zero = float((0.5 + 0.5 / (m[ok] + 1)).mean())
        zero = float((rates[ok] == 0).float().mean())
        assert abs(zero - p_zero) < _tol(p_zero, int(ok.sum())), (i, zero, p_zero)
        # and the others are spread over (0, 1]: mean achieved rate over all samples = 0.5 * 0.5
        assert abs(float(rates[ok].mean()) - 0.25) < 5 * 0.3 / math.sqrt(n)
        assert float((rates > 0.8).float().mean()) > 0.05


def test_protocol_a_is_deterministic_and_changes_with_epoch_split_and_seed(data):
    a = missing.protocol_a(data, None, 1111, 3, "train")
    b = missing.protocol_a(data, None, 1111, 3, "train")
    for k in ("text_keep", "audio_keep", "vision_keep", "rates"):
        assert torch.equal(getattr(a, k), getattr(b, k))
    for other in (missing.protocol_a(data, None, 1111, 4, "train"), missing.protocol_a(data, None, 1112, 3, "train"),
                  missing.protocol_a(data, None, 1111, 3, "valid")):
        assert not torch.equal(a.audio_keep, other.audio_keep) and not torch.equal(a.text_keep, other.text_keep)
    # a fixed test rate is the same whatever python number type carries it
    x = missing.protocol_a(data, 0.5, 0, 0, "test")
    for same in (np.float64(0.5), np.float32(0.5), torch.tensor(0.5).item()):
        assert torch.equal(x.text_keep, missing.protocol_a(data, same, 0, 0, "test").text_keep)


def _apply_in_batches(data, plan, batch_size, perm):
    parts = []
    for s in range(0, len(data), batch_size):
        idx = perm[s : s + batch_size]
        parts.append((idx, missing.apply(data.take(idx), plan.take(idx), UNK)))
    return parts


@pytest.mark.parametrize("protocol,level", [("A", None), ("A", 0.4), ("B", 0.7)])
def test_plan_does_not_depend_on_batching(data, protocol, level):
    plan = missing.draw(protocol, data, level, 5, 2, "train")
    whole = missing.apply(data, plan, UNK)
    for bs in (1000, 64, 7):
        perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(bs))
        for idx, out in _apply_in_batches(data, plan, bs, perm):
            for k in ("text_ids", "text_feat", "audio", "audio_mask", "vision", "vision_mask", "present", "rates", "mode"):
                assert torch.equal(getattr(out, k), getattr(whole, k)[idx]), (bs, k)


# ------------------------------------------------------------------------------------------ protocol B

@pytest.mark.parametrize("eta", [0.3, 0.7])
def test_protocol_b_mode_frequencies(eta):
    big = fake_batch(n=12000, Lt=4, La=3, Lv=3)
    plan = missing.protocol_b(big, eta, seed=0, epoch=0, split="test")
    n = len(big)
    freq = torch.bincount(plan.mode, minlength=7).float() / n
    assert abs(float(freq[0]) - (1 - eta)) < _tol(1 - eta, n)
    for m in range(1, 7):
        assert abs(float(freq[m]) - eta / 6) < _tol(eta / 6, n), (m, float(freq[m]))
    assert torch.equal(plan.present, torch.tensor(missing.MODES)[plan.mode])


def test_protocol_b_edges_and_errors(data):
    assert (missing.protocol_b(data, 0.0, 0, 0, "test").mode == 0).all()
    assert (missing.protocol_b(data, 1.0, 0, 0, "test").mode > 0).all()
    # eta = 1 given as an int draws the same modes as 1.0
    assert torch.equal(missing.protocol_b(data, 1, 0, 0, "test").mode, missing.protocol_b(data, 1.0, 0, 0, "test").mode)
    with pytest.raises(ValueError, match="eta"):
        missing.protocol_b(data, 1.2)
    with pytest.raises(ValueError, match="mode"):
        missing.protocol_b(data, mode=7)
    with pytest.raises(ValueError, match="unknown missing-data protocol"):
        missing.draw("C", data, 0.1, 0, 0, "test")
    # B's training default is eta = 0.7; A's is the random per-sample rates
    assert torch.equal(missing.draw("B", data, None, 1, 0, "train").mode, missing.protocol_b(data, 0.7, 1, 0, "train").mode)


@pytest.mark.parametrize("mode", range(7))
def test_protocol_b_fixed_mode(data, mode):
    plan = missing.protocol_b(data, mode=mode)
    present = torch.tensor(missing.MODES[mode])
    assert (plan.mode == mode).all() and (plan.present == present).all()
    out = missing.apply(data, plan, UNK)
    _check_invariants(data, out, plan)
    can_t, can_a, can_v = missing.droppable(data)
    tmask = data.text_mask.bool()
    if present[0]:
        assert torch.equal(out.text_ids, data.text_ids) and torch.equal(out.text_feat, data.text_feat)
    else:  # every droppable token is [UNK], and no text feature at all reaches the model (not even [CLS]/[SEP])
        assert torch.equal(out.text_ids[can_t], torch.full_like(out.text_ids[can_t], UNK))
        assert (out.text_feat[tmask] == 0).all()
    for i, (m, can) in enumerate((("audio", can_a), ("vision", can_v)), start=1):
        x, mask = getattr(out, m), getattr(out, f"{m}_mask")
        if present[i]:
            assert torch.equal(x, getattr(data, m)) and torch.equal(mask, getattr(data, f"{m}_mask"))
        else:
            assert (x[can] == 0).all() and not mask.any()
    has = torch.stack([c.any(1) for c in (can_t, can_a, can_v)], 1)
    assert torch.equal(plan.rates, (~present[None] & has).float())
    assert missing.MODE_NAMES[mode].count(",") + 1 == int(present.sum())


def test_protocol_b_is_deterministic(data):
    a, b = missing.protocol_b(data, 0.7, 4, 1, "train"), missing.protocol_b(data, 0.7, 4, 1, "train")
    assert torch.equal(a.mode, b.mode)
    assert not torch.equal(a.mode, missing.protocol_b(data, 0.7, 4, 2, "train").mode)


def test_derive_seed_is_stable():
    # the same in every process and on every machine (Python's hash() is salted per process): pin one value
    assert missing.derive_seed("A", 0, 0, "test", 0.5) == 3088196246665513792
    assert missing.derive_seed("A", 0, 0, "test", 0.5) != missing.derive_seed("A", 0, 0, "test", 0.6)
    assert missing.RATES == (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
