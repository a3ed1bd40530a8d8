"""The sliding window of volumetric detectors: 3D patches with overlap, blended by Gaussian weights.

A volume larger than a detector's patch is covered by patches whose origins step by ``step`` of the patch edge
(the last patch along an axis ends at the volume's edge); each patch's voxel scores are weighted by a Gaussian
centred on the patch (standard deviation 1/8 of the edge, the weighting nnU-Net uses: a patch's border voxels
saw less context) and the weighted sum is divided by the summed weights. A patch the size of the volume is one
pass with no weighting. Patches go through the detector in batches of ``batch``.
"""

from __future__ import annotations

import itertools
from typing import Callable, Sequence

import numpy as np
import torch

#: standard deviation of the blending Gaussian, as a fraction of the patch edge
SIGMA_SCALE = 1 / 8

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def axis_origins(size: int, patch: int, step: float) -> list[int]:
    """Origins along one axis of length ``size`` for patches of ``patch`` voxels, about ``step * patch`` apart,
    the first at 0 and the last ending at ``size``."""
    if patch >= size:
        return [0]
    n = int(np.ceil((size - patch) / max(1.0, step * patch))) + 1
    return [int(round(v)) for v in np.linspace(0, size - patch, n)]


def gaussian_weights(patch: Sequence[int]) -> np.ndarray:
    """Blending weights of a patch (float32, maximum 1, no zeros)."""
    grids = np.meshgrid(*[(np.arange(p) - (p - 1) / 2) / (SIGMA_SCALE * p) for p in patch], indexing="ij")
    w = np.exp(-0.5 * sum(g**2 for g in grids)).astype(np.float32)
    return np.maximum(w / w.max(), 1e-4)


@torch.no_grad()
def sliding_window(volume: np.ndarray, patch: Sequence[int], score: ScoreFn, batch: int = 1,
                   step: float = 0.5) -> np.ndarray:
    """Voxel scores (float32, ``volume``'s shape) of ``volume`` (D, H, W), scored by ``score(x, origins)``:
    ``x`` (B, 1, d, h, w) patches (float32), ``origins`` (B, 3) their first voxels; it returns (B, d, h, w)."""
    shape = volume.shape
    patch = tuple(min(p, s) for p, s in zip(patch, shape))
    starts = list(itertools.product(*[axis_origins(s, p, step) for s, p in zip(shape, patch)]))
    if len(starts) == 1:  # one patch: the volume itself
        x = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))[None, None]
        return score(x, torch.zeros(1, 3, dtype=torch.long))[0].float().cpu().numpy()
    weights = gaussian_weights(patch)
    acc = np.zeros(shape, dtype=np.float32)
    norm = np.zeros(shape, dtype=np.float32)
    for i in range(0, len(starts), max(1, batch)):
        group = starts[i:i + max(1, batch)]
        boxes = [tuple(slice(o, o + p) for o, p in zip(origin, patch)) for origin in group]
        x = torch.from_numpy(np.stack([np.ascontiguousarray(volume[b], dtype=np.float32) for b in boxes]))[:, None]
        out = score(x, torch.tensor(group, dtype=torch.long)).float().cpu().numpy()
        for b, o in zip(boxes, out):
            acc[b] += o * weights
            norm[b] += weights
    return acc / norm
