"""The embedded default dataset: a seeded, MOSI-like corpus written in the MMSA pickle format.

What it is: English "utterances" made of real bert-base-uncased WordPiece tokens (our lexicon in
:mod:`mmsa_core.data.lexicon`), a sentiment label in [-3, 3] computed from the words (negations flip,
intensifiers scale, annotator noise, rounded to 0.2 so exact zeros exist), and audio / vision frame
sequences whose sentiment signal is weaker (audio) and weakest (vision), appearing only on some frames.
A fraction of samples are "conflicting": their audio and vision express the opposite sentiment.

What it is not: real speech or faces, nor real BERT features. The ``text`` key holds non-contextual
features (a fixed random vector per token plus its lexicon score along one direction), standing in for
the precomputed BERT features of the real pickles; models that read token ids (LNLN) see real tokens.

Every number comes from ``numpy.random.default_rng(seed)``: same seed, same file, on every machine.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import lexicon as lx
from .mmsa import write_mmsa


@dataclass
class SynthShape:
    n_train: int
    n_valid: int
    n_test: int
    text_len: int
    text_dim: int
    audio_len: int
    audio_dim: int
    vision_len: int
    vision_dim: int


SHAPES = {
    # small enough that every chapter trains in CI in about a minute
    "small": SynthShape(600, 200, 400, 24, 128, 32, 5, 32, 20),
    # the full CMU-MOSI shapes and sizes (unaligned_50), for benchmarks
    "mosi": SynthShape(1284, 229, 686, 50, 768, 375, 5, 500, 20),
}

# bumped whenever the generator's output changes, so that a cached file of an older generator is never reused
VERSION = 2
CONFLICT_FRACTION = 0.12  # share of samples whose audio and vision contradict the words
AUDIO_STRENGTH, VISION_STRENGTH = 0.55, 0.2  # how strongly each non-verbal channel follows the label
# per-sample noise on the non-verbal sentiment signal; audio's 0.5 (was 0.35) keeps a simple per-modality fit's
# test correlation at text > audio > vision on every seed (at 0.35 audio matched text on some seeds)
AUDIO_NOISE, VISION_NOISE = 0.5, 0.8


def _sentence(rng, max_words: int):
    """Words, token ids and the lexicon score of one utterance."""
    sent_words = list(lx.SENTIMENT)
    neutral = list(lx.NEUTRAL)
    n_words = int(rng.integers(4, max_words + 1))
    n_phr = int(rng.choice([0, 1, 1, 2, 2, 3]))
    words, score = [], 0.0
    slots = sorted(rng.choice(n_words, size=min(n_phr, n_words), replace=False).tolist())
    for i in range(n_words):
        if slots and i == slots[0]:
            slots.pop(0)
            w = sent_words[int(rng.integers(len(sent_words)))]
            s = lx.SENTIMENT[w][1]
            phrase = [w]
            u = rng.random()
            if u < 0.2:
                q = list(lx.NEGATIONS)[int(rng.integers(len(lx.NEGATIONS)))]
                phrase, s = [q] + phrase, -0.8 * s
            elif u < 0.5:
                q = list(lx.INTENSIFIERS)[int(rng.integers(len(lx.INTENSIFIERS)))]
                phrase, s = [q] + phrase, s * lx.INTENSIFIERS[q][1]
            words += phrase
            if len(words) <= max_words:  # a phrase cut off by the length limit does not count
                score += s
        else:
            words.append(neutral[int(rng.integers(len(neutral)))])
    return words[:max_words], score


def _token_id(w: str) -> int:
    for table in (lx.SENTIMENT, lx.INTENSIFIERS):
        if w in table:
            return table[w][0]
    return lx.NEGATIONS.get(w, lx.NEUTRAL.get(w))


def _token_table(dim: int, seed: int) -> dict[int, np.ndarray]:
    """Non-contextual 'text features' per token id: a fixed random vector plus score along one axis."""
    rng = np.random.default_rng([seed, 7])
    axis = rng.normal(size=dim)
    axis /= np.linalg.norm(axis)
    scores = {lx.SENTIMENT[w][0]: lx.SENTIMENT[w][1] for w in lx.SENTIMENT}
    ids = sorted({_token_id(w) for w in (*lx.SENTIMENT, *lx.NEGATIONS, *lx.INTENSIFIERS, *lx.NEUTRAL)}
                 | {lx.UNK_ID, lx.CLS_ID, lx.SEP_ID})
    table = {i: (rng.normal(size=dim) / np.sqrt(dim) + 0.5 * scores.get(i, 0.0) * axis).astype(np.float32) for i in ids}
    table[lx.PAD_ID] = np.zeros(dim, np.float32)
    return table


def _pattern(D: int, seed: int, modality: str) -> np.ndarray:
    """The direction along which a non-verbal channel carries sentiment: one per (seed, modality), the SAME in
    every split (drawn per split, a model trained on train could not transfer it to test)."""
    rng = np.random.default_rng([seed, {"audio": 8, "vision": 9}[modality]])
    pattern = rng.normal(size=D)
    return pattern / np.linalg.norm(pattern)


def _frames(rng, n, L, D, signal, strength, pattern):
    """(n, L, D) frames: noise, plus ``signal`` along ``pattern`` on a random ~30% of the frames."""
    carrier = (rng.random((n, L)) < 0.3).astype(np.float32)
    x = rng.normal(scale=1.0, size=(n, L, D)).astype(np.float32)
    x += (strength * 3.0 * signal)[:, None, None] * carrier[:, :, None] * pattern[None, None, :].astype(np.float32)
    lengths = rng.integers(L // 2, L + 1, size=n)
    x[np.arange(L)[None, :] >= lengths[:, None]] = 0.0
    return x.astype(np.float32), lengths.astype(np.int64)


def make_split(shape: SynthShape, n: int, seed: int, split: str) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([seed, {"train": 0, "valid": 1, "test": 2}[split]])
    table = _token_table(shape.text_dim, seed)
    L = shape.text_len
    ids = np.zeros((n, L), np.int64)
    mask = np.zeros((n, L), np.int64)
    raw, labels = [], np.zeros(n, np.float32)
    for i in range(n):
        words, score = _sentence(rng, L - 2)
        toks = [lx.CLS_ID] + [_token_id(w) for w in words] + [lx.SEP_ID]
        ids[i, : len(toks)] = toks
        mask[i, : len(toks)] = 1
        raw.append(" ".join(words))
        y = np.clip(0.9 * score + rng.normal(scale=0.25), -3, 3)
        labels[i] = np.round(y * 5) / 5 + 0.0  # annotator averages on a 0.2 grid; "+ 0.0" turns -0.0 into 0.0
    text = np.stack([np.stack([table[t] for t in row]) for row in ids]).astype(np.float32)
    # non-verbal channels: follow the label, except for conflicting samples, which show the opposite
    conflict = rng.random(n) < CONFLICT_FRACTION
    felt = np.where(conflict, -labels, labels) / 3.0
    a_sig = felt + rng.normal(scale=AUDIO_NOISE, size=n)
    v_sig = felt + rng.normal(scale=VISION_NOISE, size=n)
    audio, a_len = _frames(rng, n, shape.audio_len, shape.audio_dim, a_sig, AUDIO_STRENGTH,
                           _pattern(shape.audio_dim, seed, "audio"))
    vision, v_len = _frames(rng, n, shape.vision_len, shape.vision_dim, v_sig, VISION_STRENGTH,
                            _pattern(shape.vision_dim, seed, "vision"))
    return {
        "id": np.array([f"synth_{split}_{i:05d}" for i in range(n)]),
        "raw_text": np.array(raw),
        "text": text,
        "text_bert": np.stack([ids, mask, np.zeros_like(ids)], axis=1).astype(np.float32),
        "audio": audio, "audio_lengths": a_len,
        "vision": vision, "vision_lengths": v_len,
        "regression_labels": labels.astype(np.float32),
        "classification_labels": (np.sign(labels) + 1).astype(np.float32),  # 0 neg, 1 neutral, 2 pos
        "conflicting": conflict,
    }


def generate(out, shape: str = "small", seed: int = 0) -> Path:
    """Write the embedded dataset as an MMSA pickle at ``out`` and return its path."""
    if shape not in SHAPES:
        raise ValueError(f"unknown synth shape {shape!r}; expected one of {sorted(SHAPES)}")
    sh = SHAPES[shape]
    sizes = {"train": sh.n_train, "valid": sh.n_valid, "test": sh.n_test}
    return write_mmsa(out, {s: make_split(sh, n, seed, s) for s, n in sizes.items()})


def default_path(shape: str = "small", seed: int = 0) -> Path:
    """Where the embedded dataset is cached (``$MMSA_CACHE`` or ``~/.cache/mmsa_book``)."""
    import os

    root = Path(os.environ.get("MMSA_CACHE", Path.home() / ".cache" / "mmsa_book"))
    return root / f"synth_{shape}_seed{seed}_v{VERSION}.pkl"


def ensure(shape: str = "small", seed: int = 0) -> Path:
    """The embedded dataset's path, generating it once if it is not cached yet."""
    p = default_path(shape, seed)
    if not p.exists():
        generate(p, shape, seed)
    return p


def describe(shape: str = "small") -> dict:
    return asdict(SHAPES[shape])
