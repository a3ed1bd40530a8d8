"""Bootstrap confidence intervals over cases for AP, AUROC and the greedy DICE.

A replicate draws as many cases as the row has, uniformly with replacement, and recomputes each metric on the
union of the drawn cases (a case drawn k times counts k times). The interval is the percentile interval of
the replicates (2.5th and 97.5th percentiles for 95%).

Pixel metrics pool millions of voxels per case, so replicates never touch voxels: every case is reduced once
to positive and negative counts per score bin (:class:`CaseTable`, one row per case, built from the same
per-float16-value counts the exact point estimate uses). A replicate's counts are then ``weights @ table``,
with ``weights[c]`` = how often case ``c`` was drawn, and AP / AUROC follow from the summed counts in one
vectorised pass over the bins. The bins are the distinct values of the predictions as the evaluation reads
them (pixel: float16, at most 15,361 values in [0, 1]; sample: the float64 scores), so a replicate's metrics
are exact for its cases, not a binned approximation: with every case drawn once the replicate reproduces the
point estimate (tested to 1e-12). Against exact float64 scores the float16 reading differs by under 1e-3 in
AP and AUROC on continuous random scores (also tested), which is the MOOD evaluator's own rounding.

A replicate whose drawn cases lack positives or negatives has undefined metrics (e.g. only normal cases were
drawn); it is left out, and the number of replicates used is reported beside the interval.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from mood_detector.evaluation.metrics import Counts, GreedySearch, greedy_dice

log = logging.getLogger(__name__)

#: replicates per matrix product (bounds the temporary memory: CHUNK x bins float64 arrays)
CHUNK = 64


@dataclass(frozen=True)
class BootstrapConfig:
    """How to bootstrap.

    Attributes:
        replicates: number of resamples (0 = no intervals).
        seed: seed of the resampling; every row starts from it, so a row's interval does not depend on which
            other rows are computed.
        level: coverage of the percentile interval.
    """

    replicates: int = 1000
    seed: int = 0
    level: float = 0.95


@dataclass(frozen=True)
class Interval:
    """A percentile interval (NaN bounds when no replicate was defined)."""

    lo: float
    hi: float


@dataclass
class RowIntervals:
    """Intervals of one table row and the number of replicates they rest on."""

    ap: Interval
    auroc: Interval
    dice: Interval | None
    replicates: int
    valid: int

    def fields(self) -> dict[str, float | int | None]:
        """Flat JSON fields: ``ap_lo``, ``ap_hi``, ... beside the metrics of the same row."""
        out: dict[str, float | int | None] = {}
        for name in ("ap", "auroc", "dice"):
            iv: Interval | None = getattr(self, name)
            out[f"{name}_lo"] = None if iv is None else _json_float(iv.lo)
            out[f"{name}_hi"] = None if iv is None else _json_float(iv.hi)
        out["bootstrap_replicates"] = self.replicates
        out["bootstrap_valid"] = self.valid
        return out


def _json_float(x: float) -> float | None:
    return None if math.isnan(x) else x


@dataclass
class CaseTable:
    """Positive and negative counts per case (rows) and shared score bin (columns, ``scores`` ascending)."""

    scores: np.ndarray
    pos: np.ndarray
    neg: np.ndarray

    @classmethod
    def from_counts(cls, cases: Sequence[Counts]) -> "CaseTable":
        """Stack per-case :class:`Counts` on the union of their scores (float64: exact for counts < 2^53)."""
        if not cases:
            raise ValueError("no cases to bootstrap")
        scores = np.unique(np.concatenate([c.scores for c in cases]))
        pos = np.zeros((len(cases), scores.size))
        neg = np.zeros((len(cases), scores.size))
        for i, c in enumerate(cases):
            cols = np.searchsorted(scores, c.scores)
            pos[i, cols] = c.pos
            neg[i, cols] = c.neg
        return cls(scores, pos, neg)

    @property
    def n_cases(self) -> int:
        return self.pos.shape[0]

    def pooled(self, weights: np.ndarray) -> Counts:
        """The :class:`Counts` of the cases taken ``weights`` times each (empty bins dropped)."""
        pos, neg = weights @ self.pos, weights @ self.neg
        keep = np.flatnonzero(pos + neg > 0)
        return Counts(self.scores[keep], pos[keep].astype(np.int64), neg[keep].astype(np.int64))


def resample_weights(n_cases: int, replicates: int, rng: np.random.Generator) -> np.ndarray:
    """``(replicates, n_cases)`` draw counts: row r says how often each case is in resample r."""
    idx = rng.integers(0, n_cases, size=(replicates, n_cases))
    flat = idx + n_cases * np.arange(replicates)[:, None]
    return np.bincount(flat.ravel(), minlength=replicates * n_cases).reshape(replicates, n_cases).astype(np.float64)


def average_precision_rows(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """:func:`~mood_detector.evaluation.metrics.average_precision` of every row of ``(R, bins)`` counts (bins
    ascending in score; empty bins allowed); NaN for rows without positives."""
    pos_d, neg_d = pos[:, ::-1], neg[:, ::-1]  # descending thresholds
    tp = np.cumsum(pos_d, axis=1)
    seen = tp + np.cumsum(neg_d, axis=1)
    precision = np.divide(tp, seen, out=np.zeros_like(tp), where=seen > 0)
    n_pos = tp[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_pos > 0, np.sum(pos_d * precision, axis=1) / n_pos, np.nan)


def roc_auc_rows(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """:func:`~mood_detector.evaluation.metrics.roc_auc` (ties count half) of every row; NaN without both
    classes."""
    neg_below = np.cumsum(neg, axis=1) - neg
    twice = 2.0 * np.sum(pos * neg_below, axis=1) + np.sum(pos * neg, axis=1)
    pairs = 2.0 * pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, twice / pairs, np.nan)


def percentile_interval(values: np.ndarray, level: float) -> Interval:
    """The central ``level`` percentile interval of the finite ``values`` (NaN if there are none)."""
    v = values[np.isfinite(values)]
    if v.size == 0:
        return Interval(float("nan"), float("nan"))
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(v, [tail, 1.0 - tail])
    return Interval(float(lo), float(hi))


@dataclass
class Replicates:
    """Metric values of every replicate (NaN where undefined)."""

    ap: np.ndarray
    auroc: np.ndarray
    dice: np.ndarray | None


def replicate_metrics(table: CaseTable, cfg: BootstrapConfig, with_dice: bool,
                      search: GreedySearch = GreedySearch()) -> Replicates:
    """AP, AUROC (and greedy DICE) of ``cfg.replicates`` case resamples of ``table``."""
    rng = np.random.default_rng(cfg.seed)
    weights = resample_weights(table.n_cases, cfg.replicates, rng)
    ap, auroc = np.empty(cfg.replicates), np.empty(cfg.replicates)
    dice = np.full(cfg.replicates, np.nan) if with_dice else None
    for start in range(0, cfg.replicates, CHUNK):
        w = weights[start:start + CHUNK]
        pos, neg = w @ table.pos, w @ table.neg
        ap[start:start + len(w)] = average_precision_rows(pos, neg)
        auroc[start:start + len(w)] = roc_auc_rows(pos, neg)
    defined = np.isfinite(auroc)  # both classes drawn
    ap[~defined] = np.nan
    if dice is not None:
        for r in np.flatnonzero(defined):
            dice[r] = greedy_dice(table.pooled(weights[r]), search)[0]
    return Replicates(ap, auroc, dice)


def bootstrap_row(table: CaseTable, cfg: BootstrapConfig, with_dice: bool,
                  search: GreedySearch = GreedySearch()) -> RowIntervals:
    """Percentile intervals of one row's metrics over ``cfg.replicates`` case resamples."""
    reps = replicate_metrics(table, cfg, with_dice, search)
    valid = int(np.isfinite(reps.auroc).sum())
    if valid < cfg.replicates:
        log.info("bootstrap: %d of %d replicates drew only one class and were left out",
                 cfg.replicates - valid, cfg.replicates)
    dice = percentile_interval(reps.dice, cfg.level) if reps.dice is not None else None
    return RowIntervals(ap=percentile_interval(reps.ap, cfg.level), auroc=percentile_interval(reps.auroc, cfg.level),
                        dice=dice, replicates=cfg.replicates, valid=valid)
