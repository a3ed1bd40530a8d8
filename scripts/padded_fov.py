"""The foreground rule on real heads whose noisy field of view (FOV) is zero padded: docs/generalisation.md.

Two kinds of scan: the real sources of ``scripts/real_sources.py`` as written (``epi-b0-t2w_cube256``: a
T2-weighted EPI padded to a cube and resampled, so zero padding above and below its FOV), and the real Colin27
head with Rician noise of a share of its 99th percentile inside a FOV cut 20 slices above its lowest one, zero
padded to 256^3 (``colin27-noisy<share>``). For each, the mask of :func:`mood_detector.preprocess.foreground_mask`
with the threshold's statistics from the padded FOV (the rule) and from the whole volume (``--without``):

* head covered: share of a reference head (intensity above a low threshold, largest component, holes filled)
  inside the mask;
* background kept: share of the FOV's voxels more than 3 voxels from the reference head inside the mask;
* FOV-edge background kept: the same for those within 8 voxels of a padded face of the FOV;
* with ``--score``: the mean pixel score of the bundled brain nsa model (``weights/brain/nsa.safetensors``,
  ``mood-detector predict``) over the FOV-edge background, and its 99th percentile.

Usage: ``python scripts/real_sources.py --out real --cube 256`` (needs the EPI and Colin27, see there), then
``python scripts/padded_fov.py --real real --out fov [--shares 0.1 --score]``
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

import mood_detector.preprocess as pre
from mood_detector.io.nifti import write_volume

log = logging.getLogger("padded_fov")


def reference_head(vol: np.ndarray, level: float) -> np.ndarray:
    """The head of ``vol``: smoothed intensity above ``level``, opened, the largest component, closed and holes
    filled (the array's faces replicated, so a head cut by them is not eroded there)."""
    head = ndimage.gaussian_filter(vol, 1.0) > level
    head = ndimage.binary_opening(np.pad(head, 1, mode="edge"), iterations=1)[1:-1, 1:-1, 1:-1]
    labels, n = ndimage.label(head)
    if n > 1:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        head = labels == int(np.argmax(sizes))
    head = ndimage.binary_closing(np.pad(head, 4, mode="edge"), iterations=3)[4:-4, 4:-4, 4:-4]
    return pre._fill_holes(head)


def fov_regions(head: np.ndarray, box: tuple[slice, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(background inside the FOV ``box``, its part within 8 voxels of a face of the box that is not the
    array's edge)."""
    fov = np.zeros(head.shape, bool)
    fov[box] = True
    bg = fov & ~ndimage.binary_dilation(head, iterations=3)
    depth = np.full(head.shape, np.inf)
    for axis, (b, n) in enumerate(zip(box, head.shape)):
        idx = np.arange(n, dtype=float)
        d = np.full(n, np.inf)
        if b.start > 0:
            d = np.minimum(d, idx - b.start)
        if b.stop < n:
            d = np.minimum(d, b.stop - 1 - idx)
        depth = np.minimum(depth, d.reshape([-1 if a == axis else 1 for a in range(3)]))
    return bg, bg & (depth < 8)


def cases(real: Path, shares: list[float]) -> list[tuple[str, np.ndarray, np.ndarray, tuple[slice, ...]]]:
    """(name, volume, reference head, FOV box) of every case whose source is in ``real``."""
    out = []
    epi = real / "epi-b0-t2w_cube256.nii.gz"
    if epi.is_file():
        vol = np.asarray(nib.load(str(epi)).get_fdata(dtype=np.float32))
        box = pre._bbox(vol != vol.min())
        # its noise lies at about 90 (smoothed: under 130), the faint fat-suppressed scalp above 350
        out.append(("epi-b0-t2w_cube256", vol, reference_head(vol, 350.0), box))
    colin = real / "colin27-head.nii.gz"
    if colin.is_file():
        raw = np.asarray(nib.load(str(colin)).get_fdata(dtype=np.float32))
        head = raw > 0.1 * np.percentile(raw[raw > 0], 50)
        for share in shares:
            rng = np.random.default_rng(0)
            s = share * float(np.percentile(raw[raw > 0], 99))
            noisy = np.hypot(raw + rng.normal(0, s, raw.shape), rng.normal(0, s, raw.shape)).astype(np.float32)
            fov = noisy[:, :, 20:]
            vol = np.zeros((256,) * 3, np.float32)
            box = tuple(slice((256 - n) // 2, (256 - n) // 2 + n) for n in fov.shape)
            vol[box] = fov
            full = np.zeros(vol.shape, bool)
            full[box] = head[:, :, 20:]
            out.append((f"colin27-noisy{share:g}", vol, full, box))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--real", type=Path, required=True, help="folder written by scripts/real_sources.py")
    ap.add_argument("--out", type=Path, required=True, help="output folder (created): volumes, scores, fov.json")
    ap.add_argument("--shares", default="0.06,0.1,0.15", help="Colin27 noise sigma / its 99th percentile")
    ap.add_argument("--score", action="store_true", help="also score with the bundled brain nsa model")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    whole = pre._padded_fov
    results: dict[str, dict[str, dict[str, float]]] = {}
    regions = {}
    (args.out / "in").mkdir(exist_ok=True)
    for name, vol, head, box in cases(args.real, [float(s) for s in args.shares.split(",")]):
        bg, edge = fov_regions(head, box)
        regions[name] = edge
        write_volume(args.out / "in" / f"{name}.nii.gz", vol, np.eye(4))
        for rule in ("without", "with"):
            pre._padded_fov = whole if rule == "with" else (lambda small: None)
            m = pre.foreground_mask(vol)
            results.setdefault(name, {})[rule] = {
                "head covered": float(m[head].mean()), "background kept": float(m[bg].mean()),
                "FOV-edge background kept": float(m[edge].mean())}
    if args.score:
        from mood_detector.cli import main as cli

        for rule in ("without", "with"):
            pre._padded_fov = whole if rule == "with" else (lambda small: None)
            pred = args.out / f"pred_{rule}"
            cli.main(["predict", "pixel", "-i", str(args.out / "in"), "-o", str(pred), "--kind", "brain",
                      "--detector", "nsa", "--skip-existing"], standalone_mode=False)
            for name, edge in regions.items():
                score = np.asarray(nib.load(str(pred / f"{name}.nii.gz")).get_fdata(dtype=np.float32))
                results[name][rule]["FOV-edge score mean"] = float(score[edge].mean())
                results[name][rule]["FOV-edge score p99"] = float(np.percentile(score[edge], 99))
    pre._padded_fov = whole
    for name, by_rule in results.items():
        for rule, r in by_rule.items():
            log.info("%s, %s FOV statistics: %s", name, rule, {k: round(v, 4) for k, v in r.items()})
    (args.out / "fov.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
