"""Intensity normalisation and resampling shared by training and inference."""

from __future__ import annotations

import numpy as np


def normalise_intensity(data: np.ndarray, inplace: bool = False) -> np.ndarray:
    """Map a volume to [0, 1] (float32).

    Data already inside [0, 1] (MOOD's convention) is returned unchanged. Anything else (CT in Hounsfield
    units, negative values, integer MRI) is min-max scaled to [0, 1]; a constant volume becomes all zeros.
    The result overwrites ``data`` when ``inplace`` (and ``data`` is a writeable float32 array) or when the
    float32 conversion already made a private copy, so at most one float32 copy of the volume exists.
    """
    arr = np.asarray(data, dtype=np.float32)
    own = (inplace or arr is not data) and arr.flags.writeable
    lo, hi = float(arr.min()), float(arr.max())
    if lo >= 0.0 and hi <= 1.0:
        return arr
    out = arr if own else np.empty_like(arr)
    if hi <= lo:
        out.fill(0.0)
        return out
    np.subtract(arr, np.float32(lo), out=out)
    out *= np.float32(1.0 / (hi - lo))
    np.clip(out, 0.0, 1.0, out=out)
    return out


def resample(data: np.ndarray, shape: tuple[int, ...], order: int = 1) -> np.ndarray:
    """Resample ``data`` to exactly ``shape`` (scipy.ndimage.zoom, linear by default); a no-op copy-free
    return when the shape already matches."""
    if tuple(data.shape) == tuple(shape):
        return data
    from scipy import ndimage  # imported here: seconds at start-up, and canonical-size volumes never need it

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
