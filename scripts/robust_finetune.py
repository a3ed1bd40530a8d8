"""The test-time fine-tune on a folder with planted anomalies: as trained, the plain fine-tune (every candidate
slice, no guard) and the robust one (the defaults: outlier rule and guard); and the validation of the rule's k.

Usage::

    python scripts/robust_finetune.py predict --testset test --out runs [--steps 200] [--conditions trained,plain,robust]
    mood-detector evaluate --pred runs/robust --labels test/toy_label --task pixel
    python scripts/robust_finetune.py choose-k --testset val

``predict`` scores TESTSET/toy with the bundled brain nsa model (or ``--weights``) into OUT/<condition> with the
model card's scoring defaults, fine-tuning on up to 4 of the inputs as ``predict --adapt finetune`` does.
``choose-k`` scores the candidate slices of TESTSET/toy (as the fine-tune picks them) with the model as trained
and prints, for several k, how many slices the rule leaves out among those that cut a planted anomaly and among
the normal ones (TESTSET/toy_label/pixel). Made for docs/generalisation.md#anomalies-in-the-folder-it-fine-tunes-on.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np

from mood_detector.detector import load_detector
from mood_detector.inference.adapt import FinetuneConfig, logit, outlier_threshold, stack_slice_scores
from mood_detector.inference.predictor import PredictConfig, Predictor
from mood_detector.io.nifti import read_volume
from mood_detector.preprocess import to_slices

log = logging.getLogger("robust_finetune")
BUNDLED = Path(__file__).resolve().parents[1] / "weights" / "brain" / "nsa.safetensors"


def predict(testset: Path, out: Path, weights: Path, steps: int, conditions: list[str], threads: int) -> None:
    for name in conditions:
        cfg = PredictConfig(device="cpu", tasks=("pixel", "sample"), progress=False, threads=threads,
                            adapt="none" if name == "trained" else "finetune", adapt_steps=steps)
        pred = Predictor(load_detector(weights), cfg)
        if name == "plain":
            pred.adaptation._finetune_config = lambda: FinetuneConfig(steps=steps, outlier_k=None, guard=False)
        t0 = time.perf_counter()
        report = pred.predict_folder(testset / "toy", out / name)
        log.info("%s: exit %d in %.0f s", name, report.exit_code, time.perf_counter() - t0)


def choose_k(testset: Path, weights: Path, ks: list[float]) -> None:
    det = load_detector(weights)
    pred = Predictor(det, PredictConfig(device="cpu", progress=False))
    axes = pred.axes_for(det)
    stacks, cut = [], []
    for f in sorted((testset / "toy").glob("*.nii.gz")):
        net = pred.network_volume(det, read_volume(f).data)[0]
        lab = read_volume(testset / "toy_label" / "pixel" / f.name).data > 0.5
        xs, ys = [], []
        for axis in axes:  # as pick_slices: non-empty slices, evenly spread, 64 per volume over the axes
            s, lb = to_slices(net, axis), to_slices(lab, axis)
            full = np.flatnonzero(s.reshape(s.shape[0], -1).max(axis=1) > 0)
            k = min(len(full), max(1, 64 // len(axes)))
            idx = full[np.linspace(0, len(full) - 1, k).round().astype(int)]
            xs.append(np.asarray(s[idx], np.float32))
            ys.append(np.asarray(lb[idx]).reshape(len(idx), -1).sum(1))
        stacks.append(np.concatenate(xs))
        cut.append(np.concatenate(ys))
    scores = logit(np.concatenate(stack_slice_scores(det, stacks)))
    voxels = np.concatenate(cut)
    big, normal = voxels >= 100, voxels == 0
    print(f"{len(scores)} candidate slices: {int(big.sum())} cut an anomaly by >= 100 voxels, {int(normal.sum())} "
          f"normal")
    for k in ks:
        drop = scores > outlier_threshold(scores, k)
        print(f"k={k:g}: left out {int((drop & big).sum())}/{int(big.sum())} anomalous, "
              f"{int((drop & normal).sum())}/{int(normal.sum())} normal")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=["predict", "choose-k"])
    ap.add_argument("--testset", type=Path, required=True, help="a make-testset folder")
    ap.add_argument("--out", type=Path, default=Path("runs"), help="predict: output folder [runs]")
    ap.add_argument("--weights", type=Path, default=BUNDLED, help="[the bundled brain nsa model]")
    ap.add_argument("--steps", type=int, default=200, help="fine-tune steps [200]")
    ap.add_argument("--conditions", default="trained,plain,robust", help="[trained,plain,robust]")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads [2]")
    ap.add_argument("--k", default="1,1.5,2,3,4,5", help="choose-k: the k values [1,1.5,2,3,4,5]")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.what == "predict":
        predict(args.testset, args.out, args.weights, args.steps, args.conditions.split(","), args.threads)
    else:
        choose_k(args.testset, args.weights, [float(k) for k in args.k.split(",")])


if __name__ == "__main__":
    main()
