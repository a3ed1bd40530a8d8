"""Intensity normalisation and resampling shared by training and inference."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def normalise_intensity(data: np.ndarray) -> np.ndarray:
    """Map a volume to [0, 1] (float32, in place where possible).

    Data already inside [0, 1] (MOOD's convention) is returned unchanged. Anything else (CT in Hounsfield
    units, negative values, integer MRI) is min-max scaled to [0, 1]; a constant volume becomes all zeros.
    """
    data = np.asarray(data, dtype=np.float32)
    lo, hi = float(data.min()), float(data.max())
    if lo >= 0.0 and hi <= 1.0:
        return data
    if hi <= lo:
        return np.zeros_like(data)
    data = data - lo
    data *= 1.0 / (hi - lo)
    np.clip(data, 0.0, 1.0, out=data)
    return data


def resample(data: np.ndarray, shape: tuple[int, ...], order: int = 1) -> np.ndarray:
    """Resample ``data`` to exactly ``shape`` (scipy.ndimage.zoom, linear by default); a no-op copy-free
    return when the shape already matches."""
    if tuple(data.shape) == tuple(shape):
        return data
    factors = [t / s for t, s in zip(shape, data.shape)]
    out = ndimage.zoom(data, factors, order=order, mode="nearest", grid_mode=True)
    if out.shape != tuple(shape):  # guard against rounding of the output shape
        pad = [(0, max(0, t - o)) for t, o in zip(shape, out.shape)]
        out = np.pad(out, pad, mode="edge")[tuple(slice(0, t) for t in shape)]
    return out.astype(np.float32, copy=False)


def to_slices(volume: np.ndarray, axis: int) -> np.ndarray:
    """View of ``volume`` with the slicing axis first: (S, H, W)."""
    return np.moveaxis(volume, axis, 0)


def from_slices(slices: np.ndarray, axis: int) -> np.ndarray:
    """Inverse of :func:`to_slices`."""
    return np.moveaxis(slices, 0, axis)
