"""Regression metrics with the MMSA definitions (``shared/spec/protocols.md``).

MOSI / MOSEI (``mosi_metrics``): Acc-2 and weighted F1 "has-0" (y < 0 vs y >= 0, all samples) and "non-0"
(samples with y != 0 only), Acc-7 / Acc-5 (round after clipping to [-3, 3] / [-2, 2]), MAE, Pearson Corr.
SIMS (``sims_metrics``): after clipping to [-1, 1], Acc-2 / Acc-3 / Acc-5 over fixed bins, weighted F1 on the
Acc-2 bins, MAE, Corr. Accuracies and F1 are fractions in [0, 1]; the book shows them as percentages.
"""

from __future__ import annotations

import numpy as np


def weighted_f1(y_true, y_pred) -> float:
    """F1 per class of ``y_true``, averaged with weights = class support (sklearn's ``average='weighted'``)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    total, score = len(y_true), 0.0
    for c in np.unique(y_true):
        tp = np.sum((y_pred == c) & (y_true == c))
        fp = np.sum((y_pred == c) & (y_true != c))
        fn = np.sum((y_pred != c) & (y_true == c))
        f1 = 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)
        score += f1 * np.sum(y_true == c) / total
    return float(score)


def pearson(p, y) -> float:
    p, y = np.asarray(p, np.float64).reshape(-1), np.asarray(y, np.float64).reshape(-1)
    # undefined for a constant prediction; 0 is what a reader expects to see. (Not ``std() == 0``: the std of
    # three equal 0.7s is 1e-17, and corrcoef then returns rounding noise.)
    if p.size < 2 or (p == p[0]).all() or (y == y[0]).all():
        return 0.0
    return float(np.corrcoef(p, y)[0, 1])


def ranks(x) -> np.ndarray:
    """Ranks 1..n of ``x``, tied values sharing the mean of their ranks."""
    x = np.asarray(x, np.float64)
    r = np.empty(len(x))
    r[np.argsort(x, kind="mergesort")] = np.arange(1, len(x) + 1)
    _, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
    return (np.bincount(inv, weights=r) / counts)[inv]


def spearman(x, y) -> float:
    """Spearman's rank correlation of two sequences (tied values share their mean rank): the Pearson correlation of
    their :func:`ranks`."""
    return float(np.corrcoef(ranks(x), ranks(y))[0, 1])


def ridge(x_train, y_train, lam: float = 1.0):
    """A ridge regression (with intercept) fitted on train: returns its prediction function x -> (n,)."""
    X = np.c_[x_train, np.ones(len(x_train))]
    w = np.linalg.solve(X.T @ X + lam * np.eye(X.shape[1]), X.T @ np.asarray(y_train))
    return lambda x: np.c_[x, np.ones(len(x))] @ w


def r2(pred, y) -> float:
    """Coefficient of determination of ``pred`` for ``y``: 1 - MSE / Var(y) (negative when worse than the mean)."""
    y = np.asarray(y, float)
    return float(1.0 - np.mean((np.asarray(pred, float) - y) ** 2) / np.var(y))


def ridge_r2(x_train, y_train, x_test, y_test, lam: float = 1.0) -> float:
    """Test R^2 of a ridge regression (with intercept) fitted on train."""
    return r2(ridge(x_train, y_train, lam)(x_test), y_test)


def mosi_metrics(pred, label) -> dict[str, float]:
    p = np.asarray(pred, np.float64).reshape(-1)
    y = np.asarray(label, np.float64).reshape(-1)
    nz = y != 0
    out = {
        "Acc-2 has-0": float(np.mean((p >= 0) == (y >= 0))),
        "F1 has-0": weighted_f1(y >= 0, p >= 0),
        "Acc-2 non-0": float(np.mean((p[nz] > 0) == (y[nz] > 0))) if nz.any() else float("nan"),
        "F1 non-0": weighted_f1(y[nz] > 0, p[nz] > 0) if nz.any() else float("nan"),
        "Acc-7": float(np.mean(np.round(np.clip(p, -3, 3)) == np.round(np.clip(y, -3, 3)))),
        "Acc-5": float(np.mean(np.round(np.clip(p, -2, 2)) == np.round(np.clip(y, -2, 2)))),
        "MAE": float(np.mean(np.abs(p - y))),
        "Corr": pearson(p, y),
    }
    return out


def _bins(x, edges):
    """Class index of each value for left-open bins (e0, e1], (e1, e2], ... with the first bin closed.

    The edges are compared in ``x``'s own precision, as MMSA does: a float32 label 0.1 (0.100000001...) lies on
    the edge 0.1, in (-0.1, 0.1], and is not pushed into (0.1, 1] by a float64 comparison."""
    x = np.asarray(x)
    return np.searchsorted(np.asarray(edges[1:-1], dtype=x.dtype), x, side="left")


SIMS_BINS = {
    "Acc-2": (-1.0, 0.0, 1.0),
    "Acc-3": (-1.0, -0.1, 0.1, 1.0),
    "Acc-5": (-1.0, -0.7, -0.1, 0.1, 0.7, 1.0),
}


def sims_metrics(pred, label) -> dict[str, float]:
    def clipped(x):  # floats keep their precision for the bins (see _bins); anything else becomes float64
        x = np.asarray(x).reshape(-1)
        return np.clip(x if x.dtype.kind == "f" else x.astype(np.float64), -1, 1)

    p, y = clipped(pred), clipped(label)
    out = {k: float(np.mean(_bins(p, e) == _bins(y, e))) for k, e in SIMS_BINS.items()}
    out["F1"] = weighted_f1(_bins(y, SIMS_BINS["Acc-2"]), _bins(p, SIMS_BINS["Acc-2"]))
    p, y = p.astype(np.float64), y.astype(np.float64)
    out["MAE"] = float(np.mean(np.abs(p - y)))
    out["Corr"] = pearson(p, y)
    return out


SWAPPED = " swapped"  # suffix of the F1 computed with the arguments swapped (see swapped_f1)


def swapped_f1(pred, label, language: str = "en") -> dict[str, float]:
    """Weighted F1 called as ``f1_score(pred, truth)``, the order in the LNLN authors' code until commit f07d9d2
    (April 2025, after the paper) and in MPLMM's: the per-class F1 is the same, but the classes are weighted by
    the PREDICTED counts. Named ``"<F1 name> swapped"`` (e.g. ``"F1 has-0 swapped"``)."""
    p = np.asarray(pred, np.float64).reshape(-1)
    y = np.asarray(label, np.float64).reshape(-1)
    if language == "zh":
        e = SIMS_BINS["Acc-2"]
        return {"F1" + SWAPPED: weighted_f1(_bins(np.clip(p, -1, 1), e), _bins(np.clip(y, -1, 1), e))}
    nz = y != 0
    return {"F1 has-0" + SWAPPED: weighted_f1(p >= 0, y >= 0),
            "F1 non-0" + SWAPPED: weighted_f1(p[nz] > 0, y[nz] > 0) if nz.any() else float("nan")}


def compute(pred, label, language: str = "en", f1_swapped: bool = False) -> dict[str, float]:
    """The metric set of the dataset: SIMS definitions for Chinese (``language='zh'``), MOSI otherwise; with
    ``f1_swapped`` also :func:`swapped_f1`."""
    out = sims_metrics(pred, label) if language == "zh" else mosi_metrics(pred, label)
    return {**out, **swapped_f1(pred, label, language)} if f1_swapped else out
