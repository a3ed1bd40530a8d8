#!/usr/bin/env python3
"""Does the CPU fast path (empty-slice skip + foreground crop) change the scores? Measured with the evaluation
harness (target: pixel AP within 0.002 of the exact path).

Steps, all through the library: generate normal brain volumes (``--size``^3), train a small FPI model on
some of them (or use ``--weights``), build a synthetic-outlier test set from the others (``make_testset``),
predict the pixel and sample tasks with the exact path (every slice, full field of view) and with the fast
path at each ``--margins`` value, evaluate every prediction folder (``evaluate``), and print one table: AP per
task, the difference to the exact path, the network time, and the largest score differences on empty slices
(what the model says where the fast path writes 0), on the foreground and on the background of non-empty
slices.

    python scripts/research/cpu_path_fidelity.py --size 128 --width 0.25 --epochs 4 --margins 0,16,32
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=128, help="volume edge and network slice size (default: 128)")
    ap.add_argument("--n-train", type=int, default=8, help="normal training volumes (default: 8)")
    ap.add_argument("--n-test", type=int, default=8, help="test cases (default: 8)")
    ap.add_argument("--width", type=float, default=0.25, help="FPI width (default: 0.25)")
    ap.add_argument("--epochs", type=int, default=4, help="training epochs (default: 4)")
    ap.add_argument("--max-batches-per-pair", type=int, default=0, help="training cap (default: 0 = all)")
    ap.add_argument("--weights", type=Path, default=None, help="use these weights instead of training")
    ap.add_argument("--margins", default="0,16,32", help="crop margins to test (default: 0,16,32)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: 0 = all cores)")
    ap.add_argument("--workdir", type=Path, default=None, help="work folder (kept); default: temporary")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import numpy as np

    from mood_detector.data.brain import make_brain_data
    from mood_detector.detector import TrainConfig, load_detector
    from mood_detector.evaluation.evaluate import evaluate
    from mood_detector.evaluation.testset import TestsetConfig, make_testset
    from mood_detector.inference.accel import set_cpu_threads
    from mood_detector.inference.predictor import PredictConfig, Predictor
    from mood_detector.io.nifti import list_volumes, read_volume
    from mood_detector.training.api import train_detector

    threads = set_cpu_threads(args.threads)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="cpu_fidelity_"))
    try:
        train, normals, test = work / "train", work / "normals", work / "test"
        def missing(folder: Path) -> bool:
            return not folder.is_dir() or not list_volumes(folder)

        if missing(train):
            make_brain_data(train, args.n_train, size=args.size, seed=args.seed)
        if missing(normals):
            make_brain_data(normals, args.n_test, size=args.size, seed=args.seed, start=args.n_train)
        weights = args.weights
        if weights is None:
            weights = work / "fpi.safetensors"
            if not weights.exists():
                cfg = TrainConfig(kind="brain", size=args.size, width=args.width, epochs=args.epochs, device="cpu",
                                  seed=args.seed, max_batches_per_pair=args.max_batches_per_pair)
                t0 = time.perf_counter()
                train_detector(train, weights, cfg)
                print(f"trained in {time.perf_counter() - t0:.0f} s")
        if not (test / "manifest.json").exists():
            make_testset(normals, test, TestsetConfig(kind="brain", seed=args.seed), progress=False)
        det = load_detector(weights)
        inputs = list_volumes(test / "toy")
        runs: list[tuple[str, dict]] = [("exact (all slices, full FOV)", dict(skip_empty=False, crop=False))]
        runs += [(f"fast: skip empty + crop, margin {m}", dict(skip_empty=True, crop=True, crop_margin=int(m)))
                 for m in args.margins.split(",") if m.strip()]
        rows, maps = [], {}
        for name, kw in runs:
            out = work / f"pred_{len(maps)}"
            pred = Predictor(det, PredictConfig(tasks=("pixel", "sample"), device="cpu", threads=threads,
                                                progress=False, **kw))
            t0 = time.perf_counter()
            rep = pred.predict_files(inputs, out)
            wall = time.perf_counter() - t0
            assert rep.exit_code == 0, rep.failed
            res = {t: evaluate(out, test / "toy_label", t, progress=False).rows["overall"] for t in ("pixel", "sample")}
            maps[name] = out
            rows.append((name, res, wall, pred.timings.as_dict()["network"]))
        exact_name, exact_res, exact_wall, exact_net = rows[0]
        # score differences against the exact path, by region of the input
        diff_rows = {}
        for name, out in list(maps.items())[1:]:
            worst = {"empty": 0.0, "fg": 0.0, "bg": 0.0}
            for f in inputs:
                x = read_volume(f).data
                a = read_volume(maps[exact_name] / f.name).data
                b = read_volume(out / f.name).data
                axis = det.slice_axis
                empty_slices = np.moveaxis(x, axis, 0).max(axis=(1, 2)) <= 0
                empty = np.moveaxis(np.broadcast_to(empty_slices[:, None, None], np.moveaxis(x, axis, 0).shape),
                                    0, axis)
                d = np.abs(a - b)
                for key, mask in (("empty", empty), ("fg", x > 0), ("bg", (x <= 0) & ~empty)):
                    if mask.any():
                        worst[key] = max(worst[key], float(d[mask].max()))
            diff_rows[name] = worst
        lines = [f"cpu_path_fidelity: brain {args.size}^3, {len(inputs)} test cases, FPI width "
                 f"{det.card.width} ({'trained ' + str(args.epochs) + ' epochs' if args.weights is None else weights}), "
                 f"threads={threads}", "",
                 "| path | pixel AP | dAP | sample AP | network s | wall s | max abs diff: empty slices / fg / bg |",
                 "|---|---:|---:|---:|---:|---:|---|"]
        for name, res, wall, net in rows:
            d = diff_rows.get(name)
            lines.append(f"| {name} | {res['pixel'].ap:.4f} | {res['pixel'].ap - exact_res['pixel'].ap:+.4f} | "
                         f"{res['sample'].ap:.4f} | {net:.1f} | {wall:.1f} | "
                         + (f"{d['empty']:.3g} / {d['fg']:.3g} / {d['bg']:.3g}" if d else "reference") + " |")
        table = "\n".join(lines)
        print(table)
        return table
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
