"""From per-slice scores to one volume score (the FPI reference code's rule, used by every detector)."""

from __future__ import annotations

import numpy as np
from scipy.signal import savgol_filter


def savgol_window(n: int) -> int:
    """Savitzky-Golay window for ``n`` slices: about 10% of n, forced odd, at least 5 (> polynomial order 3),
    at most n (odd)."""
    w = max(5, int(round(0.1 * n)))
    if w % 2 == 0:
        w += 1
    if w > n:
        w = n if n % 2 == 1 else n - 1
    return w


def sample_score(slice_scores: np.ndarray, top_fraction: float = 0.25) -> float:
    """Volume score from per-slice scores: Savitzky-Golay filter over slices (window ~10% of the slice
    count, odd, polynomial order 3), then the mean of the top ``top_fraction`` filtered values, clipped to
    [0, 1]. Fewer than 5 slices skip the filter."""
    s = np.asarray(slice_scores, dtype=np.float64).ravel()
    if s.size == 0:
        return 0.0
    w = savgol_window(s.size)
    filtered = savgol_filter(s, w, 3) if w > 3 else s
    k = max(1, int(np.ceil(top_fraction * s.size)))
    top = np.sort(filtered)[-k:]
    return float(np.clip(top.mean(), 0.0, 1.0))
