"""Dataset kinds: the one small table that says how each MOOD dataset is sliced and sampled."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence


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
