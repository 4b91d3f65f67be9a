"""The oracle: the Bayes-optimal prediction on the embedded testbed, from what a corrupted batch still shows.

**ours**. The oracle "knows the generator" (:mod:`mmsa_core.data.synth`): the content directions and gains of
audio and vision, the lexicon score of every phrase, each sample's redundancies and the noise variances. It does
NOT know the latents. From the corrupted inputs it reads one statistic per modality:

- audio / vision: the mean over the sample's kept frames of the projection on the content direction, divided by
  the gain: ``c_m + N(0, var_m)`` with ``var_m`` known from the number of kept frames (exact: the frames are
  Gaussian);
- text: the mean score of the phrases whose every token is still there, over ``text_scale``; a phrase with a
  dropped token is ignored (a slightly pessimistic approximation: a real reader also gets something from
  "[UNK] good");

and returns ``clip(E[y | statistics], -3, 3)``, the posterior median of the label, which minimises the expected
absolute error (the label's 0.2 rounding aside). It knows each sample's redundancy, which models can only estimate
from the congruence cue. It is the best prediction from what SURVIVES the corruption: a model that reads the
precomputed contextual text features (``text.kind=features``) can still see dropped words through their
neighbours' states, and with them some models of an earlier grid beat it at the highest protocol-A rates; through
the token ids (the default presets) no model of the grid beats it at any rate or mode (chapters 8-9).
"""

from __future__ import annotations

import numpy as np
import torch

from .data import synth
from .data.mmsa import Batch


def statistics(batch: Batch, truth: dict[str, np.ndarray], meta: dict) -> tuple[np.ndarray, np.ndarray]:
    """(obs, var), each (B, 3): the oracle's reading of each modality of ``batch`` (already corrupted, carrying
    its ``index`` into the split whose ``truth`` is given); var = inf where nothing of the modality is left."""
    idx = batch.index.cpu().numpy()
    n = len(idx)
    obs, var = np.zeros((n, 3)), np.full((n, 3), np.inf)
    present = batch.present.cpu().numpy() if batch.present is not None else np.ones((n, 3), bool)
    # text: phrases with every token kept
    ph = truth["phrases"][idx]  # (B, K, 3) start, end, score (nan: no phrase)
    ids = batch.text_ids.cpu().numpy()
    unk = ids == 100
    kept = np.zeros(ph.shape[:2], bool)
    for k in range(ph.shape[1]):
        ok = np.isfinite(ph[:, k, 2])
        for i in np.flatnonzero(ok):
            a, b = int(ph[i, k, 0]), int(ph[i, k, 1])
            kept[i, k] = not unk[i, a:b].any()
    kept &= present[:, :1]
    n_kept = kept.sum(1)
    scores = np.where(kept, np.nan_to_num(ph[:, :, 2]), 0.0).sum(1)
    tb = meta["testbed"]
    has = n_kept > 0
    obs[has, 0] = scores[has] / n_kept[has] / tb["text_scale"]
    var[has, 0] = meta["text_noise"] / n_kept[has]
    # audio, vision: mean projection of the kept frames on the content direction
    for j, m in ((1, "audio"), (2, "vision")):
        x = getattr(batch, m).float().cpu().numpy()
        keep = getattr(batch, f"{m}_mask").cpu().numpy() & present[:, j:j + 1]
        cnt = keep.sum(1)
        proj = np.einsum("btd,d->bt", x, np.asarray(meta["direction"][m])) * keep
        gain = meta["gain"][m]
        ok = cnt > 0
        obs[ok, j] = proj.sum(1)[ok] / cnt[ok] / gain
        var[ok, j] = 1.0 / (gain ** 2 * cnt[ok])
    return obs, var


def rho_of(truth: dict[str, np.ndarray], idx: np.ndarray) -> np.ndarray:
    return np.stack([truth[f"redundancy_{m}"][idx] for m in synth.MODALITIES], 1)


def predict(batch: Batch, truth: dict[str, np.ndarray], meta: dict) -> torch.Tensor:
    """The oracle's predictions (B,) for a corrupted ``batch``."""
    obs, var = statistics(batch, truth, meta)
    rho = rho_of(truth, batch.index.cpu().numpy())
    mean, _ = synth.posterior(rho, obs, var)
    content = np.einsum("nmi,ni->nm", synth.loadings(rho), mean)  # E[c | statistics]
    y = content @ np.asarray(meta["label_weights"])
    return torch.from_numpy(np.clip(y, -3.0, 3.0).astype(np.float32))


class Oracle(torch.nn.Module):
    """The oracle behind the models' interface (``forward(batch).pred``), so that the evaluation sweep and the
    tables treat it as one more row. It has no parameters and is never trained."""

    def __init__(self, truth_split: dict[str, np.ndarray], meta: dict):
        super().__init__()
        self.truth, self.meta = truth_split, meta

    def forward(self, batch: Batch):
        from .models.common import ModelOutput

        return ModelOutput(pred=predict(batch, self.truth, self.meta).to(batch.labels.device), losses={})


ORACLE = "oracle"  # its name in the records and tables


def records(path, name: str, eval_seed: int = 0, protocols=("A", "B")) -> "pd.DataFrame":
    """The oracle's test records in the grid's format, as a model row: every rate under A and B and every mode,
    the same numbers for each training protocol (it is not trained); seed 0 (it is deterministic)."""
    import pandas as pd

    from .data.mmsa import load_mmsa
    from .evaluate import sweep

    ds = load_mmsa(path, name=name)
    meta, truth_ = synth.truth(path)
    model = Oracle(truth_["test"], meta)
    recs = []
    for proto in ("A", "B"):
        recs += sweep(model, ds["test"].data, ds.spec, proto, eval_seed, "test", amp=False)
    one = pd.DataFrame(recs)
    frames = []
    for tp in protocols:
        df = one.copy()
        df.insert(0, "model", ORACLE)
        df.insert(1, "dataset", ds.name)
        df.insert(2, "train_protocol", tp)
        df.insert(3, "seed", 0)
        frames.append(df)
    return pd.concat(frames, ignore_index=True)
