"""Exact ranking metrics from counts: average precision (AP), AUROC and the greedy-threshold DICE.

Every metric here depends on the scores only through their order, so it can be computed from the number of
positive and negative items at each *distinct* score (a :class:`Counts` table) instead of from the full
arrays. Two ways to build the table:

* :class:`Float16Histogram` (pixel task, any number of voxels, O(1) memory): the MOOD evaluator reads
  predictions as float16 and clips them to [0, 1], so a score is one of the 15,361 float16 values in
  [0, 1] (bit patterns 0x0000 ... 0x3C00, whose unsigned order is the numeric order). Counting positives and
  negatives per bit pattern keeps *every* distinct value apart, so the metrics are exact, not binned
  approximations; ties (equal float16 values) fall into one bin exactly as they form one threshold in
  scikit-learn.
* :func:`counts_from_scores` (sample task, a few hundred floats): ``np.unique`` of the float64 scores.

Equivalences (tested against scikit-learn to 1e-6 on random data with many ties):

* AP = sum over distinct thresholds t (descending) of (TP(t) - TP(t_prev)) / P * precision(t), i.e.
  ``sklearn.metrics.average_precision_score`` (step-wise, no interpolation). No positives gives 0.0, as in
  scikit-learn.
* AUROC = P(score_pos > score_neg) + 0.5 P(score_pos == score_neg) (Mann-Whitney U with tied pairs counted
  half) = the trapezoidal area under the ROC curve through all distinct thresholds
  (``sklearn.metrics.roc_auc_score``); undefined (NaN) without positives or negatives.
* DICE(t) = 2 TP(t) / (TP(t) + FP(t) + P) for the segmentation ``score >= t``. The FPI paper reports the
  best DICE over thresholds found by a greedy search (following Baur et al. 2021); :func:`greedy_dice`
  documents the search used here.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: number of float16 bit patterns in [0, 1]: +0.0 (0x0000) ... 1.0 (0x3C00)
N_BINS = 0x3C00 + 1
#: voxels converted per step (bounds the temporary memory of :meth:`Float16Histogram.add`)
CHUNK = 1 << 22


@dataclass
class Counts:
    """Positive and negative counts at each distinct score (``scores`` ascending, no empty entries)."""

    scores: np.ndarray
    pos: np.ndarray
    neg: np.ndarray

    @property
    def n_pos(self) -> int:
        return int(self.pos.sum())

    @property
    def n_neg(self) -> int:
        return int(self.neg.sum())


def float16_codes(scores: np.ndarray) -> tuple[np.ndarray, int]:
    """Bit patterns (uint16, 0 ... 0x3C00) of ``scores`` cast to float16 and clipped to [0, 1], plus the number
    of NaN values (mapped to 0; the MOOD evaluator would fail on them). -0.0 maps to +0.0."""
    s = np.array(scores, dtype=np.float16, copy=True).ravel()
    nan = np.isnan(s)
    n_nan = int(nan.sum())
    if n_nan:
        s[nan] = 0.0
    np.clip(s, 0.0, 1.0, out=s)
    return s.view(np.uint16) & np.uint16(0x7FFF), n_nan


class Float16Histogram:
    """Streaming positive/negative counts per float16 score in [0, 1]; exact for MOOD-style evaluation.

    Memory is two int64 arrays of :data:`N_BINS` entries, whatever the number of voxels added.
    """

    def __init__(self) -> None:
        self.pos = np.zeros(N_BINS, dtype=np.int64)
        self.neg = np.zeros(N_BINS, dtype=np.int64)
        self.n_nan = 0

    def add(self, scores: np.ndarray, labels: np.ndarray) -> None:
        """Add scores (any float array; cast to float16 and clipped to [0, 1]) with boolean ``labels`` of the
        same size."""
        s = np.asarray(scores).reshape(-1)
        y = np.asarray(labels).reshape(-1)
        if s.size != y.size:
            raise ValueError(f"scores ({s.size}) and labels ({y.size}) differ in size")
        for i in range(0, s.size, CHUNK):
            codes, n_nan = float16_codes(s[i:i + CHUNK])
            self.n_nan += n_nan
            yi = y[i:i + CHUNK].astype(bool, copy=False)
            total = np.bincount(codes, minlength=N_BINS)
            pos = np.bincount(codes[yi], minlength=N_BINS)
            self.pos += pos
            self.neg += total - pos

    def merged(self, *others: "Float16Histogram") -> "Float16Histogram":
        """A new histogram holding this one's counts plus ``others``'."""
        out = Float16Histogram()
        for h in (self, *others):
            out.pos += h.pos
            out.neg += h.neg
            out.n_nan += h.n_nan
        return out

    def counts(self) -> Counts:
        """The non-empty bins as a :class:`Counts` table (scores are the exact float16 values)."""
        keep = np.flatnonzero((self.pos + self.neg) > 0)
        values = keep.astype(np.uint16).view(np.float16).astype(np.float64)
        return Counts(values, self.pos[keep].copy(), self.neg[keep].copy())


def counts_from_scores(scores: np.ndarray, labels: np.ndarray) -> Counts:
    """Exact :class:`Counts` of arbitrary float scores (no casting, no clipping): for small arrays."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).astype(bool).ravel()
    if s.size != y.size:
        raise ValueError(f"scores ({s.size}) and labels ({y.size}) differ in size")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    values, inverse = np.unique(s, return_inverse=True)
    pos = np.bincount(inverse[y], minlength=values.size).astype(np.int64)
    total = np.bincount(inverse, minlength=values.size).astype(np.int64)
    return Counts(values, pos, total - pos)


def average_precision(c: Counts) -> float:
    """AP exactly as ``sklearn.metrics.average_precision_score`` (0.0 when there are no positives)."""
    n_pos = c.n_pos
    if n_pos == 0 or c.scores.size == 0:
        return 0.0
    pos, neg = c.pos[::-1], c.neg[::-1]  # descending thresholds
    tp = np.cumsum(pos)
    fp = np.cumsum(neg)
    precision = tp / (tp + fp)
    return float(np.sum(pos * precision) / n_pos)


def roc_auc(c: Counts) -> float:
    """AUROC exactly as ``sklearn.metrics.roc_auc_score`` (ties count half); NaN if a class is missing."""
    n_pos, n_neg = c.n_pos, c.n_neg
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    neg_below = np.cumsum(c.neg) - c.neg
    twice = 2 * int(np.sum(c.pos * neg_below)) + int(np.sum(c.pos * c.neg))  # exact integers
    return float(twice / (2.0 * n_pos * n_neg))


def dice_at(c: Counts, thresholds: np.ndarray | float) -> np.ndarray:
    """DICE of the segmentation ``score >= t`` for each threshold ``t`` (1.0 when both the segmentation and
    the ground truth are empty)."""
    t = np.atleast_1d(np.asarray(thresholds, dtype=np.float64))
    cpos = np.concatenate([[0], np.cumsum(c.pos)])
    cneg = np.concatenate([[0], np.cumsum(c.neg)])
    idx = np.searchsorted(c.scores, t, side="left")  # scores[idx:] >= t
    tp = cpos[-1] - cpos[idx]
    fp = cneg[-1] - cneg[idx]
    denom = tp + fp + cpos[-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2.0 * tp / np.maximum(denom, 1), 1.0)


@dataclass(frozen=True)
class GreedySearch:
    """Coarse-to-fine threshold search for :func:`greedy_dice`.

    Attributes:
        steps: intervals per round (``steps + 1`` thresholds evaluated, ends included).
        rounds: refinement rounds; each narrows the interval to two grid steps around the best threshold,
            i.e. by a factor ``steps / 2``. The defaults (10, 12) reach a resolution of 0.1 / 5^11 ~ 2e-9,
            finer than float16 near 0 needs.
    """

    steps: int = 10
    rounds: int = 12


def greedy_dice(c: Counts, search: GreedySearch = GreedySearch()) -> tuple[float, float]:
    """Best DICE and its threshold by greedy coarse-to-fine search (the FPI paper's estimated [DICE]).

    Round 1 evaluates ``steps + 1`` evenly spaced thresholds over [min score, max score]; each later round
    evaluates ``steps + 1`` thresholds over [best - step, best + step] of the previous round, keeping the best
    seen (ties: the lowest threshold). Each DICE evaluation is O(log n) on the counts, so the search costs
    nothing next to reading the volumes. Being greedy it can miss a better, narrow optimum elsewhere: the
    result is a lower bound of :func:`max_dice` (equal when DICE is unimodal in the threshold).
    """
    if c.scores.size == 0:
        return float("nan"), float("nan")
    lo0, hi0 = float(c.scores[0]), float(c.scores[-1])
    lo, hi = lo0, hi0
    best_d, best_t = -1.0, hi0
    for _ in range(max(1, search.rounds)):
        ts = np.linspace(lo, hi, max(1, search.steps) + 1)
        ds = dice_at(c, ts)
        k = int(np.argmax(ds))
        if ds[k] > best_d:
            best_d, best_t = float(ds[k]), float(ts[k])
        step = (hi - lo) / max(1, search.steps)
        if step <= 0:
            break
        lo, hi = max(lo0, best_t - step), min(hi0, best_t + step)
    return best_d, best_t


def max_dice(c: Counts) -> tuple[float, float]:
    """The exact best DICE over all distinct thresholds (upper bound of :func:`greedy_dice`)."""
    if c.scores.size == 0:
        return float("nan"), float("nan")
    ds = dice_at(c, c.scores)
    k = int(np.argmax(ds))
    return float(ds[k]), float(c.scores[k])


@dataclass
class Metrics:
    """One row of an evaluation table."""

    ap: float
    auroc: float
    dice: float | None
    dice_threshold: float | None
    dice_max: float | None
    n_pos: int
    n_neg: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compute_metrics(c: Counts, with_dice: bool = True, search: GreedySearch = GreedySearch()) -> Metrics:
    """AP, AUROC and (optionally) the greedy DICE of one :class:`Counts` table."""
    dice = thr = dmax = None
    if with_dice:
        dice, thr = greedy_dice(c, search)
        dmax = max_dice(c)[0]
    return Metrics(ap=average_precision(c), auroc=roc_auc(c), dice=dice, dice_threshold=thr, dice_max=dmax,
                   n_pos=c.n_pos, n_neg=c.n_neg)
