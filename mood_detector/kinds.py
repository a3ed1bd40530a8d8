"""Dataset kinds: the one small table that says how each MOOD dataset is sliced and sampled."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class Kind:
    """How one dataset kind is handled.

    Attributes:
        name: ``brain`` or ``abdom``.
        size: the canonical cubic edge length of the volumes (and of the network's slices).
        slice_axis: array axis the 2D network slices along.
    """

    name: str
    size: int
    slice_axis: int


KINDS: dict[str, Kind] = {
    "brain": Kind("brain", 256, 2),
    "abdom": Kind("abdom", 512, 1),
}


def get_kind(name: str) -> Kind:
    """Return the :class:`Kind` called ``name`` (``brain`` or ``abdom``)."""
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"unknown kind {name!r}; choose one of {sorted(KINDS)} or 'auto'") from None


def kind_for_shape(shape: Sequence[int]) -> Kind:
    """Pick the kind for a volume shape: an exact canonical cube wins, otherwise the kind whose size is
    nearest (on a log scale) to the largest dimension."""
    for kind in KINDS.values():
        if tuple(shape) == (kind.size,) * 3:
            return kind
    largest = max(int(s) for s in shape)
    return min(KINDS.values(), key=lambda k: abs(math.log(max(largest, 1) / k.size)))


def is_canonical(shape: Sequence[int]) -> bool:
    """Whether ``shape`` is one of the kinds' canonical cubes (256³ brain, 512³ abdomen)."""
    return any(tuple(int(s) for s in shape) == (k.size,) * 3 for k in KINDS.values())


#: the kind whose volumes are CT (the MOOD abdomen dataset); the brain dataset is MRI
CT_KIND = "abdom"
#: CT stores Hounsfield units: air is about -1000 HU, and scanners pad outside the field of view with -1024 or
#: lower, so a CT of a body holds plenty of voxels far below 0 (around the body, lungs, bowel gas). MRI magnitude
#: images are >= 0, and intensity-normalised data (MOOD's [0, 1], z-scores) stay far above -500. A volume with at
#: least CT_AIR_FRACTION of its voxels below CT_AIR_HU is taken for CT in HU: the threshold sits halfway between
#: air and soft tissue (about 0 to 100 HU), and the fraction (the 0.5th percentile below -500) ignores a few stray
#: voxels (an artefact, a padded edge). A CT cropped so tightly that less of it is air falls back to the shape
#: rule, with the warning.
CT_AIR_HU = -500.0
CT_AIR_FRACTION = 0.005
#: at most this many voxels (an evenly strided subsample) are looked at: a fraction is estimated as well from a
#: million voxels as from all 134 million of a 512³ volume, at a hundredth of the cost
SAMPLE_VOXELS = 1 << 20


def air_fraction(data: np.ndarray) -> float:
    """Share of the voxels of ``data`` below :data:`CT_AIR_HU`, from an evenly strided subsample."""
    if data.size == 0:
        return 0.0
    step = max(1, math.ceil((data.size / SAMPLE_VOXELS) ** (1 / max(data.ndim, 1))))
    sub = data[(slice(None, None, step),) * data.ndim]
    return float(np.count_nonzero(sub < CT_AIR_HU)) / sub.size


def _shape_text(shape: Sequence[int]) -> str:
    return "x".join(str(int(s)) for s in shape)


def guess_kind(shape: Sequence[int], data: np.ndarray | None = None) -> tuple[Kind, str | None]:
    """The kind of a volume of ``shape`` (intensities ``data``, if given) and, where it is a guess, why.

    A canonical cube decides (reason ``None``). Otherwise the intensities decide where they are clear: enough
    air in Hounsfield units (:func:`air_fraction`) is CT, :data:`CT_KIND`. Anything else (MRI, data already
    normalised, e.g. to [0, 1], no ``data``) falls back to :func:`kind_for_shape`. The reason is one clause for a
    log line."""
    if is_canonical(shape):
        return kind_for_shape(shape), None
    cubes = "/".join(f"{k.size}³" for k in KINDS.values())
    why = f"shape {_shape_text(shape)} is not a canonical {cubes} cube"
    if data is not None:
        frac = air_fraction(data)
        if frac >= CT_AIR_FRACTION:
            return KINDS[CT_KIND], (f"{why}; {frac:.1%} of its voxels are below {CT_AIR_HU:.0f} (down to "
                                    f"{float(np.min(data)):.0f}), like air in CT Hounsfield units")
        why += (f", and its intensities do not tell (under {CT_AIR_FRACTION:.1%} below {CT_AIR_HU:.0f}: no CT air in "
                "Hounsfield units)")
    kind = kind_for_shape(shape)
    return kind, f"{why}; its largest edge {max(int(s) for s in shape)} is nearest {kind.size}"
