"""From per-slice scores to one volume score (the FPI reference code's rule, used by every detector)."""

from __future__ import annotations

import numpy as np


def savgol_filter(x: np.ndarray, window: int, polyorder: int) -> np.ndarray:
    """Savitzky-Golay smoothing of a 1D sequence, equal (to rounding) to ``scipy.signal.savgol_filter(x, window,
    polyorder)`` with its default ``mode="interp"``: the least-squares polynomial of the centred window gives
    each interior value; the first and last ``window // 2`` values come from the polynomial fitted to the first
    and last window. Written in NumPy because importing ``scipy.signal`` costs seconds at every start-up.
    Requires an odd ``polyorder < window <= len(x)``."""
    x = np.asarray(x, dtype=np.float64)
    n, half = x.size, window // 2
    if window % 2 == 0 or not polyorder < window <= n:
        raise ValueError(f"need an odd window in ({polyorder}, {n}], got {window}")
    t = np.arange(window, dtype=np.float64) - half
    vander = np.vander(t, polyorder + 1, increasing=True)  # (window, polyorder + 1)
    fit = np.linalg.pinv(vander)                             # window values -> polynomial coefficients
    out = np.empty(n, dtype=np.float64)
    out[half:n - half] = np.lib.stride_tricks.sliding_window_view(x, window) @ fit[0]
    out[:half] = vander[:half] @ (fit @ x[:window])
    out[n - half:] = vander[half + 1:] @ (fit @ x[n - window:])
    return out


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


def parse_slice_rule(rule: str) -> float | None:
    """``"mean"`` -> None (the mean over the whole slice: the FPI reference code's rule); ``"top:Q"`` -> Q, the
    fraction of a slice's pixels (0 < Q <= 1) whose highest scores are averaged. Anything else is a ValueError."""
    if rule == "mean":
        return None
    name, _, value = rule.partition(":")
    try:
        q = float(value)
    except ValueError:
        q = -1.0
    if name != "top" or not 0.0 < q <= 1.0:
        raise ValueError(f"slice score rule {rule!r}: use 'mean' or 'top:Q' with 0 < Q <= 1")
    return q


def slice_scores(pixel, area: int, rule: str = "mean"):
    """Slice scores (N,) from pixel scores ``pixel`` (N, h, w) (a torch tensor, possibly a crop of slices of
    ``area`` pixels whose outside scores 0): the mean over the whole slice, or with ``top:Q`` the mean of the
    ``Q * area`` highest pixel scores, so a small bright anomaly is not averaged away by the slice's size."""
    q = parse_slice_rule(rule)
    if q is None:
        return pixel.sum(dim=(1, 2)) / area
    flat = pixel.flatten(1)
    k = max(1, int(round(q * area)))
    top = flat.topk(min(k, flat.shape[1]), dim=1).values.sum(1)
    return top / k  # pixels beyond the crop (score 0) count with 0
