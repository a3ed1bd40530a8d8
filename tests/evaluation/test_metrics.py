"""Exact streaming metrics agree with scikit-learn (ties included) and the DICE search is consistent."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from mood_detector.evaluation import metrics as M


def _random_case(rng: np.random.Generator, n: int, levels: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Scores (optionally quantised to ``levels`` values: many ties) and labels with a few % positives."""
    y = rng.random(n) < rng.uniform(0.01, 0.3)
    y[rng.integers(n)] = True
    y[rng.integers(n)] = False
    s = rng.beta(2, 5, n) + 0.3 * y * rng.random(n)
    if levels is not None:
        s = np.round(s * levels) / levels
    return s, y


@pytest.mark.parametrize("seed", range(12))
def test_histogram_matches_sklearn_on_float16_scores(seed):
    rng = np.random.default_rng(seed)
    s, y = _random_case(rng, int(rng.integers(50, 20000)), levels=[None, 10, 100, 1000][seed % 4])
    s = s * 1.4 - 0.2  # some scores outside [0, 1]: clipped like the MOOD evaluator does
    hist = M.Float16Histogram()
    half = s.size // 2
    hist.add(s[:half].astype(np.float32), y[:half])  # added in two parts (as per case)
    hist.add(s[half:].astype(np.float32), y[half:])
    ref = np.clip(s.astype(np.float16), 0, 1)  # MOOD: read as float16, clip to [0, 1]
    c = hist.counts()
    assert c.n_pos == y.sum() and c.n_neg == (~y).sum()
    assert abs(M.average_precision(c) - average_precision_score(y, ref)) < 1e-6
    assert abs(M.roc_auc(c) - roc_auc_score(y, ref)) < 1e-6


@pytest.mark.parametrize("seed", range(8))
def test_sorted_counts_match_sklearn_with_ties(seed):
    rng = np.random.default_rng(100 + seed)
    s, y = _random_case(rng, int(rng.integers(5, 400)), levels=[3, 7, None, 20][seed % 4])
    c = M.counts_from_scores(s, y)
    assert abs(M.average_precision(c) - average_precision_score(y, s)) < 1e-6
    assert abs(M.roc_auc(c) - roc_auc_score(y, s)) < 1e-6


def test_all_tied_scores_and_missing_classes():
    y = np.array([1, 0, 0, 1, 0], dtype=bool)
    s = np.full(5, 0.5)
    c = M.counts_from_scores(s, y)
    assert M.average_precision(c) == pytest.approx(average_precision_score(y, s))  # = prevalence 0.4
    assert M.roc_auc(c) == pytest.approx(0.5)
    none = M.counts_from_scores(np.array([0.1, 0.9]), np.array([0, 0]))
    with pytest.warns(UserWarning):
        assert M.average_precision(none) == average_precision_score([0, 0], [0.1, 0.9]) == 0.0
    assert np.isnan(M.roc_auc(none))


def test_histogram_chunks_negative_zero_and_nan(monkeypatch):
    monkeypatch.setattr(M, "CHUNK", 7)  # many chunks
    s = np.array([-0.0, 0.0, np.nan, 2.0, -3.0, 0.25, 0.25, 1.0, 0.5], dtype=np.float32)
    y = np.array([0, 0, 1, 1, 0, 1, 0, 1, 0], dtype=bool)
    h = M.Float16Histogram()
    h.add(s, y)
    assert h.n_nan == 1
    c = h.counts()
    assert list(c.scores) == [0.0, 0.25, 0.5, 1.0]  # -0.0, NaN and -3 -> 0; 2 -> 1
    assert list(c.pos) == [1, 1, 0, 2] and list(c.neg) == [3, 1, 1, 0]
    ref = np.nan_to_num(np.clip(s, 0, 1), nan=0.0)
    assert M.average_precision(c) == pytest.approx(average_precision_score(y, ref), abs=1e-12)


def test_histogram_memory_is_independent_of_size():
    h = M.Float16Histogram()
    h.add(np.random.default_rng(0).random(300_000, dtype=np.float32), np.zeros(300_000, bool))
    assert h.pos.nbytes + h.neg.nbytes == 2 * 8 * M.N_BINS


def _brute_dice(s: np.ndarray, y: np.ndarray, t: float) -> float:
    seg = s >= t
    denom = seg.sum() + y.sum()
    return 1.0 if denom == 0 else 2.0 * (seg & y).sum() / denom


def test_dice_at_matches_direct_computation():
    rng = np.random.default_rng(3)
    s, y = _random_case(rng, 3000, levels=50)
    c = M.counts_from_scores(s, y)
    for t in [-1.0, 0.0, 0.1, 0.33, 0.5, 0.77, 1.0, 2.0, *rng.random(10)]:
        assert M.dice_at(c, t)[0] == pytest.approx(_brute_dice(s, y, t))


def test_greedy_dice_is_a_reachable_lower_bound_of_the_best():
    rng = np.random.default_rng(4)
    for _ in range(5):
        s, y = _random_case(rng, 800, levels=None)
        c = M.counts_from_scores(s, y)
        d, t = M.greedy_dice(c)
        dmax, tmax = M.max_dice(c)
        assert d == pytest.approx(_brute_dice(s, y, t))  # the reported DICE is the DICE at the reported threshold
        assert d <= dmax + 1e-12
        assert dmax == pytest.approx(max(_brute_dice(s, y, v) for v in np.unique(s)))


def test_greedy_dice_finds_a_perfect_threshold_and_unimodal_optimum():
    y = np.zeros(1000, dtype=bool)
    y[:50] = True
    s = np.where(y, 0.62, 0.2) + np.linspace(0, 0.01, 1000)  # separable: any t in (0.21, 0.62] is perfect
    c = M.counts_from_scores(s, y)
    d, t = M.greedy_dice(c)
    assert d == 1.0 and 0.21 < t <= 0.62
    # unimodal DICE curve: greedy reaches the exhaustive optimum
    rng = np.random.default_rng(5)
    y2 = rng.random(20000) < 0.05
    s2 = np.clip(rng.normal(0.3, 0.1, y2.size) + 0.3 * y2, 0, 1)
    c2 = M.counts_from_scores(s2, y2)
    assert M.greedy_dice(c2)[0] == pytest.approx(M.max_dice(c2)[0], abs=2e-3)


def test_compute_metrics_fields():
    s, y = _random_case(np.random.default_rng(6), 500, levels=None)
    m = M.compute_metrics(M.counts_from_scores(s, y))
    assert 0 <= m.ap <= 1 and 0 <= m.auroc <= 1 and 0 <= m.dice <= m.dice_max <= 1
    assert m.n_pos == y.sum() and m.n_neg == (~y).sum()
    assert M.compute_metrics(M.counts_from_scores(s, y), with_dice=False).dice is None
