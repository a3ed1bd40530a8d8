"""Score a model on held-out real scans with planted outliers: the table of docs/generalisation.md.

For each real source (written by ``scripts/real_sources.py --cube 256``):

1. ``--cases`` copies of the scan are made (copy i mirrored left-right when i is odd and shifted by
   ``3 * (i // 2)`` voxels along axis 1, so that the cases differ only by position, not by content);
2. ``make-testset`` plants one outlier in half of them, each of the five types equally often (seed ``--seed``);
3. the model scores them (``predict both``), and ``evaluate`` gives pixel and sample AP / AUROC per type;
4. the mean pixel score of empty background (outside the foreground of the normal cases, inside the field of
   view) and whether every normal case scores below every anomalous one are added.

Usage::

    python scripts/heldout_real.py --real real --sources colin27-head_cube256,epi-b0-t2w_cube256 \
        --weights weights/brain/nsa.safetensors --out heldout/brain

Writes ``<out>/<source>/`` (test set, predictions, evaluation JSON) and ``<out>/summary.json``; prints a table.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from mood_detector.evaluation.bootstrap import BootstrapConfig
from mood_detector.evaluation.evaluate import evaluate
from mood_detector.evaluation.testset import TestsetConfig, make_testset
from mood_detector.inference.api import load_detectors
from mood_detector.inference.predictor import PredictConfig, Predictor
from mood_detector.io.nifti import read_volume, write_text_atomic, write_volume
from mood_detector.preprocess import foreground_mask

log = logging.getLogger("heldout_real")


def copies(src: Path, out: Path, n: int) -> list[Path]:
    """``n`` position variants of the scan ``src`` in ``out`` (see the module docstring)."""
    vol = read_volume(src)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n):
        data = vol.data[::-1] if i % 2 else vol.data
        data = np.roll(data, 3 * (i // 2), axis=1)
        files.append(write_volume(out / f"copy_{i:02d}.nii.gz", np.ascontiguousarray(data), vol.affine, vol.header))
    return files


def background_score(testdir: Path, pred: Path, manifest: dict) -> float:
    """Mean pixel score outside the foreground of the normal cases."""
    vals = []
    for case in manifest["cases"]:
        if case["anomalous"]:
            continue
        data = read_volume(testdir / "toy" / case["name"]).data
        score = read_volume(pred / case["name"]).data
        vals.append(float(score[~foreground_mask(data)].mean()))
    return float(np.mean(vals)) if vals else float("nan")


def run_source(src: Path, weights: Path, out: Path, kind: str, cases: int, seed: int, cfg: PredictConfig) -> dict:
    normals = copies(src, out / "normals", cases)
    testdir = out / "testset"
    manifest = make_testset(normals, testdir, TestsetConfig(kind=kind, anomalous_fraction=0.5, seed=seed),
                            progress=False)
    pred = out / "pred"
    det = load_detectors({"*": weights})["*"]
    report = Predictor(det, cfg).predict_folder(testdir / "toy", pred)
    if report.failed:
        raise RuntimeError(f"{src}: {len(report.failed)} cases failed to score")
    res = {t: evaluate(pred, testdir / "toy_label", t, out_json=out / f"{t}.json", progress=False,
                       bootstrap=BootstrapConfig(seed=seed))
           for t in ("pixel", "sample")}
    scores = {c["name"]: report.samples[c["name"]] for c in manifest["cases"]}
    anom = [scores[c["name"]] for c in manifest["cases"] if c["anomalous"]]
    norm = [scores[c["name"]] for c in manifest["cases"] if not c["anomalous"]]
    return {"source": src.name.split(".")[0], "pixel": res["pixel"].to_dict()["rows"],
            "sample": res["sample"].to_dict()["rows"], "background_mean": background_score(testdir, pred, manifest),
            "normal_below_anomalous": bool(max(norm) < min(anom)), "normal_scores": norm, "anomalous_scores": anom,
            "tables": {t: r.table() for t, r in res.items()}}


def interval(row: dict, key: str) -> str:
    """``0.536 [0.41, 0.66]`` from an evaluation row's point estimate and bootstrap bounds."""
    lo, hi = row.get(f"{key}_lo"), row.get(f"{key}_hi")
    ci = f" [{lo:.2f}, {hi:.2f}]" if lo is not None and hi is not None else ""
    return f"{row[key]:.3f}{ci}"


def results_table(rows: list[dict], args: argparse.Namespace, argv: list[str]) -> dict:
    """The summary as a source file of ``scripts/sync_numbers.py`` (columns, rows, the command that made it)."""
    cols = ["source", "pixel AP", "pixel AUROC", "sample AP", "sample AUROC", "background mean",
            "normal < anomalous"]
    out = []
    for r in rows:
        p, s = r["pixel"]["overall"], r["sample"]["overall"]
        out.append({"source": r["source"], "pixel AP": interval(p, "ap"), "pixel AUROC": interval(p, "auroc"),
                    "sample AP": interval(s, "ap"), "sample AUROC": interval(s, "auroc"),
                    "background mean": round(r["background_mean"], 4),
                    "normal < anomalous": "yes" if r["normal_below_anomalous"] else "no"})
    cmd = "python scripts/heldout_real.py " + " ".join(argv)
    return {"what": f"{args.weights} on held-out real scans with planted outliers (10 cases each, 5 anomalous); "
                    "95% bootstrap intervals over cases", "command": cmd, "columns": cols, "rows": out}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--real", type=Path, required=True, help="folder written by scripts/real_sources.py")
    ap.add_argument("--sources", required=True, help="comma list of file names (without .nii.gz) in --real")
    ap.add_argument("--weights", type=Path, required=True, help="model (.safetensors) to score with")
    ap.add_argument("--out", type=Path, required=True, help="output folder")
    ap.add_argument("--kind", choices=["brain", "abdom"], default="brain", help="kind recorded in the test set")
    ap.add_argument("--cases", type=int, default=10, help="cases per source, half anomalous [default: 10]")
    ap.add_argument("--seed", type=int, default=0, help="seed of the planted outliers [default: 0]")
    ap.add_argument("--adapt", choices=["none", "bn", "finetune", "auto"], default=None,
                    help="test-time adaptation [default: the card's]")
    ap.add_argument("--adapt-steps", type=int, default=600, help="steps of --adapt finetune [default: 600]")
    ap.add_argument("--axes", choices=["model", "all"], default=None, help="slicing axes [default: the card's]")
    ap.add_argument("--mirror", default=None, help="test-time mirroring [default: the card's]")
    ap.add_argument("--results", type=Path, default=None,
                    help="also write the table as a numbers source (docs/results/*.json) [default: none]")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = PredictConfig(tasks=("pixel", "sample"), device="cpu", progress=False, adapt=args.adapt,
                        adapt_steps=args.adapt_steps, axes=args.axes,
                        mirror=args.mirror)
    rows = []
    for name in args.sources.split(","):
        rows.append(run_source(args.real / f"{name}.nii.gz", args.weights, args.out / name, args.kind, args.cases,
                               args.seed, cfg))
    write_text_atomic(args.out / "summary.json", json.dumps(rows, indent=1) + "\n")
    table = results_table(rows, args, argv if argv is not None else sys.argv[1:])
    if args.results:
        write_text_atomic(args.results, json.dumps(table, indent=2, ensure_ascii=False) + "\n")
    print("| " + " | ".join(table["columns"]) + " |")
    print("|" + "---|" * len(table["columns"]))
    for r in table["rows"]:
        print("| " + " | ".join(str(r[c]) for c in table["columns"]) + " |")
    for r in rows:
        print(f"\n{r['source']}, pixel task per type:\n{r['tables']['pixel']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
