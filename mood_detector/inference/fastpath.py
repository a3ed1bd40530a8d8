"""Wasted-compute cuts for slice-wise inference (generic over detectors; used by the predictor).

* **Empty slices**: a slice with no voxel above the background threshold (0: MOOD volumes are in [0, 1] with
  a zero background) is not run; its pixel and slice scores are 0. Allowed for detectors with
  ``Detector.skip_empty_slices`` (FPI: trained on non-empty slices only; ``mood-detector benchmark-speed`` and
  ``scripts/research/cpu_path_fidelity.py`` measure what the model would have said there).
* **Foreground crop**: each slice batch is cut to the bounding box of its foreground, widened by ``margin``
  pixels and rounded outwards to multiples of the network's stride (offset *and* size), so every
  stride-2 layer samples the same grid as on the full slice. Allowed for detectors with
  ``Detector.supports_crop`` (fully convolutional). Inside the box, far from its edges, the output equals
  the full-slice output up to float rounding; near the edges the network's zero padding replaces the
  activations the background would have produced (BatchNorm makes those non-zero), which ``margin``
  keeps away from the foreground; outside the box the scores are 0.

Both read the slices' intensities, and a dark region of the object (a dark lesion, signal loss) has the
background's intensity there. Given the foreground mask at the network's size (``foreground``,
:func:`mood_detector.preprocess.foreground_mask`, which holds dark regions inside the object and cut into its
surface, resized with :func:`mood_detector.preprocess.resize_mask`), a slice with any foreground voxel is run
and the box covers the foreground as well, so no dark region of the object is skipped or cut off.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Box:
    """A crop window ``[y0, y1) x [x0, x1)`` of a slice."""

    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def index(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y1), slice(self.x0, self.x1)

    @property
    def area(self) -> int:
        return (self.y1 - self.y0) * (self.x1 - self.x0)


def occupied(slices: np.ndarray, threshold: float = 0.0, foreground: np.ndarray | None = None) -> np.ndarray:
    """Boolean (S,): slices ``(S, H, W)`` (any strides; no copy is made) with a value above ``threshold`` or,
    given ``foreground`` (boolean, the slices' shape), a foreground voxel."""
    if slices.shape[0] == 0:
        return np.zeros(0, dtype=bool)
    occ = slices.max(axis=(1, 2)) > threshold
    if foreground is not None:
        occ |= np.asarray(foreground, dtype=bool).any(axis=(1, 2))
    return occ


def _aligned(lo: int, hi: int, margin: int, stride: int, size: int) -> tuple[int, int]:
    lo = max(0, (lo - margin) // stride * stride)
    hi = min(size, -(-(hi + margin) // stride) * stride)
    return lo, hi


def crop_box(batch: np.ndarray, stride: int, margin: int, threshold: float = 0.0,
             foreground: np.ndarray | None = None) -> Box | None:
    """The stride-aligned foreground box of a slice batch ``(B, H, W)`` widened by ``margin`` pixels, or
    ``None`` when nothing is above ``threshold`` (and nothing is in ``foreground``, a boolean mask of the
    batch's shape, when given: the box covers it too). Slice sizes that are not multiples of ``stride`` get
    the full slice (the network could not run on a cut of them)."""
    b, h, w = batch.shape
    if h % stride or w % stride:
        return Box(0, h, 0, w)
    fg = batch.max(axis=0) > threshold
    if foreground is not None:
        fg |= np.asarray(foreground, dtype=bool).any(axis=0)
    rows = np.flatnonzero(fg.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(fg.any(axis=0))
    y0, y1 = _aligned(int(rows[0]), int(rows[-1]) + 1, margin, stride, h)
    x0, x1 = _aligned(int(cols[0]), int(cols[-1]) + 1, margin, stride, w)
    return Box(y0, y1, x0, x1)
