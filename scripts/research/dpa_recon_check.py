"""Is a DPA model's reconstruction better than a trivial predictor, and does its map rise on the anomaly?

For each anomalous case of a test set (``make-testset`` output: ``toy/``, ``toy_label/pixel/``,
``manifest.json``), takes the slice through the anomaly's centre along the model's slice axis at the model's
size and prints, over the anomaly and over the normal foreground of that slice:

* the mean |x − x̂| of the autoencoder's reconstruction, next to that of a constant predictor (the slice's mean
  foreground intensity): a model that reconstructs normal tissue worse than the constant has not learned it;
* the mean of the raw perceptual map (the pixel score before calibration): it must be higher on the anomaly.

    python scripts/research/dpa_recon_check.py -w dpa.safetensors --testset bench_brain/testset/brain
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import torch

from mood_detector.detector import load_detector
from mood_detector.io.nifti import read_volume
from mood_detector.preprocess import normalise_intensity, resample, to_slices


def check_case(det, image: np.ndarray, label: np.ndarray, fg: float) -> dict[str, float]:
    """The numbers above for one volume and its pixel label (both any shape)."""
    n = det.size
    x = to_slices(resample(normalise_intensity(image), (n,) * 3), det.slice_axis)
    lab = to_slices(resample(label.astype(np.float32), (n,) * 3), det.slice_axis) > 0.5
    k = int(np.argmax(lab.sum(axis=(1, 2))))
    xs, inside = x[k], lab[k]
    normal = (xs > fg) & ~inside
    t = torch.from_numpy(np.ascontiguousarray(xs))[None, None]
    with torch.inference_mode():
        y = det.ae(t, det.size, 1.0)
        _, pmap = det.loss.score(t, y.to(t.dtype), det.layer)
    err = (t - y).abs()[0, 0].numpy()
    p = pmap[0].float().numpy()
    const = np.abs(xs - xs[xs > fg].mean())
    return {"slice": k, "anomaly_px": int(inside.sum()),
            "recon_err_anomaly": float(err[inside].mean()), "recon_err_normal": float(err[normal].mean()),
            "const_err_normal": float(const[normal].mean()),
            "map_anomaly": float(p[inside].mean()), "map_normal": float(p[normal].mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-w", "--weights", required=True, type=Path, help="a DPA model's .safetensors file")
    ap.add_argument("--testset", required=True, type=Path, help="a make-testset output folder")
    ap.add_argument("--fg", type=float, default=0.05, help="foreground: normalised intensity above this [0.05]")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads [1]")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    det = load_detector(args.weights)
    if det.name != "dpa":
        raise SystemExit(f"{args.weights}: a {det.name} model, not dpa")
    cases = [c for c in json.loads((args.testset / "manifest.json").read_text())["cases"] if c["anomalous"]]
    cols = ("recon_err_anomaly", "recon_err_normal", "const_err_normal", "map_anomaly", "map_normal")
    print("| case | type | " + " | ".join(cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    for c in cases:
        image = read_volume(args.testset / "toy" / c["name"]).data
        label = read_volume(args.testset / "toy_label" / "pixel" / c["name"]).data
        r = check_case(det, image, label, args.fg)
        print(f"| {c['name']} | {c['type']} | " + " | ".join(f"{r[k]:.3f}" for k in cols) + " |", flush=True)


if __name__ == "__main__":
    main()
