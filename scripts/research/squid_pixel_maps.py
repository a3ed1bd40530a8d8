#!/usr/bin/env python3
"""Compare SQUID's two pixel maps (this package's extension) on a synthetic-outlier test set.

Loads one trained SQUID model, predicts the ``pixel`` task of ``TESTSET/toy`` once per map (``residual``:
|x - recon|; ``gradres``: |x - recon| weighted by the discriminator's input-gradient magnitude) and evaluates
each against ``TESTSET/toy_label`` with the package's evaluation (AP, AUROC, greedy-threshold DICE over all
voxels). The weights and test set come from e.g. ``mood-detector benchmark --detectors squid`` (its
``weights/<kind>/squid.safetensors`` and ``testset/<kind>``):

    python scripts/research/squid_pixel_maps.py --weights B/weights/brain/squid.safetensors --testset B/testset/brain \\
        --out /tmp/squid_maps --device cpu
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from mood_detector.detector import load_detector
from mood_detector.evaluation.evaluate import evaluate, fmt
from mood_detector.inference.predictor import PredictConfig, Predictor
from mood_detector.models.squid.detector import PIXEL_MAPS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, required=True, help="SQUID .safetensors file")
    ap.add_argument("--testset", type=Path, required=True, help="test-set folder holding toy/ and toy_label/")
    ap.add_argument("--out", type=Path, required=True, help="folder for the predictions and evaluation JSON")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda (default: auto)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = ["| pixel map | AP | AUROC | DICE |", "|---|---|---|---|"]
    for name in PIXEL_MAPS:
        det = load_detector(args.weights)
        if det.name != "squid":
            raise SystemExit(f"{args.weights}: not a SQUID model ({det.name})")
        det.pixel_map = name
        pred = args.out / name
        report = Predictor(det, PredictConfig(tasks=("pixel",), device=args.device, progress=False)).predict_folder(
            args.testset / "toy", pred)
        if report.failed:
            raise SystemExit(f"{len(report.failed)} predictions failed: {report.failed[:3]}")
        res = evaluate(pred, args.testset / "toy_label", "pixel", out_json=args.out / f"{name}.json", progress=False)
        m = res.rows["overall"]
        rows.append(f"| {name} | {fmt(m.ap)} | {fmt(m.auroc)} | {fmt(m.dice)} |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
