"""Domain randomisation: training subjects whose appearance varies far more than real scans do.

A detector trained on one look (a T1 template, a phantom with fixed CT numbers) learns that look: on a T2 scan
every voxel is "anomalous". Following SynthSeg (Billot et al., Medical Image Analysis 2023), which trains on
images synthesised from label maps with random Gaussian-mixture intensities, random bias fields, blur,
resolution and noise, the appearance of each subject is drawn at random, so that any real contrast falls
inside the training distribution and only *local* inconsistencies stay unusual.

What is randomised, per subject (:class:`Appearance` holds the ranges):

* tissue intensities: the mean of each tissue class, either from a contrast family (T1-, T2-, PD- or
  FLAIR-like orderings, with wide jitter) or uniformly at random in [0, 1] (any ordering), as SynthSeg does;
  a per-class texture (Gaussian noise of random strength, smoothed by the resampling);
* for real source images, which have no tissue maps: a random intensity curve (:func:`random_curve`) through
  random control points, monotone, reversed or arbitrary, which turns a T1 image into any contrast ordering;
* acquisition: a multiplicative smooth bias field, a gamma curve, Gaussian blur, thick slices along a random
  axis (block average, then linear interpolation back), Gaussian noise, and either an empty (zero)
  background or a noisy one (Rayleigh-distributed, like magnitude MRI).

SynthSeg draws means uniformly in [0, 255] and standard deviations up to 35, blur up to 1 voxel, resolution
down to 9 mm and a bias field of up to 0.5 in the log domain; the ranges here are of the same order where
they apply (see :class:`Appearance`). Anatomy varies by the spatial deformations of :mod:`.brain`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from mood_detector.io.nifti import write_text_atomic

#: contrast families: per class, the (low, high) range of its mean intensity; classes are
#: :data:`CLASSES`. ``random`` (not listed) draws every mean uniformly in [0, 1].
FAMILIES: dict[str, dict[str, tuple[float, float]]] = {
    "t1": {"csf": (0.0, 0.3), "gm": (0.35, 0.6), "wm": (0.62, 1.0), "bone": (0.0, 0.15), "marrow": (0.4, 0.9),
           "scalp": (0.45, 1.0)},
    "t2": {"csf": (0.75, 1.0), "gm": (0.4, 0.65), "wm": (0.15, 0.45), "bone": (0.0, 0.15), "marrow": (0.2, 0.7),
           "scalp": (0.3, 0.9)},
    "pd": {"csf": (0.6, 0.95), "gm": (0.55, 0.8), "wm": (0.35, 0.65), "bone": (0.0, 0.15), "marrow": (0.4, 0.8),
           "scalp": (0.4, 0.9)},
    "flair": {"csf": (0.0, 0.2), "gm": (0.5, 0.85), "wm": (0.3, 0.55), "bone": (0.0, 0.15), "marrow": (0.3, 0.8),
              "scalp": (0.4, 1.0)},
}
CLASSES = ("csf", "gm", "wm", "bone", "marrow", "scalp")


@dataclass(frozen=True)
class Appearance:
    """Ranges of the random appearance (uniform unless stated).

    Attributes:
        p_random: probability of fully random class means (else a contrast family, chosen uniformly).
        texture: range of the per-class texture's standard deviation.
        p_skull: probability that skull, scalp and outer CSF are kept (else a skull-stripped look).
        bias: range of the bias field's amplitude (standard deviation of its log).
        gamma_sigma: standard deviation of log(gamma).
        p_blur, blur: probability and range (voxels, per axis) of Gaussian blur.
        p_thick, thick: probability and range (integer factor) of thick slices along one random axis.
        noise: range of the noise's standard deviation (fraction of the brightest tissue).
        p_background: probability of a noisy background (given skull; a quarter of it without).
        background: range of the background noise's standard deviation.
    """

    p_random: float = 0.4
    texture: tuple[float, float] = (0.0, 0.06)
    p_skull: float = 0.5
    bias: tuple[float, float] = (0.0, 0.3)
    gamma_sigma: float = 0.2
    p_blur: float = 0.5
    blur: tuple[float, float] = (0.0, 1.0)
    p_thick: float = 0.25
    thick: tuple[int, int] = (2, 4)
    noise: tuple[float, float] = (0.005, 0.04)
    p_background: float = 0.6
    background: tuple[float, float] = (0.01, 0.06)


def class_means(rng: np.random.Generator, app: Appearance = Appearance()) -> tuple[str, dict[str, float]]:
    """(family name, mean intensity per class of :data:`CLASSES`) for one subject."""
    if rng.random() < app.p_random:
        return "random", {c: float(rng.uniform(0.0, 1.0)) for c in CLASSES}
    family = list(FAMILIES)[int(rng.integers(len(FAMILIES)))]
    return family, {c: float(rng.uniform(*FAMILIES[family][c])) for c in CLASSES}


def random_curve(rng: np.random.Generator, points: int = 7) -> tuple[str, np.ndarray, np.ndarray]:
    """(shape, x, y) of a random intensity curve on [0, 1]: piecewise linear through ``points`` control
    points whose values are sorted (``monotone``, a T1-like ordering kept), reversed (``reversed``, T2-like)
    or left as drawn (``random``)."""
    x = np.linspace(0.0, 1.0, points)
    y = rng.uniform(0.0, 1.0, points)
    shape = ("monotone", "reversed", "random")[int(rng.integers(3))]
    if shape == "monotone":
        y = np.sort(y)
    elif shape == "reversed":
        y = np.sort(y)[::-1]
    return shape, x, y


def apply_curve(vol: np.ndarray, fg: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """``vol`` (in [0, 1]) with a :func:`random_curve` applied inside ``fg``; 0 outside."""
    shape, x, y = random_curve(rng)
    out = np.interp(vol, x, y).astype(np.float32)
    out[~fg] = 0.0
    return out, shape


def thick_slices(vol: np.ndarray, axis: int, factor: int) -> np.ndarray:
    """``vol`` as if acquired with slices ``factor`` times thicker along ``axis``: block means, then linear
    interpolation back to the original grid."""
    n = vol.shape[axis]
    m = n // factor
    if m < 2:
        return vol
    moved = np.moveaxis(vol, axis, 0)
    blocks = moved[: m * factor].reshape(m, factor, *moved.shape[1:]).mean(axis=1)
    pos = (np.arange(n) + 0.5) / factor - 0.5  # block centres sit at (k + 0.5) * factor - 0.5
    lo = np.clip(np.floor(pos).astype(int), 0, m - 1)
    hi = np.clip(lo + 1, 0, m - 1)
    w = np.clip(pos - lo, 0.0, 1.0).astype(np.float32).reshape(-1, *([1] * (vol.ndim - 1)))
    out = blocks[lo] * (1 - w) + blocks[hi] * w
    return np.ascontiguousarray(np.moveaxis(out.astype(np.float32), 0, axis))


def acquire(vol: np.ndarray, fg: np.ndarray, bias: np.ndarray, rng: np.random.Generator,
            app: Appearance = Appearance(), skull: bool = True) -> tuple[np.ndarray, dict[str, object]]:
    """Simulate an acquisition of ``vol`` (object ``fg``, intensities in about [0, 1]) with a multiplicative
    ``bias`` field (same shape, from the caller's smooth-field generator): gamma, blur, thick slices, noise and
    background. Returns the volume scaled to [0, 1] and what was drawn."""
    info: dict[str, object] = {}
    vol = vol * bias
    vol = np.clip(vol, 0.0, None)
    top = float(np.percentile(vol[fg], 99.5)) if fg.any() else 1.0
    vol /= max(top, 1e-6)
    gamma = float(np.exp(rng.normal(0.0, app.gamma_sigma)))
    np.power(np.clip(vol, 0.0, None), gamma, out=vol)
    info["gamma"] = round(gamma, 3)
    if rng.random() < app.p_blur:
        sigma = rng.uniform(*app.blur, 3)
        vol = ndimage.gaussian_filter(vol, sigma)
        info["blur"] = [round(float(s), 2) for s in sigma]
    if rng.random() < app.p_thick:
        axis, factor = int(rng.integers(3)), int(rng.integers(app.thick[0], app.thick[1] + 1))
        vol = thick_slices(vol, axis, factor)
        info["thick"] = [axis, factor]
    sigma = float(rng.uniform(*app.noise))
    vol += rng.normal(0.0, sigma, vol.shape).astype(np.float32)
    info["noise"] = round(sigma, 4)
    if rng.random() < app.p_background * (1.0 if skull else 0.25):
        s = float(rng.uniform(*app.background))
        bg = np.hypot(rng.normal(0.0, s, vol.shape), rng.normal(0.0, s, vol.shape)).astype(np.float32)
        vol[~fg] = bg[~fg]
        info["background"] = round(s, 4)
    else:
        vol[~fg] = 0.0
    top = float(np.percentile(vol[fg], 99.9)) if fg.any() else 1.0
    np.clip(vol / max(top, 1e-6), 0.0, 1.0, out=vol)
    return vol.astype(np.float32, copy=False), info


def record_draws(out_dir: Path, drawn: dict[str, Any]) -> Path:
    """Add what each subject drew (file name -> draws) to ``out_dir/subjects.json``, keeping the entries of
    earlier runs into the same folder (``--start``); written atomically."""
    meta = out_dir / "subjects.json"
    old = json.loads(meta.read_text(encoding="utf-8")) if meta.exists() else {}
    write_text_atomic(meta, json.dumps({**old, **drawn}, indent=1, sort_keys=True) + "\n")
    return meta
