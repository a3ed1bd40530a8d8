"""A no-learning baseline: each voxel's z-score against the same voxel of the normal training subjects.

Fit: the voxel-wise mean and standard deviation of the training volumes, resampled to ``size`` cubed. Score: for
a test volume resampled the same way, ``z = |x - mean| / (std + eps)``, mapped to [0, 1] by the strictly monotone
``z / (z + z_half)`` (a voxel ``z_half`` standard deviations off scores 0.5; AP and AUROC depend on the order
only), resampled back to the input's shape. Sample score: the common slice aggregation of the per-slice means
along the kind's slice axis. It shows what a detector gains over "is this voxel unusual for its position".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from mood_detector.inference.aggregate import sample_score
from mood_detector.inference.predictor import output_paths
from mood_detector.io.nifti import list_volumes, read_volume, write_text_atomic, write_volume
from mood_detector.kinds import get_kind
from mood_detector.preprocess import prepare, resample, to_slices

log = logging.getLogger(__name__)


@dataclass
class ZScoreModel:
    """Voxel-wise statistics of normal volumes at ``size`` cubed."""

    mean: np.ndarray
    std: np.ndarray
    kind: str
    eps: float = 0.02
    z_half: float = 3.0

    @classmethod
    def fit(cls, files: Sequence[Path], size: int, kind: str) -> "ZScoreModel":
        """Mean and standard deviation over ``files`` (two passes' worth of sums in float64)."""
        if len(files) < 2:
            raise ValueError("the z-score baseline needs at least two training volumes")
        s = s2 = None
        for f in files:
            v = resample(prepare(read_volume(f).data)[0], (size,) * 3).astype(np.float64)
            s = v if s is None else s + v
            s2 = v * v if s2 is None else s2 + v * v
        n = len(files)
        mean = s / n
        std = np.sqrt(np.maximum(s2 / n - mean**2, 0.0))
        return cls(mean.astype(np.float32), std.astype(np.float32), kind)

    def score(self, data: np.ndarray) -> tuple[np.ndarray, float]:
        """(pixel map of ``data``'s shape in [0, 1], sample score)."""
        size = self.mean.shape[0]
        x = resample(prepare(data)[0], (size,) * 3)
        z = np.abs(x - self.mean) / (self.std + self.eps)
        s = (z / (z + self.z_half)).astype(np.float32)
        per_slice = to_slices(s, get_kind(self.kind).slice_axis).mean(axis=(1, 2))
        return np.clip(resample(s, tuple(data.shape)), 0.0, 1.0), sample_score(per_slice)


def predict_zscore(train_files: Sequence[Path], input_dir: Path, out_dir: Path, size: int, kind: str) -> list[Path]:
    """Fit on ``train_files``, score every volume in ``input_dir`` into ``out_dir`` (the ``predict`` layout)."""
    model = ZScoreModel.fit(train_files, size, kind)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for f in list_volumes(input_dir):
        vol = read_volume(f)
        pixel, sample = model.score(vol.data)
        outs = output_paths(f, out_dir, ("pixel", "sample"))
        written.append(write_volume(outs["pixel"], pixel, vol.affine, vol.header))
        write_text_atomic(outs["sample"], f"{sample:.8f}\n")
    log.info("z-score baseline: %d volumes scored into %s", len(written), out_dir)
    return written
