"""A frozen pretrained text encoder (``finetune=False``): no dropout, no weights in checkpoints, zero states at
padding, each row encoded alone, and a per-process cache of each row's states
(:class:`~mmsa_core.models.text.FrozenStates`) that gives the states a fresh pass gives, bit for bit, whatever the
batch and padding the row came in."""

from __future__ import annotations

import pytest
import torch

from mmsa_core.models.text import TextEncoder, TextEncoderConfig, frozen_states

VOCAB = 2048


def _save_bert(d, dropout=0.0):
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=32, hidden_dropout_prob=dropout,
                         attention_probs_dropout_prob=dropout), add_pooling_layer=False).save_pretrained(d)
    return str(d)


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return _save_bert(tmp_path_factory.mktemp("bert"))


def _batch(n, width, seed):
    """Right-padded rows: [CLS]-like first token, random words, valid lengths 2..width."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, width + 1, (n,), generator=g)
    ids = torch.randint(5, VOCAB, (n, width), generator=g)
    mask = (torch.arange(width)[None] < lengths[:, None]).long()
    return ids * mask, mask


def _encoder(path, **kw):
    return TextEncoder(TextEncoderConfig(kind="pretrained", name_or_path=path, finetune=False, **kw), 8)


def _run(enc, ids, mask):
    return enc(ids, mask, torch.zeros_like(ids), None)


def test_cached_states_equal_a_fresh_pass_bit_for_bit(bert_dir):
    enc, plain = _encoder(bert_dir), _encoder(bert_dir, cache=False)
    frozen_states(bert_dir).clear()
    ids, mask = _batch(12, 10, seed=0)
    cold = _run(enc, ids, mask)  # every row computed (and stored)
    assert enc.states.misses == 12 and enc.states.hits == 0
    # the same rows in another order, in a wider batch with other rows: read back from the cache
    other, other_mask = _batch(5, 14, seed=1)
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(2))
    wide = torch.cat([torch.nn.functional.pad(ids[perm], (0, 4)), other])
    wide_mask = torch.cat([torch.nn.functional.pad(mask[perm], (0, 4)), other_mask])
    warm = _run(enc, wide, wide_mask)
    assert enc.states.hits == 12 and enc.states.misses == 17
    assert torch.equal(warm[:12, :10], cold[perm]) and not warm[:12, 10:].any()
    # a fresh pass without the cache, over a third batch composition: the same bits at valid positions
    fresh = _run(plain, ids[perm[:7]], mask[perm[:7]])
    assert torch.equal(fresh, cold[perm[:7]])
    with torch.no_grad():
        bert = plain.bert(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids)).last_hidden_state
    # zero at padding, the encoder's states elsewhere (up to the last bits: this pass ran at the batch's width)
    torch.testing.assert_close(cold, bert * mask[..., None], rtol=0, atol=1e-5)
    assert not cold[mask == 0].any()
    assert not torch.equal(bert, bert * mask[..., None])  # (the padding states were not zero: the zeroing acts)


def test_a_changed_token_weight_or_dtype_is_a_new_entry(bert_dir):
    enc = _encoder(bert_dir)
    frozen_states(bert_dir).clear()
    ids, mask = _batch(6, 8, seed=3)
    first = _run(enc, ids, mask)
    changed = ids.clone()
    changed[2, 1] = 4  # one token of one row ([UNK]-like)
    second = _run(enc, changed, mask)
    assert (enc.states.hits, enc.states.misses) == (5, 7)
    assert torch.equal(second[[0, 1, 3, 4, 5]], first[[0, 1, 3, 4, 5]]) and not torch.equal(second[2], first[2])
    with torch.no_grad():  # other weights (an in-place change, as load_state_dict makes): nothing is reused
        enc.bert.get_input_embeddings().weight.add_(0.5)
    third = _run(enc, ids, mask)
    assert enc.states.misses == 13 and not torch.equal(third, first)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = _run(enc, ids, mask)
    assert enc.states.misses == 19 and not torch.equal(low, third)  # computed in bf16, not read back


def test_the_cache_keeps_at_most_its_budget():
    from mmsa_core.models.text import FrozenStates

    c = FrozenStates(max_mb=3 * 64 * 4 / 2**20)  # room for three rows of 64 floats
    for k in range(5):
        c.put(k, torch.full((64,), float(k)))
    assert list(c.rows) == [2, 3, 4] and c.bytes == 3 * 64 * 4
    assert c.get(2) is not None
    c.put(5, torch.zeros(64))
    assert list(c.rows) == [4, 2, 5]  # the least recently used (3) left
    c.put(6, torch.zeros(1000))  # larger than the whole budget: not kept
    assert 6 not in c.rows


def test_a_frozen_encoder_has_no_dropout_and_no_weights_in_checkpoints(tmp_path):
    path = _save_bert(tmp_path / "bert", dropout=0.5)
    enc, tuned = _encoder(path, cache=False), TextEncoder(TextEncoderConfig(kind="pretrained", name_or_path=path), 8)
    ids, mask = _batch(4, 8, seed=4)
    model = torch.nn.ModuleDict({"text": enc}).train()
    assert model.training and not enc.bert.training
    assert torch.equal(_run(enc, ids, mask), _run(enc, ids, mask))  # no dropout while the model trains
    tuned.train()
    assert not torch.equal(_run(tuned, ids, mask), _run(tuned, ids, mask))  # (a fine-tuned one has dropout)
    assert not any(k.startswith("text.bert.") for k in model.state_dict())  # the weights are the folder's
    assert any(k.startswith("bert.") for k in tuned.state_dict())
    # a checkpoint without them keeps the loaded weights; one with them (e.g. a fine-tuned run's) loads them
    before = _run(enc, ids, mask)
    model.load_state_dict(model.state_dict())
    assert torch.equal(_run(enc, ids, mask), before)
    with torch.no_grad():
        for p in tuned.parameters():
            p.mul_(1.1)
    enc.load_state_dict(tuned.state_dict())
    tuned.eval()
    # (the fine-tuned encoder ran the batch at its padded width, the frozen one each row alone: the last bits differ)
    torch.testing.assert_close(_run(enc, ids, mask), _run(tuned, ids, mask) * mask[..., None], rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["baseline", "lnln"])
def test_training_with_the_cache_is_training_without_it(tmp_path, bert_dir, name, restore_torch_globals):
    """The same run with the cache and without it: the same validation scores and test predictions, bit for
    bit; the cache was read (the validation plan repeats every epoch)."""
    from test_gpu_paths import TINY

    from conftest import make_mmsa_splits
    from mmsa_core import evaluate as E, missing
    from mmsa_core import train as trainer
    from mmsa_core.config import TrainConfig, from_dict
    from mmsa_core.data.mmsa import load_mmsa, write_mmsa
    from mmsa_core.models import build_model, get_model_class
    from mmsa_core.utils import set_seed

    ds = load_mmsa(write_mmsa(tmp_path / "tiny.pkl", make_mmsa_splits(**TINY)), name="tiny")
    frozen_states(bert_dir).clear()
    out = {}
    for cache in (True, False):
        set_seed(1111, True, 1)
        cfg_cls, _ = get_model_class(name)
        model = build_model(name, from_dict(cfg_cls, {"text": {"kind": "pretrained", "name_or_path": bert_dir,
                                                              "finetune": False, "cache": cache}}), ds.spec)
        cfg = TrainConfig(epochs=2, batch_size=4, eval_batch_size=4, progress=False, threads=1, seed=1111,
                          protocol="A", out_dir=str(tmp_path / f"run{cache}"))
        res = trainer.fit(model, ds, cfg, cfg.out_dir, "hash", {"model_name": name})
        test = ds["test"].data
        pred = E.predict(model, test, missing.protocol_a(test, 0.5, 0, 0, "test"), ds.spec.unk_id, batch_size=4)
        out[cache] = (res.best_epoch, res.history, pred)
    states = frozen_states(bert_dir)
    assert states.hits > 0 and states.misses > 0
    assert out[True][0] == out[False][0] and out[True][1] == out[False][1]  # every epoch's losses and scores
    assert torch.equal(out[True][2], out[False][2])


def test_the_testbed_text_features_are_the_frozen_minilm_states(restore_torch_globals):
    """The embedded pickle's ``text`` key holds MiniLM's states of the complete sentences: a frozen MiniLM run on
    the same token ids gives them, up to the last bits (the pickle's were computed in batches of 64 at the padded
    width, the frozen encoder's row by row), so the two text paths agree on complete input."""
    from mmsa_core.data import synth

    torch.set_num_threads(1)
    split = synth.make_split(synth.SHAPES["small"], 20, 7, "test")
    tb = torch.from_numpy(split["text_bert"]).long()
    got = _run(_encoder("minilm"), tb[:, 0], tb[:, 1])
    torch.testing.assert_close(got, torch.from_numpy(split["text"]), rtol=0, atol=1e-5)
