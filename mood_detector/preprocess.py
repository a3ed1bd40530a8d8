"""Foreground, intensity normalisation and resampling shared by training and inference.

Real scans are not like the zero-background volumes that a generator writes: MRI has a noisy non-zero
background, skull and scalp, sometimes zero padding; CT has air at -1000 HU, a patient table and lungs. Every
volume, in training and at inference, therefore goes through the same two steps (:func:`prepare`):

1. **Foreground** (:func:`foreground_mask`): the object (head, brain or body). The rule, on a copy reduced to
   at most :data:`MASK_WORK_SIZE` voxels per axis and lightly smoothed (noise):

   * threshold halfway between the robust minimum (1st percentile) and Otsu's threshold: halfway, because
     Otsu's threshold on a skull-stripped T1 brain or on CT falls between the tissue classes of the object
     (CSF and grey matter, lung and soft tissue) while the background lies well below it. Both statistics
     come from the scanned field of view when a noisy one is padded with a constant (MRI resampled or
     padded to a cube): the box of the voxels other than the padding value, inset by :data:`FOV_INSET`,
     when that value fills under 1% of it (:func:`_padded_fov`). Otherwise the padding's zeros set the
     robust minimum and pull Otsu's threshold towards them, the threshold falls into the noise and the
     noise is kept (the whole box, on a real T1 head with Rician noise of 15% of its bright tissue). On a
     zero or constant background around the object, or with no padding, the statistics are the whole
     volume's. A field of view that lies wholly inside the object has no background of its own: there the
     statistics are the object's tissue, and its darkest tissue may be lost at the FOV's faces (a slab cut
     from inside the ICBM152 brain and zero padded: 99% kept);
   * a binary opening (cuts thin bridges: a CT table's supports, noise specks touching the head);
   * the largest connected component;
   * a closing with a ball of radius :data:`MASK_CLOSING` times the smallest edge of the reduced copy (1.5
     times the largest synthetic outlier's radius): a dark region cut into the object from its surface (a
     dark lesion, signal loss, a cavity open to the outside) is enclosed like a hole, but for a thin lens at
     its mouth where the outline bulged over it. The closing adds background only where no such ball fits
     (concavities of the outline; outside the array counts as background): the mask grew by about 4% on
     generated brains, under 0.1% on the generated abdomen, up to 8% on randomised abdomens with a patient
     table (the corners between body and table) and 0.3% on the Colin27 head;
   * holes filled in 3D and then in every slice along each axis (ventricles, lungs, bowel gas that reach
     the surface of the volume in one direction are still enclosed in the slices of another);
   * dilated by :data:`MASK_MARGIN` voxels of the reduced copy, so that partial-volume edges stay inside.

   So a dark region inside the object, or cut into it from its surface, is foreground and is scored; a dark
   region that removes an end of the object (nothing of the object beyond it) cannot be told from
   background by this rule.

2. **Intensities** (:func:`normalise_intensity`): the 0.5th and 99.5th percentiles of the foreground are
   mapped to 0 and 1, values clipped to [0, 1], and everything outside the foreground set to 0. The same
   mapping for any modality: MRI in arbitrary units, CT in Hounsfield units, data already in [0, 1].

At inference the score map is multiplied by the foreground mask: empty background is never anomalous. The
slices the network skips as empty and the crop to the foreground box
(:mod:`mood_detector.inference.fastpath`) can take the same mask, so a dark region inside the object is run
even where its intensities equal the background's.

A model card records the intensity scheme its model was trained with (``extra.preprocess``, :data:`SCHEMES`):
``foreground`` (the rule above; every model trained by this version) or ``minmax`` (earlier models: data
already in [0, 1] kept as it is, anything else min-max scaled, background kept; a card without the key).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: the mask is computed on a copy reduced to at most this many voxels per axis (then resized back)
MASK_WORK_SIZE = 128
#: dilation of the mask, in voxels of the reduced copy (2 mm for a 256^3 brain at 1 mm)
MASK_MARGIN = 1
#: radius of the closing ball, as a fraction of the smallest edge of the reduced copy: 1.5 times the largest
#: radius of the synthetic outliers (:class:`mood_detector.evaluation.outliers.OutlierConfig`), as the ball
#: must be wider than the mouth of a dark sphere cut into the object's surface to bridge it
MASK_CLOSING = 0.18
#: the padded field of view's statistics are taken this many voxels of the reduced copy inside its box: the
#: block means and the smoothing mix the padding into its outer voxels (a Gaussian of 1 voxel reaches about 2,
#: the block mean 1 more)
FOV_INSET = 3
#: intensity percentiles (inside the foreground) mapped to 0 and 1
PERCENTILES = (0.5, 99.5)
#: at most this many foreground voxels are used to estimate the percentiles (a regular subsample)
PERCENTILE_SAMPLES = 2_000_000


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of ``values`` (the split of a ``bins``-bin histogram that maximises the between-class
    variance); the midpoint of the range when the values are constant or bimodality is absent."""
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return lo
    hist, edges = np.histogram(values, bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist).astype(np.float64)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mu0 = np.divide(m0, w0, out=np.zeros_like(m0), where=w0 > 0)
    mu1 = np.divide(m0[-1] - m0, w1, out=np.zeros_like(m0), where=w1 > 0)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(edges[int(np.argmax(between[:-1])) + 1])


def _reduce(data: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    """``data`` reduced by integer strides to at most :data:`MASK_WORK_SIZE` per axis (block means)."""
    steps = tuple(max(1, int(np.ceil(s / MASK_WORK_SIZE))) for s in data.shape)
    if all(s == 1 for s in steps):
        return np.asarray(data, dtype=np.float32), steps
    crop = tuple(slice(0, (s // st) * st) for s, st in zip(data.shape, steps))
    a = np.asarray(data[crop], dtype=np.float32)
    shape = [v for s, st in zip(a.shape, steps) for v in (s // st, st)]
    return a.reshape(shape).mean(axis=(1, 3, 5)), steps


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """Holes of ``mask`` filled in 3D, then in every slice along axis 0, 1 and 2 in turn (each slice as
    :func:`scipy.ndimage.binary_fill_holes` fills it: background not 4-connected to the slice's edge), all
    slices of an axis at once: one labelling of the background with in-slice connectivity."""
    mask = ndimage.binary_fill_holes(mask)
    for axis in range(mask.ndim):
        structure = np.zeros((3,) * mask.ndim, dtype=bool)
        for other in range(mask.ndim):
            if other != axis:
                structure[tuple(slice(None) if a == other else 1 for a in range(mask.ndim))] = True
        labels, n = ndimage.label(~mask, structure=structure)
        if n == 0:
            continue
        outside = np.zeros(n + 1, dtype=bool)
        outside[0] = True  # the mask itself
        for other in range(mask.ndim):
            if other != axis:  # background on a slice's edge
                outside[np.take(labels, 0, axis=other)] = True
                outside[np.take(labels, -1, axis=other)] = True
        mask |= ~outside[labels]
    return mask


def _bbox(mask: np.ndarray) -> tuple[slice, ...] | None:
    """The bounding box of ``mask``'s True voxels (``None`` when there are none)."""
    box = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if hit.size == 0:
            return None
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)


def close_ball(mask: np.ndarray, radius: float) -> np.ndarray:
    """``mask`` closed with a ball of ``radius`` voxels (a new array; what lies outside the array counts as
    background, so an object reaching the array's edge is not cut there and no background strip along the edge
    is filled).

    The ball is approximated by the sum of an octahedron of radius ``2 radius / 3`` and a cube of half-width
    ``radius / 3`` (two chamfer distance transforms per step, far cheaper than Euclidean ones): its reach is
    0.94-1 times ``radius`` in every direction (an octahedron alone: 0.58-1). The work is limited to the
    mask's bounding box widened by the radius."""
    cube = int(round(radius / 3))
    octa = int(round(radius)) - cube
    out = np.array(mask, dtype=bool)
    box = _bbox(out)
    if box is None or octa + cube <= 0:
        return out
    pad = octa + cube + 1
    sub = np.pad(out[box], pad)
    grown = ndimage.distance_transform_cdt(~sub, metric="taxicab") <= octa
    if cube:
        grown = ndimage.distance_transform_cdt(~grown, metric="chessboard") <= cube
    closed = ndimage.distance_transform_cdt(grown, metric="taxicab") > octa
    if cube:
        closed = ndimage.distance_transform_cdt(closed, metric="chessboard") > cube
    # a closing stays inside the convex hull of the mask, so inside its box
    out[box] |= closed[(slice(pad, -pad),) * out.ndim]
    return out


def _padded_fov(small: np.ndarray) -> tuple[slice, ...] | None:
    """Where the threshold's statistics come from in the reduced copy ``small`` (unsmoothed) of a scan whose
    field of view is padded: the box of the voxels other than the padding value, less :data:`FOV_INSET` voxels
    on every side; ``None`` (the whole copy) otherwise.

    The padding value is the copy's minimum: blocks of padding alone all average to exactly it. A box counts as
    a padded field of view only when the padding value fills under 1% of it: then the 1st percentile inside
    the box is the scan's own background (noise), not the padding. Around an object on a zero (or constant)
    background the box is the object's own, its corners hold far more than 1% of the value, and the whole copy
    is used; so is a copy with no padded face (CT air with noise, an object filling the array)."""
    pad = small == small.min()
    box = _bbox(~pad)
    if box is None or all(b.stop - b.start == s for b, s in zip(box, small.shape)):
        return None
    if np.count_nonzero(pad[box]) >= 0.01 * pad[box].size:
        return None
    inner = tuple(slice(b.start + FOV_INSET, b.stop - FOV_INSET) for b in box)
    if any(b.stop - b.start < 2 for b in inner):  # too thin to hold a background of its own
        return None
    return inner


def foreground_mask(data: np.ndarray) -> np.ndarray:
    """The object in ``data`` (boolean, ``data``'s shape), by the rule in this module's docstring.

    A constant volume has no foreground (all False)."""
    small, steps = _reduce(data)
    if float(small.max()) <= float(small.min()):
        return np.zeros(data.shape, dtype=bool)
    fov = _padded_fov(small)
    small = ndimage.gaussian_filter(small, 1.0)
    # a padded field of view's own background (its noise floor) is the background level, not the padding
    stats = small if fov is None else small[fov]
    lo = float(np.percentile(stats, 1))
    thr = lo + 0.5 * (otsu_threshold(stats) - lo)
    mask = small > thr
    opened = ndimage.binary_opening(mask, iterations=1)
    if opened.any():
        mask = opened
    labels, n = ndimage.label(mask)
    if n > 1:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        mask = labels == int(np.argmax(sizes))
    mask = close_ball(mask, MASK_CLOSING * min(mask.shape))
    mask = _fill_holes(mask)
    mask = ndimage.binary_dilation(mask, iterations=MASK_MARGIN)
    if all(s == 1 for s in steps):
        return mask
    # back to the full grid: each reduced voxel covers a block of ``steps``; the remainder at the far edges
    # takes the nearest block
    idx = np.ix_(*[np.minimum(np.arange(s) // st, m - 1) for s, st, m in zip(data.shape, steps, mask.shape)])
    return mask[idx]


def normalise_intensity(data: np.ndarray, mask: np.ndarray | None = None, inplace: bool = False) -> np.ndarray:
    """Map ``data`` to [0, 1] (float32): the foreground's :data:`PERCENTILES` go to 0 and 1, values are
    clipped, and voxels outside ``mask`` are 0. ``mask`` defaults to :func:`foreground_mask`.

    With no foreground, or a foreground of one intensity, the result is all zeros. The result overwrites
    ``data`` when ``inplace`` (and ``data`` is a writeable float32 array) or when the float32 conversion
    already made a private copy, so at most one float32 copy of the volume exists."""
    arr = np.asarray(data, dtype=np.float32)
    own = (inplace or arr is not data) and arr.flags.writeable
    out = arr if own else np.empty_like(arr)
    if mask is None:
        mask = foreground_mask(arr)
    inside = arr[mask]
    if inside.size == 0:
        out.fill(0.0)
        return out
    if inside.size > PERCENTILE_SAMPLES:
        inside = inside[:: int(np.ceil(inside.size / PERCENTILE_SAMPLES))]
    lo, hi = (float(v) for v in np.percentile(inside, PERCENTILES))
    del inside
    if hi <= lo:
        out.fill(0.0)
        return out
    np.subtract(arr, np.float32(lo), out=out)
    out *= np.float32(1.0 / (hi - lo))
    np.clip(out, 0.0, 1.0, out=out)
    out[~mask] = 0.0
    return out


def scale_unit(data: np.ndarray, inplace: bool = False) -> np.ndarray:
    """``data`` as float32 in [0, 1] with nothing removed (background kept): data already inside [0, 1] is
    returned as it is, anything else is min-max scaled. The ``minmax`` scheme of earlier models, and how test
    cases keep a scan's look. Overwrites ``data`` under the same rule as :func:`normalise_intensity` (at most
    one float32 copy of a 512^3 volume)."""
    arr = np.asarray(data, dtype=np.float32)
    lo, hi = float(arr.min()), float(arr.max())
    if lo >= 0.0 and hi <= 1.0:
        return arr
    own = (inplace or arr is not data) and arr.flags.writeable
    out = arr if own else np.empty_like(arr)
    if hi <= lo:
        out.fill(0.0)
        return out
    np.subtract(arr, np.float32(lo), out=out)
    out *= np.float32(1.0 / (hi - lo))
    np.clip(out, 0.0, 1.0, out=out)
    return out


#: intensity schemes a model card can name (``extra.preprocess``); the first is what training uses now
SCHEMES = ("foreground", "minmax")


def scheme_of(extra: dict) -> str:
    """The intensity scheme of a model card's ``extra`` (``minmax`` for cards written before it was recorded)."""
    scheme = str(extra.get("preprocess", "minmax"))
    if scheme not in SCHEMES:
        raise ValueError(f"the model card's preprocess {scheme!r} is not one of {', '.join(SCHEMES)}")
    return scheme


def prepare(data: np.ndarray, inplace: bool = False, scheme: str = "foreground") -> tuple[np.ndarray, np.ndarray]:
    """(normalised volume, foreground mask) of ``data``: what training and inference feed the network, by
    ``scheme`` (:data:`SCHEMES`); the mask is the foreground either way (scores outside it are 0)."""
    mask = foreground_mask(data)
    if scheme == "minmax":
        return scale_unit(data, inplace=inplace), mask
    return normalise_intensity(data, mask, inplace=inplace), mask


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


def resize_mask(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Boolean ``mask`` resized to ``shape`` by its nearest voxels (voxel centres aligned, as
    :func:`resample`); the mask itself when the shape already matches. For the foreground at the network's
    size (:mod:`mood_detector.inference.fastpath`), where the mask's margin covers the rounding."""
    mask = np.asarray(mask, dtype=bool)
    if tuple(mask.shape) == tuple(shape):
        return mask
    idx = np.ix_(*[np.minimum(((np.arange(t) + 0.5) * (s / t)).astype(np.intp), s - 1)
                   for s, t in zip(mask.shape, shape)])
    return mask[idx]


def to_slices(volume: np.ndarray, axis: int) -> np.ndarray:
    """View of ``volume`` with the slicing axis first: (S, H, W)."""
    return np.moveaxis(volume, axis, 0)
