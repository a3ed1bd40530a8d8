"""Brain subjects of random contrast (``make-data brain --randomise``): the domain-randomised training data.

Two kinds of source (see :mod:`.randomise` for what is randomised and why):

* ``icbm-tissue``: the ICBM152 2009a grey- and white-matter probability maps that ship with nilearn; CSF is
  the rest of the template's brain. Skull and scalp are built around the brain as layers at random distances
  from its surface (outer CSF 1-3 mm, bone 4-8 mm with marrow in its middle third, scalp 3-8 mm), so that a
  subject can have a head, not only a brain. Each class gets a random mean and texture.
* any real source image of :data:`mood_detector.data.brain.TEMPLATES` (``colin27``, ``itk-subject``, ...):
  its intensities pass through a random curve (:func:`.randomise.apply_curve`), which reorders tissue
  contrasts as another MRI weighting would.

Then both get the spatial deformations of :mod:`.brain` and a random acquisition (bias, gamma, blur, thick
slices, noise, empty or noisy background).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np
from scipy import ndimage
from tqdm import tqdm

from mood_detector.data.brain import (TEMPLATES, BrainVariation, load_template, resolve_templates, smooth_field,
                                     warp)
from mood_detector.data.randomise import Appearance, acquire, apply_curve, class_means, record_draws
from mood_detector.io.nifti import write_volume

log = logging.getLogger(__name__)

TISSUE = "icbm-tissue"
_MAPS = {"t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
         "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
         "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"}
#: voxels added on every side of the template grid, room for skull and scalp (1 mm voxels)
PAD = 24


@dataclass(frozen=True)
class TissueMaps:
    """Probability maps on the (padded) template grid and the distance (mm) outside the brain."""

    csf: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    outside_mm: np.ndarray
    affine: np.ndarray


@functools.lru_cache(maxsize=1)
def load_tissue_maps() -> TissueMaps:
    """The ICBM152 2009a tissue maps from the nilearn wheel (``pip install -e '.[data]'``)."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"source {TISSUE!r} needs the nilearn package: pip install -e '.[data]'")
    folder = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    imgs = {k: nib.load(str(folder / f)) for k, f in _MAPS.items()}
    pad = [(PAD, PAD)] * 3
    t1, gm, wm = (np.pad(np.asarray(imgs[k].get_fdata(dtype=np.float32)), pad) for k in ("t1", "gm", "wm"))
    brain = t1 > 0
    gm = np.clip(gm / 255.0, 0.0, 1.0) * brain
    wm = np.clip(wm / 255.0, 0.0, 1.0) * brain
    csf = np.clip(brain - gm - wm, 0.0, 1.0).astype(np.float32)
    outside = ndimage.distance_transform_edt(~brain).astype(np.float32)
    affine = imgs["t1"].affine.copy()
    affine[:3, 3] -= affine[:3, :3] @ np.full(3, PAD)
    return TissueMaps(csf, gm.astype(np.float32), wm.astype(np.float32), outside, affine)


def tissue_image(maps: TissueMaps, rng: np.random.Generator, app: Appearance) -> tuple[np.ndarray, np.ndarray,
                                                                                       dict[str, object]]:
    """(image, object mask, what was drawn) of one random-contrast head or brain on the template grid."""
    family, mu = class_means(rng, app)
    skull = bool(rng.random() < app.p_skull)
    d = maps.outside_mm
    img = maps.csf * mu["csf"] + maps.gm * mu["gm"] + maps.wm * mu["wm"]
    sd = maps.csf * rng.uniform(*app.texture) + maps.gm * rng.uniform(*app.texture) + maps.wm * rng.uniform(*app.texture)
    fg = maps.outside_mm <= 0
    if skull:
        t_csf, t_bone, t_scalp = rng.uniform(1, 3), rng.uniform(4, 8), rng.uniform(3, 8)
        outer_csf = (d > 0) & (d <= t_csf)
        bone = (d > t_csf) & (d <= t_csf + t_bone)
        marrow = (d > t_csf + t_bone / 3) & (d <= t_csf + 2 * t_bone / 3)
        scalp = (d > t_csf + t_bone) & (d <= t_csf + t_bone + t_scalp)
        for region, cls in ((outer_csf, "csf"), (bone & ~marrow, "bone"), (marrow, "marrow"), (scalp, "scalp")):
            img[region] = mu[cls]
            sd[region] = rng.uniform(*app.texture)
        fg = d <= t_csf + t_bone + t_scalp
    img += sd * rng.standard_normal(img.shape, dtype=np.float32)
    img[~fg] = 0.0
    return img, fg, {"source": TISSUE, "contrast": family, "skull": skull}


def source_image(name: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                               dict[str, object]]:
    """(image, object mask, affine, what was drawn) of real source ``name`` under a random intensity curve."""
    img, affine = load_template(name)
    fg = img > 0
    img, shape = apply_curve(img, fg, rng)
    return img, fg, affine, {"source": name, "contrast": f"curve:{shape}", "skull": TEMPLATES[name].head}


def make_random_subject(source: str, size: int, rng: np.random.Generator, var: BrainVariation = BrainVariation(),
                        app: Appearance = Appearance()) -> tuple[np.ndarray, np.ndarray, dict[str, object]]:
    """One random-contrast subject from ``source`` (``icbm-tissue`` or a template name): (float32 volume of
    ``size``^3 in [0, 1], affine, what was drawn)."""
    if source == TISSUE:
        maps = load_tissue_maps()
        img, fg, info = tissue_image(maps, rng, app)
        affine, brain = maps.affine, maps.outside_mm <= 0
    else:
        img, fg, affine, info = source_image(source, rng)
        brain = fg
    (vol, obj), out_affine = warp([img, fg.astype(np.float32)], affine, brain, size, rng, var)
    obj = obj > 0.5
    bias = np.exp(smooth_field(rng, 3, size, float(rng.uniform(*app.bias)))).astype(np.float32)
    vol, acq = acquire(vol, obj, bias, rng, app, skull=bool(info["skull"]))
    return vol, out_affine, {**info, **acq}


def resolve_sources(spec: str | Sequence[str] | None) -> list[str]:
    """``None``/``"default"`` -> [``icbm-tissue``]; ``"all"`` -> it and every installed real source image;
    else a comma list of ``icbm-tissue`` and template names."""
    if spec is None or spec == "default":
        return [TISSUE]
    if spec == "all":
        return [TISSUE, *[n for n in resolve_templates("all", heads=True) if n != "icbm2009a"]]
    names = [n.strip() for n in spec.split(",")] if isinstance(spec, str) else list(spec)
    real = [n for n in names if n != TISSUE]
    if real:
        resolve_templates(real)  # raises with an install hint
    return names


def make_random_brain_data(out_dir: str | Path, n: int, size: int = 256, seed: int = 0, start: int = 0,
                           sources: str | Sequence[str] | None = None) -> list[Path]:
    """Write ``n`` random-contrast brain subjects ``{start:05d}.nii.gz ...`` into ``out_dir`` (subject k from
    source ``k mod len(sources)``, drawn from ``(seed, k)`` only) and ``subjects.json`` with what was drawn."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = resolve_sources(sources)
    written, drawn = [], {}
    for k in tqdm(range(start, start + n), desc="make-data brain (random contrast)", unit="vol"):
        rng = np.random.default_rng([seed, k, 7])
        vol, affine, info = make_random_subject(names[k % len(names)], size, rng)
        written.append(write_volume(out_dir / f"{k:05d}.nii.gz", vol, affine))
        drawn[f"{k:05d}.nii.gz"] = info
    record_draws(out_dir, drawn)
    log.info("wrote %d random-contrast brain volumes (%d^3, sources %s) to %s", n, size, ",".join(names), out_dir)
    return written
