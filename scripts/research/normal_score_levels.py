"""How high a model scores *normal* tissue: quantiles of the pixel score inside the object of normal volumes.

A detector's pixel AP is capped by the normal voxels that score as high as the anomalies. This prints, per
volume, the median and upper quantiles of the score map (the full ``predict`` path: intensity scaling,
resampling to the model's size, the model card's axes, resampling back) over the voxels whose normalised
intensity is above ``--fg``. Comparing the same generated subject made at several sizes
(``make-data --size 128/256/512 --seed S --start I``) shows whether the model depends on how the volume
reached the network's size: a model trained on volumes generated at 128³ scores the same subject higher when
it was generated at 256³ or 512³ and resampled, as MOOD-sized inputs are.

    python scripts/research/normal_score_levels.py -w weights/brain/nsa.safetensors data/brain128/00040.nii.gz \\
        data/brain256/00040.nii.gz
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import torch

from mood_detector.detector import load_detector
from mood_detector.inference.predictor import PredictConfig, Predictor
from mood_detector.io.nifti import read_volume
from mood_detector.preprocess import normalise_intensity

QUANTILES = (0.5, 0.9, 0.99, 0.999)


def score_levels(predictor: Predictor, data: np.ndarray, fg: float) -> np.ndarray:
    """The :data:`QUANTILES` of ``data``'s pixel scores over its foreground (normalised intensity > ``fg``)."""
    mask = normalise_intensity(data.copy()) > fg
    scores = predictor.score_volume(data, need_pixel=True, inplace=True).pixel
    return np.quantile(scores[mask], QUANTILES)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("volumes", nargs="+", type=Path, help="normal volumes (.nii / .nii.gz)")
    ap.add_argument("-w", "--weights", required=True, type=Path, help="a detector's .safetensors file")
    ap.add_argument("--fg", type=float, default=0.05, help="foreground: normalised intensity above this [0.05]")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads [1]")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    predictor = Predictor(load_detector(args.weights), PredictConfig(device="cpu"))
    print("| volume | shape | " + " | ".join(f"q{q:g}" for q in QUANTILES) + " |")
    print("|---|---|" + "---|" * len(QUANTILES))
    for path in args.volumes:
        data = read_volume(path).data  # the reader predict uses
        shape = data.shape
        levels = score_levels(predictor, data, args.fg)
        print(f"| {path} | {'x'.join(map(str, shape))} | " + " | ".join(f"{v:.3f}" for v in levels) + " |",
              flush=True)


if __name__ == "__main__":
    main()
