"""The embedded default dataset: a seeded testbed with ground truth, written in the MMSA pickle format.

**ours** throughout: no paper specifies such a generator. It puts in the structure that LNLN and ProMMA rely on, as
named knobs (:class:`Testbed`), and records the truth beside the data so that the book can score every mechanism.

The generative model, per sample i (everything Gaussian, so the truth can be computed exactly):

- a **shared** sentiment latent ``s ~ N(0, 1)`` that every modality expresses, and one **private** latent per
  modality ``p_m ~ N(0, 1)`` that only modality m carries;
- each modality's sentiment **content** ``c_m = sqrt(rho_m) s + sqrt(1 - rho_m) p_m``. ``rho_m`` (the
  **redundancy**) is the share of m's content that the other modalities also carry. It is drawn per sample: a
  sample-level ``rho ~ Beta(a, b)`` (the variant sets a, b), jittered per modality on the logit scale;
- the **label** ``y = clip(kappa * (w_l c_l + w_a c_a + w_v c_v) + annotator noise, -3, 3)`` rounded to 0.2.
  The weights ``w`` make language dominant (as in real MSA data); private parts move the label, so fusion beats the
  best single modality, and a missing modality is only partly predictable from the present ones;
- **text**: real bert-base-uncased WordPiece tokens. A sentence holds K in {0..3} sentiment phrases (a word, or a
  negation / intensifier and a word) among neutral words; each phrase's lexicon score is the nearest in our
  lexicon to ``TEXT_SCALE * c_l`` plus phrase noise. The ``text`` key holds the packaged MiniLM's (all-MiniLM-L6-v2)
  contextual states of the complete sentence, as real pickles hold BERT states: a dropped token's state is zeroed,
  but its neighbours' states still encode it through context (precomputed features leak dropped words);
- **audio / vision**: every valid frame is ``gain * c_m * u_m + cue * (2 rho - 1) * w_m + N(0, I)`` for a fixed
  unit direction ``u_m`` (the same in every split) and a second, orthogonal direction ``w_m`` that shows how
  congruent the speaker is (the sample's redundancy; the per-sample cue that lets an evaluator decide which
  missing modality is worth generating). ``gain`` is set so that the content is recovered from all valid frames
  with the variance the testbed names, whatever the sequence length.

Two named variants differ only in redundancy: ``redundant`` (missing modalities largely predictable from the
present ones: generation and reconstruction should help) and ``complementary`` (mostly private content:
generated stand-ins are close to noise, and feeding them should hurt).

The truth (:func:`truth`, written beside the pickle as ``<file>.truth.npz``) holds per sample the latents, the
contents, the redundancies, the **predictability** of each modality from the other two (R^2 of its content
given their complete observations: how useful a perfect generator's stand-in can be), which samples conflict,
and the phrases of each sentence; :mod:`mmsa_core.oracle` computes the Bayes-optimal prediction from it.

Every number comes from ``numpy.random.default_rng`` seeded by (seed, split) and from MiniLM run on one thread:
same seed, same file on the same machine.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
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
    text_dim: int  # MiniLM's hidden size: the ``text`` features are its contextual states
    audio_len: int
    audio_dim: int
    vision_len: int
    vision_dim: int


SHAPES = {
    # small enough that every chapter trains in CI in about a minute
    "small": SynthShape(600, 200, 400, 24, 384, 32, 5, 32, 20),
    # the full CMU-MOSI shapes and sizes (unaligned_50), for benchmarks
    "mosi": SynthShape(1284, 229, 686, 50, 384, 375, 5, 500, 20),
}

# bumped whenever the generator's output changes, so that a cached file of an older generator is never reused
VERSION = 3
MODALITIES = ("text", "audio", "vision")


@dataclass(frozen=True)
class Testbed:
    """The knobs of the generator (see the module docstring for the model they parametrise)."""

    redundancy_a: float = 6.0  # sample-level redundancy rho ~ Beta(redundancy_a, redundancy_b)
    redundancy_b: float = 1.8
    redundancy_jitter: float = 0.3  # per-modality jitter of rho on the logit scale
    weights: tuple[float, float, float] = (1.0, 0.5, 0.4)  # label weight of text, audio, vision content
    label_std: float = 1.3  # kappa is set so that the noise-free label has this standard deviation
    annotator_noise: float = 0.25
    text_scale: float = 1.3  # lexicon score per unit of text content
    phrase_noise: float = 0.5  # per-phrase deviation of its lexicon score from text_scale * c_l
    phrase_tolerance: float = 0.2  # a phrase is drawn among those within this of the wanted score
    phrase_counts: tuple[int, ...] = (0, 1, 1, 2, 2, 3)  # K is drawn uniformly from this list
    # variance of the audio content recovered from all of a sample's valid frames (at the mean length), and the same
    # for vision: set so that language > audio > vision, as the LNLN and MPLMM papers report of real data (there,
    # text-only models come close to the multimodal ones; voice and face alone are far weaker)
    audio_noise: float = 1.2
    vision_noise: float = 2.5
    congruence_cue: float = 0.6  # amplitude of the redundancy cue on every audio / vision frame (0: no cue)


VARIANTS = {
    "redundant": Testbed(),
    "complementary": Testbed(redundancy_a=1.8, redundancy_b=6.0),
}
DEFAULT_VARIANT = "redundant"


def testbed(variant: str) -> Testbed:
    if variant not in VARIANTS:
        raise ValueError(f"unknown synth variant {variant!r}; expected one of {sorted(VARIANTS)}")
    return VARIANTS[variant]


# ----------------------------------------------------------------------------------------- the Gaussian model

def loadings(rho: np.ndarray) -> np.ndarray:
    """(n, 3, 4): row m maps the latents z = (s, p_l, p_a, p_v) to the content c_m."""
    n = rho.shape[0]
    a = np.zeros((n, 3, 4))
    a[:, :, 0] = np.sqrt(rho)
    a[:, np.arange(3), 1 + np.arange(3)] = np.sqrt(1.0 - rho)
    return a


def posterior(rho: np.ndarray, obs: np.ndarray, var: np.ndarray):
    """Posterior mean (n, 4) and covariance (n, 4, 4) of z given ``obs[:, m] = c_m + N(0, var[:, m])``; a modality
    with ``var = inf`` (missing) contributes nothing. Prior z ~ N(0, I)."""
    a = loadings(rho)
    prec = np.where(np.isfinite(var), 1.0 / np.where(np.isfinite(var), var, 1.0), 0.0)  # (n, 3)
    lam = np.eye(4)[None] + np.einsum("nmi,nm,nmj->nij", a, prec, a)
    cov = np.linalg.inv(lam)
    mean = np.einsum("nij,nmj,nm,nm->ni", cov, a, prec, np.nan_to_num(obs))
    return mean, cov


@lru_cache(maxsize=16)
def label_weights(tb: Testbed) -> np.ndarray:
    """kappa * w: the label's noise-free part is ``label_weights(tb) @ c`` (computed once per testbed: a 200k-draw
    Monte Carlo, the same numbers every time)."""
    w = np.asarray(tb.weights, float)
    rng = np.random.default_rng([12345, 3])  # a fixed Monte Carlo estimate of E[sqrt(rho_m rho_n)]
    rho = _redundancy(rng, 200_000, tb)
    corr = np.einsum("nm,nk->mk", np.sqrt(rho), np.sqrt(rho)) / len(rho)
    np.fill_diagonal(corr, 1.0)
    out = w * tb.label_std / np.sqrt(w @ corr @ w)
    out.setflags(write=False)  # shared by every caller through the cache
    return out


def predictability(rho: np.ndarray, var: np.ndarray) -> np.ndarray:
    """(n, 3): R^2 of each content c_m given the OTHER two observations with variances ``var``."""
    a = loadings(rho)
    out = np.zeros(rho.shape)
    for m in range(3):
        v = var.copy()
        v[:, m] = np.inf
        _, cov = posterior(rho, np.zeros_like(var), v)
        am = a[:, m]
        out[:, m] = 1.0 - np.einsum("ni,nij,nj->n", am, cov, am)  # Var(E[c|o]) / Var(c), Var(c) = 1
    return out


def frame_gain(noise: float, length: int) -> float:
    """Gain on the content direction so that the mean of a sample's valid frames (3/4 of ``length`` on average)
    recovers the content with variance ``noise``."""
    return float(1.0 / np.sqrt(noise * 0.75 * length))


def text_noise(tb: Testbed) -> float:
    """Variance of one phrase's score / text_scale around c_l (phrase noise plus the lexicon's spacing)."""
    return (tb.phrase_noise ** 2 + tb.phrase_tolerance ** 2 / 3.0) / tb.text_scale ** 2


# ----------------------------------------------------------------------------------------------- generation

def _redundancy(rng, n: int, tb: Testbed) -> np.ndarray:
    rho = rng.beta(tb.redundancy_a, tb.redundancy_b, size=n)
    logit = np.log(rho / (1 - rho))[:, None] + rng.normal(scale=tb.redundancy_jitter, size=(n, 3))
    return np.clip(1.0 / (1.0 + np.exp(-logit)), 0.01, 0.99)


@lru_cache(maxsize=1)
def _phrases() -> tuple[list[tuple[int, ...]], np.ndarray]:
    """Every phrase of the lexicon (token ids) and its score: a word, a negated word, an intensified word."""
    toks, scores = [], []
    for w, (tid, s) in lx.SENTIMENT.items():
        toks.append((tid,))
        scores.append(s)
        for q in lx.NEGATIONS.values():
            toks.append((q, tid))
            scores.append(-0.8 * s)
        for q, mult in lx.INTENSIFIERS.values():
            toks.append((q, tid))
            scores.append(s * mult)
    return toks, np.asarray(scores)


_WORDS = {v[0] if isinstance(v, tuple) else v: w
          for table in (lx.SENTIMENT, lx.INTENSIFIERS, lx.NEGATIONS, lx.NEUTRAL) for w, v in table.items()}


def _sentence(rng, c_l: float, max_words: int, tb: Testbed):
    """Token ids (without [CLS]/[SEP]) and the phrases (start, end, score) of one utterance."""
    toks, scores = _phrases()
    neutral = list(lx.NEUTRAL.values())
    k = int(rng.choice(tb.phrase_counts))
    chosen = []
    for _ in range(k):
        want = tb.text_scale * c_l + rng.normal(scale=tb.phrase_noise)
        near = np.flatnonzero(np.abs(scores - want) <= tb.phrase_tolerance)
        j = int(rng.choice(near)) if len(near) else int(np.argmin(np.abs(scores - want)))
        chosen.append(j)
    n_words = max(int(rng.integers(4, max_words + 1)), sum(len(toks[j]) for j in chosen))
    n_neutral = n_words - sum(len(toks[j]) for j in chosen)
    units = [("p", j) for j in chosen] + [("n", int(rng.integers(len(neutral)))) for _ in range(n_neutral)]
    order = rng.permutation(len(units))
    ids, phrases = [], []
    for u in order:
        kind, j = units[u]
        if kind == "p":
            phrases.append((len(ids), len(ids) + len(toks[j]), float(scores[j])))
            ids.extend(toks[j])
        else:
            ids.append(neutral[j])
    return ids, phrases


def _direction(D: int, seed: int, modality: str, which: int) -> np.ndarray:
    """A unit direction per (seed, modality): the content direction (which=0) and, orthogonal to it, the
    congruence cue's (which=1). The SAME in every split (drawn per split, nothing would transfer to test)."""
    rng = np.random.default_rng([seed, {"audio": 8, "vision": 9}[modality]])
    u = rng.normal(size=D)
    u /= np.linalg.norm(u)
    if which == 0:
        return u
    w = rng.normal(size=D)
    w -= (w @ u) * u
    return w / np.linalg.norm(w)


def _frames(rng, content, rho, L, D, gain, cue, u, w):
    """(n, L, D) frames: N(0, I) noise + gain * content along u + the congruence cue along w; zero past the length."""
    n = len(content)
    x = rng.normal(size=(n, L, D))
    x += (gain * content)[:, None, None] * u[None, None, :]
    x += (cue * (2 * rho - 1))[:, None, None] * w[None, None, :]
    lengths = rng.integers(L // 2, L + 1, size=n)
    x[np.arange(L)[None, :] >= lengths[:, None]] = 0.0
    return x.astype(np.float32), lengths.astype(np.int64)


@lru_cache(maxsize=1)
def _minilm():
    from ..pretrained import load_pretrained

    return load_pretrained("minilm").eval()


def minilm_states(ids: np.ndarray, mask: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """MiniLM's last hidden states (n, L, 384) of complete sentences, zero at padding; one thread, so that the
    same machine always writes the same bytes."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, out = _minilm(), []
        with torch.no_grad():
            for i in range(0, len(ids), batch_size):
                t = torch.from_numpy(ids[i:i + batch_size])
                m = torch.from_numpy(mask[i:i + batch_size])
                h = model(input_ids=t, attention_mask=m, token_type_ids=torch.zeros_like(t)).last_hidden_state
                out.append((h * m[..., None]).numpy())
    finally:
        torch.set_num_threads(threads)
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, ids.shape[1], 384), np.float32)


MAX_PHRASES = 3


def make_split(shape: SynthShape, n: int, seed: int, split: str, variant: "str | Testbed" = DEFAULT_VARIANT,
               with_truth: bool = False):
    """One split as a dict of MMSA arrays; with ``with_truth`` also its truth (a dict of per-sample arrays).
    ``variant`` is a name of :data:`VARIANTS` or a :class:`Testbed`. The random draws depend on (seed, split)
    alone, so two testbeds with the same seed share their latents and differ only where a knob acts."""
    tb = variant if isinstance(variant, Testbed) else testbed(variant)
    base = [seed, {"train": 0, "valid": 1, "test": 2}[split], VERSION]
    rng_latent, rng_rho, rng_text, rng_frames = (np.random.default_rng(base + [k]) for k in range(4))
    rho = _redundancy(rng_rho, n, tb)  # its own stream: a knob that changes it leaves the other draws as they are
    s = rng_latent.normal(size=n)
    p = rng_latent.normal(size=(n, 3))
    c = np.sqrt(rho) * s[:, None] + np.sqrt(1 - rho) * p  # (n, 3) contents of text, audio, vision
    y = np.clip(c @ label_weights(tb) + rng_latent.normal(scale=tb.annotator_noise, size=n), -3, 3)
    labels = (np.round(y * 5) / 5 + 0.0).astype(np.float32)  # a 0.2 grid; "+ 0.0" turns -0.0 into 0.0

    L = shape.text_len
    ids = np.zeros((n, L), np.int64)
    mask = np.zeros((n, L), np.int64)
    ph = np.full((n, MAX_PHRASES, 3), np.nan)  # (start, end, score) per phrase, positions in text_bert
    raw = []
    for i in range(n):
        words, phrases = _sentence(rng_text, c[i, 0], L - 2, tb)
        toks = [lx.CLS_ID] + words + [lx.SEP_ID]
        ids[i, : len(toks)] = toks
        mask[i, : len(toks)] = 1
        raw.append(" ".join(_WORDS[t] for t in words))
        for k, (a, b, sc) in enumerate(phrases):
            ph[i, k] = (a + 1, b + 1, sc)  # +1: [CLS] comes first
    audio, a_len = _frames(rng_frames, c[:, 1], rho[:, 1], shape.audio_len, shape.audio_dim,
                           frame_gain(tb.audio_noise, shape.audio_len), tb.congruence_cue,
                           _direction(shape.audio_dim, seed, "audio", 0), _direction(shape.audio_dim, seed, "audio", 1))
    vision, v_len = _frames(rng_frames, c[:, 2], rho[:, 2], shape.vision_len, shape.vision_dim,
                            frame_gain(tb.vision_noise, shape.vision_len), tb.congruence_cue,
                            _direction(shape.vision_dim, seed, "vision", 0), _direction(shape.vision_dim, seed, "vision", 1))
    nonverbal = c[:, 1] * tb.weights[1] + c[:, 2] * tb.weights[2]
    conflict = (np.sign(c[:, 0]) != np.sign(nonverbal)) & (np.abs(c[:, 0]) > 0.5) & (np.abs(nonverbal) > 0.5)
    out = {
        "id": np.array([f"synth_{split}_{i:05d}" for i in range(n)]),
        "raw_text": np.array(raw),
        "text": minilm_states(ids, mask),
        "text_bert": np.stack([ids, mask, np.zeros_like(ids)], axis=1).astype(np.float32),
        "audio": audio, "audio_lengths": a_len,
        "vision": vision, "vision_lengths": v_len,
        "regression_labels": labels,
        "classification_labels": (np.sign(labels) + 1).astype(np.float32),  # 0 neg, 1 neutral, 2 pos
        "conflicting": conflict,
    }
    if not with_truth:
        return out
    n_phr = np.isfinite(ph[:, :, 2]).sum(1)
    var = np.stack([np.where(n_phr > 0, text_noise(tb) / np.maximum(n_phr, 1), np.inf),
                    tb.audio_noise * 0.75 * shape.audio_len / a_len,
                    tb.vision_noise * 0.75 * shape.vision_len / v_len], 1)
    pred = predictability(rho, var)
    truth = {"shared": s, "label_clean": c @ label_weights(tb), "conflicting": conflict, "phrases": ph,
             "text_sentiment": c[:, 0], "obs_var_complete": var}
    for j, m in enumerate(MODALITIES):
        truth[f"private_{m}"] = p[:, j]
        truth[f"content_{m}"] = c[:, j]
        truth[f"redundancy_{m}"] = rho[:, j]
        truth[f"predictability_{m}"] = pred[:, j]
        truth[f"useful_{m}"] = pred[:, j] >= 0.5
    return out, truth


def truth_path(path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".truth.npz")


def generate(out, shape: str = "small", seed: int = 0, variant: str = DEFAULT_VARIANT) -> Path:
    """Write the embedded dataset as an MMSA pickle at ``out`` (and its truth beside it); return its path."""
    if shape not in SHAPES:
        raise ValueError(f"unknown synth shape {shape!r}; expected one of {sorted(SHAPES)}")
    tb = testbed(variant)
    sh = SHAPES[shape]
    sizes = {"train": sh.n_train, "valid": sh.n_valid, "test": sh.n_test}
    splits, truths = {}, {}
    for s, n in sizes.items():
        splits[s], truths[s] = make_split(sh, n, seed, s, variant, with_truth=True)
    meta = {"version": VERSION, "shape": shape, "seed": seed, "variant": variant, "testbed": asdict(tb),
            "label_weights": label_weights(tb).tolist(), "text_noise": text_noise(tb),
            "gain": {m: frame_gain(getattr(tb, f"{m}_noise"), getattr(sh, f"{m}_len")) for m in ("audio", "vision")},
            "direction": {m: _direction(getattr(sh, f"{m}_dim"), seed, m, 0).tolist() for m in ("audio", "vision")}}
    tp = truth_path(out)
    tp.parent.mkdir(parents=True, exist_ok=True)
    tmp = tp.with_name(tp.name + f".tmp{os.getpid()}.npz")
    np.savez(tmp, meta=np.array(json.dumps(meta)),
             **{f"{s}/{k}": v for s, d in truths.items() for k, v in d.items()})
    os.replace(tmp, tp)
    return write_mmsa(out, splits)  # last: a pickle whose truth is missing is never left behind


def truth(path) -> tuple[dict, dict[str, dict[str, np.ndarray]]]:
    """(meta, {split: {key: per-sample array}}) of the embedded dataset at ``path`` (read without pickle)."""
    tp = truth_path(path)
    if not tp.is_file():
        raise FileNotFoundError(f"{tp}: no ground truth beside {path} (only the embedded dataset has one)")
    with np.load(tp, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        out: dict[str, dict[str, np.ndarray]] = {}
        for key in z.files:
            if key != "meta":
                split, name = key.split("/", 1)
                out.setdefault(split, {})[name] = z[key]
    return meta, out


def cache_root() -> Path:
    return Path(os.environ.get("MMSA_CACHE", Path.home() / ".cache" / "mmsa_book"))


def default_path(shape: str = "small", seed: int = 0, variant: str = DEFAULT_VARIANT) -> Path:
    """Where the embedded dataset is cached (``$MMSA_CACHE`` or ``~/.cache/mmsa_book``)."""
    testbed(variant)
    return cache_root() / f"synth_{shape}_{variant}_seed{seed}_v{VERSION}.pkl"


def ensure(shape: str = "small", seed: int = 0, variant: str = DEFAULT_VARIANT) -> Path:
    """The embedded dataset's path, generating it once if it is not cached yet."""
    p = default_path(shape, seed, variant)
    if not p.exists() or not truth_path(p).exists():
        generate(p, shape, seed, variant)
    return p


def dataset_name(shape: str = "small", variant: str = DEFAULT_VARIANT) -> str:
    """The embedded dataset's name in records and results folders: ``synth-<shape>-<variant>``."""
    return f"synth-{shape}-{variant}"


def describe(shape: str = "small") -> dict:
    return asdict(SHAPES[shape])


def with_knobs(variant: str, **knobs) -> Testbed:
    """A variant's testbed with some knobs changed (for experiments that move one knob)."""
    return replace(testbed(variant), **knobs)
