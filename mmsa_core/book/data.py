"""The data as a reader meets it (chapters 1 and 2): samples, the keys of an MMSA file, how much sentiment each
modality carries on its own (a linear probe), and what the missing-data protocols actually do to a split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .. import metrics as M
from .. import missing
from ..data.mmsa import MMSADataset, read_pickle
from .tables import headline_metrics, percent_rounded


# --------------------------------------------------------------------------------------- samples and the file
def examples(data: MMSADataset, split: str = "test", n: int = 6, start: int = 0) -> pd.DataFrame:
    """A few samples as a reader sees them: the words, the label, and how many tokens and frames they have."""
    s = data[split]
    b = s.data
    idx = range(start, min(start + n, len(s)))
    return pd.DataFrame({
        "id": [s.ids[i] for i in idx],
        "words": [s.raw_text[i] for i in idx],
        "label": [round(float(b.labels[i]), 2) + 0.0 for i in idx],
        "tokens": [int(b.text_mask[i].sum()) for i in idx],
        "audio frames": [int(b.audio_mask[i].sum()) for i in idx],
        "vision frames": [int(b.vision_mask[i].sum()) for i in idx],
    }).set_index("id")


KEY_MEANINGS = {
    "id": "sample id (video + segment)",
    "raw_text": "the transcript",
    "text": "precomputed text features per token",
    "text_bert": "token ids, attention mask, segment ids",
    "audio": "acoustic features per frame",
    "audio_lengths": "number of valid audio frames",
    "vision": "facial features per frame",
    "vision_lengths": "number of valid vision frames",
    "regression_labels": "sentiment score",
    "classification_labels": "sentiment class",
    "conflicting": "embedded data only: voice and face contradict the words (the truth file has more)",
    "regression_labels_T": "text-only label (CH-SIMS)",
    "regression_labels_A": "audio-only label (CH-SIMS)",
    "regression_labels_V": "vision-only label (CH-SIMS)",
}


def format_table(data: MMSADataset, split: str = "train", max_bytes: int = 1 << 30) -> pd.DataFrame:
    """Every key of one split of the MMSA pickle behind ``data``: shape, dtype and meaning.

    Re-reads the file the dataset was loaded from (a file already trusted by loading it). A file larger than
    ``max_bytes`` (CMU-MOSEI's is several GB) is not read twice: the table then describes the loaded split."""
    path = Path(data.path)
    if path.stat().st_size > max_bytes:
        return _loaded_table(data, split)
    raw = read_pickle(path)[split]
    rows = []
    for k, v in raw.items():
        a = np.asarray(v)
        rows.append({"key": k, "shape": str(tuple(a.shape)), "dtype": str(a.dtype), "meaning": KEY_MEANINGS.get(k, "")})
    return pd.DataFrame(rows).set_index("key")


def _loaded_table(data: MMSADataset, split: str) -> pd.DataFrame:
    b = data[split].data
    n = len(b)
    shapes = {
        "text": tuple(b.text_feat.shape), "text_bert": (n, 3, b.text_ids.shape[1]), "audio": tuple(b.audio.shape),
        "audio_lengths": (n,), "vision": tuple(b.vision.shape), "vision_lengths": (n,), "regression_labels": (n,),
    }
    rows = [{"key": k, "shape": str(sh), "dtype": "(large file: not re-read)", "meaning": KEY_MEANINGS[k]}
            for k, sh in shapes.items()]
    return pd.DataFrame(rows).set_index("key")


# -------------------------------------------------------------------------------- a linear probe per modality
def _pooled(b, modality: str) -> np.ndarray:
    """Mean over the valid positions of one modality: (N, D) float64."""
    x, mask = {"text": (b.text_feat, b.text_mask.bool()), "audio": (b.audio, b.audio_mask),
               "vision": (b.vision, b.vision_mask)}[modality]
    m = mask.double()[..., None]
    return ((x.double() * m).sum(1) / m.sum(1).clamp(min=1.0)).numpy()


def _ridge(a: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    a1 = np.concatenate([a, np.ones((len(a), 1))], 1)
    reg = lam * np.eye(a1.shape[1])
    reg[-1, -1] = 0.0  # no penalty on the intercept
    return np.linalg.solve(a1.T @ a1 + reg, a1.T @ y)


def _affine(a: np.ndarray, w: np.ndarray) -> np.ndarray:
    return a @ w[:-1] + w[-1]


def probe(data: MMSADataset, lambdas=(0.1, 1.0, 10.0, 100.0, 1e3, 1e4), metrics: list[str] | None = None) -> pd.DataFrame:
    """How much sentiment each modality carries on its own: a ridge regression (closed form, float64) on the
    mean of each modality's features over its valid positions, fitted on train with the penalty that scores
    best (MAE) on validation, scored on test. "constant" predicts the training mean: the floor to beat."""
    sp = {s: data[s].data for s in ("train", "valid", "test")}
    y = {s: b.labels.double().numpy() for s, b in sp.items()}
    lang = data.spec.language
    rows = {"constant": {**M.compute(np.full_like(y["test"], y["train"].mean()), y["test"], lang), "lambda": np.nan}}
    groups = {m: [m] for m in missing.MODALITIES} | {"all three": list(missing.MODALITIES)}
    for name, mods in groups.items():
        f = {s: np.concatenate([_pooled(b, m) for m in mods], 1) for s, b in sp.items()}
        mu, sd = f["train"].mean(0), f["train"].std(0) + 1e-8
        f = {s: (v - mu) / sd for s, v in f.items()}
        lam = min(lambdas, key=lambda lm: np.mean(np.abs(_affine(f["valid"], _ridge(f["train"], y["train"], lm)) - y["valid"])))
        pred = _affine(f["test"], _ridge(f["train"], y["train"], lam))
        rows[name] = {**M.compute(pred, y["test"], lang), "lambda": lam}
    tab = pd.DataFrame(rows).T
    tab.index.name = "features"
    return percent_rounded(tab[(metrics or headline_metrics(lang)) + ["lambda"]])


# -------------------------------------------------------------------------------------- what the protocols do
def achieved(data: MMSADataset, protocol: str = "A", levels=(0.0, 0.1, 0.3, 0.5, 0.7, 0.9), split: str = "test",
             seed: int = 0, train_draw: bool = True) -> pd.DataFrame:
    """What a protocol actually does to ``split`` (deterministic: the draws are seeded).

    A: the percentage of droppable positions (valid tokens except [CLS]/[SEP]; valid frames) dropped per
    modality, and of samples left untouched in all three; ``train_draw`` adds the training distribution
    (r ~ U(0, 1), r = 0 for half the samples). B: the percentage of samples missing each modality, and complete."""
    b = data[split].data
    cans = [c.cpu() for c in missing.droppable(b)]
    rows = {}
    settings = [(f"r = {lv:.1f}" if protocol == "A" else f"eta = {lv:.1f}", lv) for lv in levels]
    if protocol == "A" and train_draw:
        settings.append(("training draw", None))
    for name, lv in settings:
        plan = missing.draw(protocol, b, lv, seed, 0, split)
        keeps = (plan.text_keep, plan.audio_keep, plan.vision_keep)
        if protocol == "A":
            row = {m: float((~k & c).sum() / c.sum()) for m, k, c in zip(missing.MODALITIES, keeps, cans)}
            row["untouched samples"] = float(np.mean(np.all([(k | ~c).all(1).numpy() for k, c in zip(keeps, cans)], 0)))
        else:
            row = {f"{m} missing": float((~plan.present[:, i]).float().mean()) for i, m in enumerate(missing.MODALITIES)}
            row["complete samples"] = float((plan.mode == 0).float().mean())
        rows[name] = row
    tab = (pd.DataFrame(rows).T * 100).round(2) + 0.0
    tab.index.name = "setting"
    return tab


_VOCAB: dict[int, str] | None = None


def _token(i: int) -> str:
    """The WordPiece of a bert-base-uncased id: our lexicon first (every id of the embedded data), then the
    vocabulary of the packaged MiniLM if installed, else ``#id``."""
    global _VOCAB
    if _VOCAB is None:
        from ..data import lexicon as lx

        _VOCAB = {lx.PAD_ID: "[PAD]", lx.UNK_ID: "[UNK]", lx.CLS_ID: "[CLS]", lx.SEP_ID: "[SEP]"}
        for w, v in (*lx.SENTIMENT.items(), *lx.INTENSIFIERS.items()):
            _VOCAB[v[0]] = w
        for w, v in (*lx.NEGATIONS.items(), *lx.NEUTRAL.items()):
            _VOCAB[v] = w
        try:
            from ..pretrained import minilm_path

            extra = (minilm_path() / "vocab.txt").read_text(encoding="utf-8").splitlines()
            for k, w in enumerate(extra):
                _VOCAB.setdefault(k, w)
        except (RuntimeError, OSError):
            pass
    return _VOCAB.get(int(i), f"#{int(i)}")


def token_table(batch, plan, sample: int = 0, unk_id: int = 100) -> pd.DataFrame:
    """One sample's tokens before and after a missing-data ``plan`` (drawn on ``batch``): position, token,
    token id, and what the model receives instead."""
    n = int(batch.text_mask[sample].sum())
    idx = torch.tensor([sample])
    corrupted = missing.apply(batch.take(idx), plan.take(idx), unk_id)
    before = batch.text_ids[sample, :n].tolist()
    after = corrupted.text_ids[0, :n].tolist()
    return pd.DataFrame({"token": [_token(t) for t in before], "id": before,
                         "model sees": [_token(t) for t in after], "id seen": after}).rename_axis("position").T


def modes_table() -> pd.DataFrame:
    """The seven protocol-B missing modes: which modalities each keeps."""
    rows = []
    for i, (present, name) in enumerate(zip(missing.MODES, missing.MODE_NAMES)):
        gone = [m for m, p in zip(missing.MODALITIES, present) if not p]
        rows.append({"mode": i, "present": name, "missing": ", ".join(gone) or "nothing (complete)"})
    return pd.DataFrame(rows).set_index("mode")


__all__ = ["KEY_MEANINGS", "achieved", "examples", "format_table", "modes_table", "probe", "token_table"]
