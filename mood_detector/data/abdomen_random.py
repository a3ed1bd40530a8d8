"""Abdominal phantoms of random appearance (``make-data abdom --randomise``): domain-randomised training data.

The phantom's anatomy (:mod:`.abdomen`) with, per subject (see :mod:`.randomise` for why):

* every tissue's CT number drawn uniformly within its class's range (:data:`CT_RANGES`): fat, soft tissue
  (any enhancement phase: organs may be brighter or darker than each other in any order), vessels (plain to
  arterial phase), bone; gas stays air;
* noise of 3-40 HU; with probability 0.5 blur and with 0.3 thick slices along the cranio-caudal axis;
* with probability 0.5 a real-CT background: air with noise and a patient table below the body (which the
  shared foreground rule must drop), else the phantom's empty background.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from mood_detector.data.abdomen import HU_RANGE, AbdomenVariation, abdomen_affine, make_subject, render_subject
from mood_detector.data.randomise import record_draws, thick_slices
from mood_detector.io.nifti import write_volume

log = logging.getLogger(__name__)

#: CT-number range (HU) of each tissue class of the phantom
CT_RANGES: dict[str, tuple[float, float]] = {
    "fat": (-150.0, -50.0),
    "soft": (-20.0, 250.0),
    "vessel": (30.0, 400.0),
    "fluid": (-10.0, 60.0),
    "content": (-60.0, 120.0),
    "cortical": (500.0, 1500.0),
    "cancellous": (100.0, 450.0),
    "arch": (300.0, 1000.0),
}
_CLASS = {"fat": "fat", "sinus_fat": "fat", "aorta": "vessel", "ivc": "vessel", "bowel_fluid": "fluid",
          "stomach_fluid": "fluid", "gallbladder": "fluid", "csf": "fluid", "colon_content": "content",
          "cortical": "cortical", "cancellous": "cancellous", "arch": "arch"}


def tissue_range(name: str) -> tuple[float, float]:
    """HU range of phantom tissue ``name`` (skin, muscle, organs, discs: soft tissue)."""
    return CT_RANGES[_CLASS.get(name, "soft")]


@dataclass(frozen=True)
class CTAcquisition:
    """Ranges of the random acquisition (probabilities and uniform ranges)."""

    noise_hu: tuple[float, float] = (3.0, 40.0)
    p_blur: float = 0.5
    blur: tuple[float, float] = (0.0, 1.0)
    p_thick: float = 0.3
    thick: tuple[int, int] = (2, 3)
    p_scanner: float = 0.5
    air_noise_hu: tuple[float, float] = (5.0, 40.0)
    table_hu: tuple[float, float] = (-300.0, 600.0)


def _to_unit(hu: float) -> float:
    lo, hi = HU_RANGE
    return float(np.clip((hu - lo) / (hi - lo), 0.0, 1.0))


def scanner_background(vol: np.ndarray, rng: np.random.Generator, acq: CTAcquisition) -> dict[str, object]:
    """Noisy air and a patient table below the body (array axis 2 runs posterior to anterior), in place."""
    body = vol > 0
    size = vol.shape[2]
    posterior = int(np.argmax(body.any(axis=(0, 1))))  # first index along y that holds body
    gap, thick = int(rng.integers(1, max(2, size // 40))), int(rng.integers(max(2, size // 80), max(3, size // 25)))
    y1 = max(0, posterior - gap)
    y0 = max(0, y1 - thick)
    x0, x1 = int(size * rng.uniform(0.05, 0.2)), int(size * rng.uniform(0.8, 0.95))
    air = ~body
    scale = 1.0 / (HU_RANGE[1] - HU_RANGE[0])
    sigma = float(rng.uniform(*acq.air_noise_hu))
    vol[air] = np.clip(rng.normal(0.0, sigma, int(air.sum())) * scale, 0.0, 1.0)
    table_hu = float(rng.uniform(*acq.table_hu))
    if y1 > y0:
        vol[x0:x1, :, y0:y1] = _to_unit(table_hu)
    return {"air_noise_hu": round(sigma, 1), "table_hu": round(table_hu, 0)}


def make_random_abdomen(size: int, seed: int, k: int, acq: CTAcquisition = CTAcquisition()) -> tuple[np.ndarray,
                                                                                                     dict[str, object]]:
    """Subject ``k`` of the random-appearance family ``seed``: (float32 ``size``^3 volume in [0, 1], what was
    drawn)."""
    rng = np.random.default_rng([seed, k, 7])
    var = AbdomenVariation(tissue_hu=tissue_range, noise_hu=acq.noise_hu)
    subj = make_subject(rng, var)
    vol = render_subject(subj, size, rng, var)
    info: dict[str, object] = {"noise_hu": round(subj.noise, 1)}
    body = vol > 0
    if rng.random() < acq.p_blur:
        sigma = rng.uniform(*acq.blur, 3)
        vol = ndimage.gaussian_filter(vol, sigma)
        vol[~body] = 0.0
        info["blur"] = [round(float(s), 2) for s in sigma]
    if rng.random() < acq.p_thick:
        factor = int(rng.integers(acq.thick[0], acq.thick[1] + 1))
        vol = thick_slices(vol, 1, factor)
        vol[~body] = 0.0
        info["thick"] = factor
    if rng.random() < acq.p_scanner:
        info.update(scanner_background(vol, rng, acq))
    return vol.astype(np.float32, copy=False), info


def make_random_abdomen_data(out_dir: str | Path, n: int, size: int = 512, seed: int = 0,
                             start: int = 0) -> list[Path]:
    """Write ``n`` random-appearance phantoms ``{start:05d}.nii.gz ...`` into ``out_dir`` (subject k drawn from
    ``(seed, k)`` only) and ``subjects.json`` with what was drawn."""
    from tqdm import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    affine = abdomen_affine(size)
    written, drawn = [], {}
    for k in tqdm(range(start, start + n), desc="make-data abdom (random appearance)", unit="vol"):
        vol, info = make_random_abdomen(size, seed, k)
        written.append(write_volume(out_dir / f"{k:05d}.nii.gz", vol, affine))
        drawn[f"{k:05d}.nii.gz"] = info
        del vol
    record_draws(out_dir, drawn)
    log.info("wrote %d random-appearance abdominal phantoms (%d^3) to %s", n, size, out_dir)
    return written
