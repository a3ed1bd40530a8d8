"""Brain pseudo-subjects from the MNI ICBM152 2009 T1 template shipped inside the ``nilearn`` wheel.

Each subject is the template under its own random smooth elastic deformation, small rotation, anisotropic
scale and translation, multiplicative bias field, gamma and noise, normalised to [0, 1] with zero background
and placed in a cubic grid covering 256 mm (256^3 at 1 mm by default, like MOOD's brain volumes). These are
*not* real subjects: all share one template's anatomy, so they exercise the pipeline, not clinical variety.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from mood_detector.io.nifti import write_volume

log = logging.getLogger(__name__)

TEMPLATE_FILE = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
FOV_MM = 256.0


@dataclass(frozen=True)
class BrainVariation:
    """Ranges of the per-subject variation (all drawn uniformly)."""

    rotation_deg: float = 5.0
    scale: tuple[float, float] = (0.92, 1.08)
    translation_mm: float = 6.0
    elastic_mm: float = 4.0
    elastic_grid: int = 6
    bias: float = 0.15
    gamma: tuple[float, float] = (0.8, 1.25)
    noise: tuple[float, float] = (0.005, 0.02)


def template_path() -> Path:
    """Path of the MNI152 T1 template inside the installed nilearn package (``pip install .[data]``)."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("brain data generation needs nilearn: pip install 'mood-detector[data]'")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / TEMPLATE_FILE
    if not path.is_file():
        raise RuntimeError(f"the MNI152 template is missing from the nilearn installation ({path})")
    return path


def _rotation(angles: np.ndarray) -> np.ndarray:
    ax, ay, az = np.deg2rad(angles)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _smooth_field(rng: np.random.Generator, grid: int, size: int, amplitude: float) -> np.ndarray:
    coarse = rng.normal(0.0, amplitude, (grid,) * 3).astype(np.float32)
    return ndimage.zoom(coarse, size / grid, order=3, mode="nearest", grid_mode=True)[:size, :size, :size]


def make_brain_subject(template: np.ndarray, template_affine: np.ndarray, size: int, rng: np.random.Generator,
                       var: BrainVariation = BrainVariation()) -> tuple[np.ndarray, np.ndarray]:
    """One pseudo-subject as (float32 volume of ``size``^3 in [0, 1], its affine)."""
    vox = FOV_MM / size
    out_affine = np.diag([vox, vox, vox, 1.0])
    centre_world = template_affine[:3, :3] @ (np.array(template.shape) / 2.0) + template_affine[:3, 3]
    out_affine[:3, 3] = centre_world - vox * (size - 1) / 2.0
    rot = _rotation(rng.uniform(-var.rotation_deg, var.rotation_deg, 3))
    scale = np.diag(1.0 / rng.uniform(*var.scale, 3))
    shift = rng.uniform(-var.translation_mm, var.translation_mm, 3)
    # output voxel -> world -> (inverse subject transform about the centre) -> template voxel
    lin = rot @ scale
    inv_t = np.linalg.inv(template_affine)
    m = inv_t[:3, :3] @ lin @ out_affine[:3, :3]
    off = inv_t[:3, :3] @ (lin @ (out_affine[:3, 3] - centre_world) + centre_world + shift) + inv_t[:3, 3]
    idx = np.indices((size,) * 3, dtype=np.float32).reshape(3, -1)
    coords = (m.astype(np.float32) @ idx) + off.astype(np.float32)[:, None]
    del idx
    for axis in range(3):  # elastic displacement, in template voxels (template is 1 mm)
        coords[axis] += _smooth_field(rng, var.elastic_grid, size, var.elastic_mm / 2).reshape(-1)
    vol = ndimage.map_coordinates(template, coords, order=1, mode="constant", cval=0.0).reshape((size,) * 3)
    del coords
    fg = vol > 0.02
    vol = np.clip(vol, 0.0, None)
    bias = np.exp(_smooth_field(rng, 3, size, var.bias / 2))
    vol *= bias
    vol = np.power(vol / max(float(vol.max()), 1e-6), rng.uniform(*var.gamma))
    vol += rng.normal(0.0, rng.uniform(*var.noise), vol.shape).astype(np.float32)
    vol[~fg] = 0.0
    hi = float(np.percentile(vol[fg], 99.9)) if fg.any() else 1.0
    vol = np.clip(vol / max(hi, 1e-6), 0.0, 1.0).astype(np.float32)
    vol[~fg] = 0.0
    return vol, out_affine


def make_brain_data(out_dir: str | Path, n: int, size: int = 256, seed: int = 0, start: int = 0) -> list[Path]:
    """Write ``n`` brain pseudo-subjects ``{start:05d}.nii.gz ...`` into ``out_dir``; subject k depends only on
    (seed, k), so folders made with different ``n`` agree on the subjects they share."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    img = nib.load(str(template_path()))
    template = np.asarray(img.get_fdata(dtype=np.float32), dtype=np.float32)
    template /= max(float(template.max()), 1e-6)
    written = []
    from tqdm import tqdm

    for k in tqdm(range(start, start + n), desc="make-data brain", unit="vol"):
        rng = np.random.default_rng([seed, k])
        vol, affine = make_brain_subject(template, img.affine, size, rng)
        written.append(write_volume(out_dir / f"{k:05d}.nii.gz", vol, affine))
    log.info("wrote %d brain volumes (%d^3) to %s", n, size, out_dir)
    return written
