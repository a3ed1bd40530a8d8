"""ROC and precision-recall curve points for the report, on top of the evaluation harness's exact counts.

The counts come from :mod:`mood_detector.evaluation.metrics` (``Float16Histogram`` for the pixel level,
``counts_from_scores`` for the sample level), and AP / AUROC from its ``average_precision`` / ``roc_auc``, so the
numbers in the curve legends are the harness's. The harness computes metrics only; this module adds the
curve points (one per distinct score threshold) that the plots need.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mood_detector.evaluation.metrics import Counts, average_precision, roc_auc


@dataclass(frozen=True)
class Curves:
    """ROC and PR curves of one score set.

    Attributes:
        fpr, tpr: the ROC curve from (0, 0) to (1, 1), one point per distinct threshold (descending).
        recall, precision: the PR curve, recall non-decreasing, starting at (0, 1).
        ap, auroc: the harness's average precision and AUROC of the same counts.
        positives, negatives: counts of positive and negative items.
    """

    fpr: np.ndarray
    tpr: np.ndarray
    recall: np.ndarray
    precision: np.ndarray
    ap: float
    auroc: float
    positives: int
    negatives: int


def curve_points(c: Counts) -> Curves | None:
    """ROC / PR points of a counts table (scores ascending); ``None`` when one class is empty."""
    n_pos, n_neg = c.n_pos, c.n_neg
    if n_pos == 0 or n_neg == 0:
        return None
    tp = np.cumsum(np.asarray(c.pos, dtype=np.float64)[::-1])  # thresholds from the highest score down
    fp = np.cumsum(np.asarray(c.neg, dtype=np.float64)[::-1])
    tpr, fpr = tp / n_pos, fp / n_neg
    precision = tp / np.maximum(tp + fp, 1.0)
    return Curves(fpr=np.concatenate([[0.0], fpr]), tpr=np.concatenate([[0.0], tpr]),
                  recall=np.concatenate([[0.0], tpr]), precision=np.concatenate([[1.0], precision]),
                  ap=average_precision(c), auroc=roc_auc(c), positives=n_pos, negatives=n_neg)
