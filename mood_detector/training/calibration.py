"""Score calibration: the scale that maps a detector's unbounded raw score into [0, 1].

DDAD, DPA and SQUID each map a raw score ``v`` to ``v / (v + scale)`` or ``v / scale`` with ``scale`` a
quantile of the raw score over normal training data (so the mapping is fixed by data the model has seen and no
ranking changes). :func:`quantile_scale` is that quantile, computed one way for all of them.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def quantile_scale(values: Sequence[np.ndarray | torch.Tensor], q: float, floor: float = 1e-8,
                   method: str = "linear", default: float | None = None) -> float:
    """The ``q`` quantile of all ``values`` (arrays or tensors, concatenated), at least ``floor``.

    ``method`` is NumPy's quantile method (``lower`` at ``q`` = 0.5 is the lower median, as ``torch.median``
    gives). ``default``: the scale when there are no values (``None``: a ``ValueError``)."""
    arrays = [v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v) for v in values]
    arrays = [a.ravel() for a in arrays if a.size]
    if not arrays:
        if default is None:
            raise ValueError("no values to calibrate the score scale on")
        return max(float(default), floor)
    return max(float(np.quantile(np.concatenate(arrays), q, method=method)), floor)
