#!/usr/bin/env python3
"""Tiny controlled checks of the DDAD, DPA and SQUID score functions (CPU, about a minute of compute).

Each check isolates one stage of a detector's scoring on a hand-made input whose answer is known, so a failure
points at the score function itself rather than at the training budget:

* ``squid-float16``: the pixel scores are read as float16 by the MOOD evaluator (and by
  ``mood_detector.evaluation``). How many of the residuals ``r = tau * 2^k`` keep distinct float16 scores under
  SQUID's map and under ``r / (r + tau)``.
* ``dpa-localisation``: DPA's pixel map (channel mean of ``|f^(x) - f^(y)|``) with a *perfect normal
  reconstruction* ``y`` (the slice without the planted square) against the plain residual ``|x - y|`` (AP 1 by
  construction), per VGG19 layer, with and without the per-channel feature normalisation.
* ``ddad-tiny``: a tiny DDAD (2 AEs, 32^2, a few epochs) trained on blob volumes; on a held-out blob volume with
  a planted bright cube: the mean score of empty slices, of the background of non-empty slices, of the normal
  foreground and of the cube, for R_intra (ASR-Net), A_intra and A_rec, and the pixel AP with and without empty
  slices scored 0.

Generated data only; nothing here is a MOOD result::

    mood-detector make-data brain --n 6 --size 64 --seed 0 --out /tmp/brains64
    OMP_NUM_THREADS=1 python scripts/research/score_function_checks.py --volumes /tmp/brains64
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from mood_detector.evaluation.metrics import Float16Histogram, average_precision

CHECKS = ("squid-float16", "dpa-localisation", "ddad-tiny")


def float16_ap(scores: np.ndarray, labels: np.ndarray) -> float:
    """Pixel AP as the evaluator computes it (scores read as float16, clipped to [0, 1])."""
    h = Float16Histogram()
    h.add(np.asarray(scores, dtype=np.float32), np.asarray(labels, dtype=bool))
    return average_precision(h.counts())


def exact_ap(scores: np.ndarray, labels: np.ndarray) -> float:
    """AP of the float64 scores (no quantisation)."""
    from mood_detector.evaluation.metrics import counts_from_scores

    return average_precision(counts_from_scores(np.asarray(scores, dtype=np.float64), labels))


# --- SQUID: the pixel map under float16 -------------------------------------------------------------
def check_squid_float16() -> None:
    tau = 0.05
    r = tau * 2.0 ** np.arange(-2, 11)  # 0.25 tau ... 1024 tau
    maps = {"1 - exp(-r/tau) (SQUID before)": 1.0 - np.exp(-r / tau), "r / (r + tau)": r / (r + tau)}
    print("## squid-float16: distinct float16 scores for r = tau * 2^k, k = -2..10")
    print("| map | float16 scores | distinct |")
    print("|---|---|---|")
    for name, p in maps.items():
        q = p.astype(np.float16)
        print(f"| {name} | {' '.join(f'{v:.4g}' for v in q)} | {len(np.unique(q))} / {len(q)} |")
    # a ranking example: 20 anomalous pixels at 6..12 tau, 200 normal edge pixels at 8 tau: exact AP vs float16 AP
    rng = np.random.default_rng(0)
    anomalous = tau * rng.uniform(9, 30, 20)
    edges = tau * rng.uniform(6, 9, 200)
    rest = tau * rng.uniform(0, 1, 20000)
    rr = np.concatenate([anomalous, edges, rest])
    y = np.zeros(rr.size, dtype=bool)
    y[:20] = True
    for name, f in (("exp", lambda v: 1 - np.exp(-v / tau)), ("ratio", lambda v: v / (v + tau))):
        print(f"{name}: exact AP {exact_ap(f(rr), y):.4f}, float16 AP {float16_ap(f(rr), y):.4f}")


# --- DPA: localisation of the pixel map --------------------------------------------------------------
def _brain_slices(n: int, size: int, volumes: Path | None) -> torch.Tensor:
    """Slices (n, 1, size, size) near the centre of the first axis of the NIfTI volumes in ``volumes`` (three per
    volume), else of blob volumes."""
    if volumes is not None:
        import nibabel as nib

        vols = [np.asarray(nib.load(str(f)).get_fdata(), dtype=np.float32) for f in sorted(volumes.glob("*.nii*"))]
        sl = [v[v.shape[0] // 2 + d * v.shape[0] // 64] for v in vols for d in (-6, 0, 6)]
    else:
        from tests.conftest import blob_volume

        sl = [blob_volume((32, 32, 32), seed=s)[16 + d] for s in range(4) for d in (-4, 0, 4)]
    x = torch.from_numpy(np.stack(sl[:n]).astype(np.float32))[:, None]
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)


def check_dpa_localisation(volumes: Path | None = None, size: int = 128) -> None:
    from mood_detector.models.dpa.features import make_extractor
    from mood_detector.models.dpa.loss import PerceptualLoss, compute_stats

    base = _brain_slices(9, size, volumes)
    train, test = base[:6], base[6:]
    half = size // 16  # square of side size/8 (a MOOD sphere of radius ~6% of the edge)
    x = test.clone()
    lab = torch.zeros_like(x, dtype=torch.bool)
    for i in range(x.shape[0]):
        fg = torch.nonzero(test[i, 0] > 0.2)
        cy, cx = (int(v) for v in fg[len(fg) // 2])
        x[i, 0, cy - half:cy + half, cx - half:cx + half] = torch.clamp(
            x[i, 0, cy - half:cy + half, cx - half:cx + half] + 0.5, 0, 1)
        lab[i, 0, cy - half:cy + half, cx - half:cx + half] = True
    lab &= (x != test)
    y = test  # perfect "normal" reconstruction
    print(f"## dpa-localisation ({size}^2 slices, {x.shape[0]} test slices, square side {2 * half}, "
          f"perfect normal reconstruction, random-vgg19)")
    print(f"residual |x - y|: AP {exact_ap((x - y).abs().flatten().numpy(), lab.flatten().numpy()):.4f}")
    print("| layer | stride | AP (per-channel normalised, as DPA) | AP (raw features) | map mass in square |")
    print("|---|---|---|---|---|")
    for layer in ("r12", "r22", "r32"):
        ext = make_extractor("random-vgg19", layer)
        loss = PerceptualLoss(ext)
        loss.stats[(size, layer)] = compute_stats(ext, layer, [train])
        _, pix = loss.score(x, y, layer)
        raw = PerceptualLoss(ext, "none")  # the authors' code: raw features
        _, pix_raw = raw.score(x, y, layer)
        mass = float((pix * lab[:, 0]).sum() / pix.sum())
        print(f"| {layer} | {ext.stride(layer)} | {exact_ap(pix.flatten().numpy(), lab.flatten().numpy()):.4f} | "
              f"{exact_ap(pix_raw.flatten().numpy(), lab.flatten().numpy()):.4f} | {mass:.3f} |")


# --- DDAD: a tiny trained ensemble --------------------------------------------------------------------
def check_ddad_tiny() -> None:
    from mood_detector.detector import TrainConfig, load_detector, parse_options
    from mood_detector.inference.predictor import PredictConfig, Predictor
    from mood_detector.training.api import train_detector
    from tests.conftest import blob_volume, save_nifti

    opts = ["k=3", "input_size=32", "hidden=64", "asr_mid=8", "ae_epochs=6", "ae_batch=8", "ae_lr=2e-3",
            "asr_epochs=4", "asr_batch=8", "asr_lr=1e-3", "max_slices=64", "variant=intra"]
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "train"
        d.mkdir()
        for s in range(3):
            save_nifti(d / f"{s:03d}.nii.gz", blob_volume(seed=100 + s))
        cfg = TrainConfig(detector="ddad", size=32, width=0.5, device="cpu", seed=0,
                          options=parse_options(opts))
        det = load_detector(train_detector(d, Path(tmp) / "ddad.safetensors", cfg))
    vol = blob_volume(seed=7)
    lab = np.zeros(vol.shape, dtype=bool)
    lab[13:18, 13:18, 13:18] = True
    vol[lab] = np.clip(vol[lab] + 0.5, 0, 1)
    axis = det.slice_axis
    sl = np.moveaxis(vol, axis, 0)
    empty = sl.reshape(sl.shape[0], -1).max(1) <= 0
    print(f"## ddad-tiny: {int(empty.sum())} of {len(empty)} slices are empty")
    print("| score | empty slices | background (non-empty slices) | normal foreground | cube | AP "
          "| AP, empty slices 0 |")
    print("|---|---|---|---|---|---|---|")
    for variant in ("intra", "a_intra", "rec"):
        r = Predictor(det.with_variant(variant),
                      PredictConfig(device="cpu", progress=False, threads=1)).score_volume(vol.copy())
        p = np.moveaxis(r.pixel, axis, 0)
        y = np.moveaxis(lab, axis, 0)
        fg = np.moveaxis(vol > 0, axis, 0)
        bg_ne = (~fg) & ~empty[:, None, None]
        p0 = p.copy()
        p0[empty] = 0.0
        print(f"| {variant} | {p[empty].mean():.4f} | {p[bg_ne].mean():.4f} | {p[fg & ~y].mean():.4f} | "
              f"{p[y].mean():.4f} | {float16_ap(p, y):.4f} | {float16_ap(p0, y):.4f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checks", default=",".join(CHECKS), help=f"comma-separated subset of {', '.join(CHECKS)}")
    ap.add_argument("--volumes", type=Path, default=None,
                    help="folder of NIfTI volumes for dpa-localisation (at least 3; docs/dpa.md uses "
                         "`mood-detector make-data brain --n 6 --size 64 --seed 0`); default: blob volumes")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    run = {"squid-float16": check_squid_float16, "dpa-localisation": lambda: check_dpa_localisation(args.volumes),
           "ddad-tiny": check_ddad_tiny}
    for name in args.checks.split(","):
        run[name.strip()]()
        print()


if __name__ == "__main__":
    main()
