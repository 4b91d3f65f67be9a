"""Metrics against hand-computed small cases (MMSA definitions, shared/spec/protocols.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mmsa_core.metrics import compute, mosi_metrics, pearson, sims_metrics, weighted_f1

# y (label), p (prediction); comments: the rounded values used by Acc-7 / Acc-5
Y = [-2.0, -0.6, 0.0, 0.0, 0.4, 1.6, 3.0, 2.0, -0.4]
P = [-1.4, 0.2, 0.0, -0.2, 2.6, 1.5, 2.4, 2.5, -0.5]


def test_mosi_metrics_hand_computed():
    m = mosi_metrics(P, Y)
    # has-0: y >= 0 vs p >= 0 over all 9: wrong at 1 (y -0.6, p 0.2) and 3 (y 0, p -0.2)
    assert m["Acc-2 has-0"] == pytest.approx(7 / 9)
    # F1 has-0: class True (support 6): tp 5 fp 1 fn 1 -> 10/12; class False (support 3): tp 2 fp 1 fn 1 -> 4/6
    assert m["F1 has-0"] == pytest.approx((6 * 10 / 12 + 3 * 4 / 6) / 9)
    # non-0: the 7 samples with y != 0; p > 0 vs y > 0 wrong only at 1
    assert m["Acc-2 non-0"] == pytest.approx(6 / 7)
    # F1 non-0: class True (support 4): tp 4 fp 1 fn 0 -> 8/9; class False (support 3): tp 2 fp 0 fn 1 -> 4/5
    assert m["F1 non-0"] == pytest.approx((4 * 8 / 9 + 3 * 4 / 5) / 7)
    # Acc-7: round(clip(., -3, 3)), NumPy's round-half-to-even as MMSA: p 2.5 -> 2 = y 2.0; p -0.5 -> -0 = y -0.4 -> -0
    #   p -> [-1, 0, 0, -0, 3, 2, 2, 2, -0]; y -> [-2, -1, 0, 0, 0, 2, 3, 2, -0]
    assert m["Acc-7"] == pytest.approx(5 / 9)
    # Acc-5: clip to [-2, 2] first: p 2.4 -> 2 = y 3.0 -> 2 now matches (it did not for Acc-7)
    assert m["Acc-5"] == pytest.approx(6 / 9)
    assert m["MAE"] == pytest.approx((0.6 + 0.8 + 0 + 0.2 + 2.2 + 0.1 + 0.6 + 0.5 + 0.1) / 9)
    p, y = np.array(P), np.array(Y)
    r = ((p - p.mean()) * (y - y.mean())).sum() / math.sqrt(((p - p.mean()) ** 2).sum() * ((y - y.mean()) ** 2).sum())
    assert m["Corr"] == pytest.approx(r)
    assert set(m) == {"Acc-2 has-0", "F1 has-0", "Acc-2 non-0", "F1 non-0", "Acc-7", "Acc-5", "MAE", "Corr"}


def test_ties_round_half_to_even():
    # MMSA rounds with np.round: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, -1.5 -> -2
    m = mosi_metrics([0.5, 1.5, 2.5, -1.5], [0.0, 2.0, 2.0, -2.0])
    assert m["Acc-7"] == 1.0 and m["Acc-5"] == 1.0
    assert mosi_metrics([0.5], [1.0])["Acc-7"] == 0.0  # 0.5 rounds to 0, not 1


def test_clipping_acc7_acc5():
    assert mosi_metrics([5.0, -9.0], [3.0, -3.0])["Acc-7"] == 1.0
    m = mosi_metrics([2.6, -2.7], [3.0, -2.0])
    assert m["Acc-7"] == 0.5  # 3 = 3, -3 != -2
    assert m["Acc-5"] == 1.0  # both clipped to +-2
    assert mosi_metrics([5.0], [3.0])["MAE"] == 2.0  # MAE is NOT clipped for MOSI


def test_zero_labels_has0_vs_non0():
    # y = 0 counts as non-negative for has-0 and is excluded from non-0
    m = mosi_metrics([0.3, -0.3, 1.0, -1.0], [0.0, 0.0, 2.0, -2.0])
    assert m["Acc-2 has-0"] == 0.75  # p -0.3 < 0 but y 0 >= 0
    assert m["Acc-2 non-0"] == 1.0
    assert m["F1 non-0"] == 1.0
    # prediction exactly 0: non-negative for has-0, not positive for non-0
    m = mosi_metrics([0.0, 0.0], [0.0, 1.0])
    assert m["Acc-2 has-0"] == 1.0 and m["Acc-2 non-0"] == 0.0
    # every label zero: non-0 is undefined
    m = mosi_metrics([0.1, -0.1], [0.0, 0.0])
    assert math.isnan(m["Acc-2 non-0"]) and math.isnan(m["F1 non-0"]) and m["Acc-2 has-0"] == 0.5


def test_weighted_f1_argument_order():
    y_true, y_pred = [1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]
    # class 1: tp 3 fp 0 fn 2 -> 0.75 (support 5); class 0: tp 1 fp 2 fn 0 -> 0.5 (support 1)
    assert weighted_f1(y_true, y_pred) == pytest.approx((5 * 0.75 + 1 * 0.5) / 6)
    assert weighted_f1(y_pred, y_true) == pytest.approx((3 * 0.75 + 3 * 0.5) / 6)  # swapped: a different number
    # the metrics call it with the labels first
    m = mosi_metrics([1, 1, 1, -1, -1, -1], [1, 1, 1, 1, 1, -1])
    assert m["F1 has-0"] == pytest.approx((5 * 0.75 + 1 * 0.5) / 6)
    assert m["F1 non-0"] == pytest.approx((5 * 0.75 + 1 * 0.5) / 6)
    s = sims_metrics([0.5, 0.5, 0.5, -0.5, -0.5, -0.5], [0.5, 0.5, 0.5, 0.5, 0.5, -0.5])
    assert s["F1"] == pytest.approx((5 * 0.75 + 1 * 0.5) / 6)


def test_weighted_f1_edge_cases():
    assert weighted_f1([0, 0, 1], [0, 0, 1]) == 1.0
    assert weighted_f1([1, 1], [0, 0]) == 0.0  # a predicted class without support weighs nothing
    assert weighted_f1([0, 1, 2], [0, 2, 1]) == pytest.approx(1 / 3)


def test_corr():
    assert pearson([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)  # sum(dp*dy) 4 / sqrt(5 * 5)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert mosi_metrics([0.7, 0.7, 0.7], [1.0, -2.0, 0.0])["Corr"] == 0.0  # constant prediction
    assert sims_metrics([0.2, 0.2], [0.5, -0.5])["Corr"] == 0.0
    assert pearson([1.0, 2.0], [3.0, 3.0]) == 0.0  # constant labels


def test_sims_metrics_hand_computed():
    y = [-0.8, -0.2, 0.0, 0.3, 0.9, 1.0]
    p = [-0.6, 0.1, -0.1, 0.8, 1.4, 0.2]  # 1.4 is clipped to 1.0
    m = sims_metrics(p, y)
    # Acc-2 bins [-1, 0], (0, 1]: y [0 0 0 1 1 1], p [0 1 0 1 1 1]
    assert m["Acc-2"] == pytest.approx(5 / 6)
    # Acc-3 [-1, -0.1], (-0.1, 0.1], (0.1, 1]: y [0 0 1 2 2 2], p [0 1 0 2 2 2]
    assert m["Acc-3"] == pytest.approx(4 / 6)
    # Acc-5 [-1, -0.7], (-0.7, -0.1], (-0.1, 0.1], (0.1, 0.7], (0.7, 1]: y [0 1 2 3 4 4], p [1 2 1 4 4 3]
    assert m["Acc-5"] == pytest.approx(1 / 6)
    # F1 on the Acc-2 bins, labels first: class 0 (support 3) tp 2 fn 1 -> 4/5; class 1 (support 3) tp 3 fp 1 -> 6/7
    assert m["F1"] == pytest.approx((4 / 5 + 6 / 7) / 2)
    assert m["MAE"] == pytest.approx((0.2 + 0.3 + 0.1 + 0.5 + 0.1 + 0.8) / 6)  # after clipping
    assert set(m) == {"Acc-2", "Acc-3", "Acc-5", "F1", "MAE", "Corr"}


# (label, prediction, expected Acc-2, Acc-3, Acc-5): labels exactly on the bin edges
EDGES = [
    (0.0, 0.05, 0, 1, 1),  # 0 is in [-1, 0]; 0.05 in (0, 1]
    (0.1, 0.0, 0, 1, 1),  # 0.1 is in (-0.1, 0.1] for Acc-3 and Acc-5
    (0.1, 0.15, 1, 0, 0),
    (-0.1, -0.5, 1, 1, 1),  # -0.1 is in [-1, -0.1] (Acc-3) and (-0.7, -0.1] (Acc-5)
    (-0.1, 0.0, 1, 0, 0),
    (0.7, 0.5, 1, 1, 1),  # 0.7 is in (0.1, 0.7]
    (0.7, 0.75, 1, 1, 0),
    (-0.7, -0.9, 1, 1, 1),  # -0.7 is in [-1, -0.7]
    (-0.7, -0.6, 1, 1, 0),
    (1.0, 1.8, 1, 1, 1),  # clipped
    (-1.0, -2.5, 1, 1, 1),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("y,p,a2,a3,a5", EDGES)
def test_sims_bin_edges(y, p, a2, a3, a5, dtype):
    # float32 is what the pickles hold and the models predict: a float32 0.1 is 0.100000001..., which must
    # still fall in (-0.1, 0.1], as in MMSA (which compares in float32)
    m = sims_metrics(np.array([p], dtype), np.array([y], dtype))
    assert (m["Acc-2"], m["Acc-3"], m["Acc-5"]) == (a2, a3, a5)


def test_sims_mae_is_clipped():
    assert sims_metrics([1.8, -2.5], [1.0, -1.0])["MAE"] == 0.0


def test_compute_dispatches_on_language():
    assert set(compute([0.1, 0.2], [0.3, -0.1], "zh")) == {"Acc-2", "Acc-3", "Acc-5", "F1", "MAE", "Corr"}
    assert "Acc-7" in compute([0.1, 0.2], [0.3, -0.1], "en")
    assert "Acc-7" in compute([0.1, 0.2], [0.3, -0.1])


def test_spearman_gives_tied_values_their_mean_rank():
    """One rank correlation for the whole package (mechanisms, mechanisms_promma, the book): ties share their mean
    rank, so the result does not depend on the order of the tied samples (an argsort of argsort would)."""
    from mmsa_core.metrics import ranks, spearman

    assert ranks([3.0, 1.0, 2.0, 2.0]).tolist() == [4.0, 1.0, 2.5, 2.5]
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(np.corrcoef([1, 2.5, 2.5, 4], [1, 2, 3, 4])[0, 1])
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(spearman([1, 2, 2, 3], [1, 3, 2, 4]))  # tie order
    assert spearman([1, 5, 2, 9], [0.1, 0.7, 0.3, 0.8]) == pytest.approx(1.0)  # monotone
