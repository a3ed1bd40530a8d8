"""The five synthetic outlier types of the FPI paper (Sec. 3.1, Eqs. 8-12).

A sphere of random radius and position is chosen inside the foreground of a normal volume and the voxels
inside it are altered in one of five ways:

* ``uniform_addition`` (Eq. 8): A'_i = A_i + n for every i in the sphere, one n ~ N(0, sigma^2).
* ``noise_addition`` (Eq. 9): A'_i = A_i + n_i, independent n_i ~ N(0, sigma^2).
* ``sink_source`` (Eq. 10): A'_I = A_V with V = h_c + s (I - h_c) (source: content pushed outwards) or
  V = I + (1 - s)(I - h_c) (sink: pulled inwards), s = (|I - h_c| / r)^2 and r the radius (the paper's h_s/2);
  sampled with trilinear interpolation. Both maps are the identity on the sphere's surface.
* ``uniform_shift`` (Eq. 11): A'_{i,j,k} = A_{i+a, j+b, k+c}, each offset sigma U(0.02 d, 0.05 d) with a random
  sign, d the edge length along that axis; offsets are rounded to whole voxels (at least 1), so values are
  copied, not interpolated.
* ``reflection`` (Eq. 12): A'_{i,j,k} = A of the voxel mirrored along the reflection axis (``d - 1 - j`` in
  0-based indices). The paper mirrors its second array index; here the axis is a parameter and the default
  is axis 0, the left-right axis of the generated brain and abdomen volumes (their symmetry axis).

Decisions (documented deviations / completions of the paper):

* Intensities stay in [0, 1]: Eqs. 8 and 9 (sigma = 1 by default, as written) and interpolation can leave
  that range, so every result is clipped to [0, 1].
* Sphere: radius r = U(radius_frac) x the smallest edge length (default 4-12%, so a sphere is under 1% of
  the volume, as in the paper). The centre is a uniformly drawn foreground voxel (inside
  :func:`mood_detector.preprocess.foreground_mask` and above ``fg_threshold``)
  at least r from every border, so the whole sphere is inside the array; of up to ``max_tries`` draws the
  first whose sphere is at least ``min_foreground`` foreground is used (else the most foreground one).
* Label: the voxels inside the sphere whose value changed (``A' != A`` in float32). Unchanged voxels (e.g.
  background that a negative uniform addition clips back to 0, or voxels already at 1 under a positive one)
  cannot be detected from the image and are not labelled. A draw that changes fewer than
  ``min_changed_frac`` of the sphere's voxels is redrawn (up to ``max_tries`` times).
* Only the sphere's bounding box is copied and processed: the full-size cost is one output volume and one
  uint8 label.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from mood_detector.preprocess import foreground_mask

log = logging.getLogger(__name__)

OUTLIER_TYPES: tuple[str, ...] = ("uniform_addition", "noise_addition", "sink_source", "uniform_shift",
                                  "reflection")


@dataclass(frozen=True)
class OutlierConfig:
    """Parameters of the synthetic outliers (defaults follow the paper where it gives numbers).

    Attributes:
        radius_frac: radius range as a fraction of the smallest edge length.
        fg_threshold: voxels above this value are foreground (sphere centres are drawn among them).
        min_foreground: wanted foreground fraction of the sphere.
        addition_sigma: standard deviation of n in Eq. 8 (paper: 1).
        noise_sigma: standard deviation of n_i in Eq. 9 (paper: 1).
        shift_frac: range of the shift per axis as a fraction of the edge length (Eq. 11: 0.02-0.05).
        reflect_axis: array axis mirrored by the reflection outlier (Eq. 12).
        min_changed_frac: a draw must change at least this fraction of the sphere's voxels.
        max_tries: draws of a centre (and of an outlier) before giving up on the wanted properties.
    """

    radius_frac: tuple[float, float] = (0.04, 0.12)
    fg_threshold: float = 0.0
    min_foreground: float = 0.5
    addition_sigma: float = 1.0
    noise_sigma: float = 1.0
    shift_frac: tuple[float, float] = (0.02, 0.05)
    reflect_axis: int = 0
    min_changed_frac: float = 0.05
    max_tries: int = 50


@dataclass
class Sphere:
    """A sphere in voxel coordinates (centre as integer voxel indices, radius in voxels)."""

    centre: tuple[int, int, int]
    radius: float

    def bbox(self, shape: tuple[int, ...]) -> tuple[slice, slice, slice]:
        """The smallest box (clipped to ``shape``) holding every voxel within ``radius`` of the centre."""
        r = int(np.floor(self.radius))
        return tuple(slice(max(0, c - r), min(s, c + r + 1)) for c, s in zip(self.centre, shape))  # type: ignore

    def mask(self, shape: tuple[int, ...]) -> tuple[tuple[slice, slice, slice], np.ndarray]:
        """(bbox, boolean mask of the sphere's voxels inside the bbox): voxels with |I - c| <= radius."""
        box = self.bbox(shape)
        grids = np.ogrid[tuple(slice(b.start - c, b.stop - c) for b, c in zip(box, self.centre))]
        d2 = sum(g.astype(np.float64) ** 2 for g in grids)
        return box, d2 <= self.radius**2

    def full_mask(self, shape: tuple[int, ...]) -> np.ndarray:
        """Boolean sphere mask of the whole volume (for tests and small volumes)."""
        out = np.zeros(shape, dtype=bool)
        box, m = self.mask(shape)
        out[box] = m
        return out


@dataclass
class OutlierResult:
    """An altered volume, its label (uint8, 1 = changed voxel) and what was done."""

    volume: np.ndarray
    label: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


def object_voxels(volume: np.ndarray, cfg: OutlierConfig = OutlierConfig()) -> np.ndarray:
    """Where sphere centres may be drawn: the object, not a noisy background (the shared foreground rule of the
    network's preprocessing), above ``fg_threshold``."""
    return foreground_mask(volume) & (volume > cfg.fg_threshold)


def draw_sphere(volume: np.ndarray, rng: np.random.Generator, cfg: OutlierConfig = OutlierConfig(),
                fg: np.ndarray | None = None) -> Sphere:
    """A random sphere inside the array whose centre is a foreground voxel (see the module notes); ``fg`` is
    :func:`object_voxels` of ``volume`` when the caller has it already."""
    shape = volume.shape
    smallest = min(shape)
    radius = float(rng.uniform(*cfg.radius_frac) * smallest)
    radius = max(1.0, min(radius, (smallest - 1) / 2.0))
    r = int(np.floor(radius))
    lo = np.array([r] * 3)
    hi = np.array(shape) - r  # exclusive
    if fg is None:
        fg = object_voxels(volume, cfg)
    best: tuple[float, Sphere] | None = None
    for _ in range(max(1, cfg.max_tries)):
        centre = _foreground_voxel(fg, lo, hi, rng)
        if centre is None:
            break
        sphere = Sphere(centre, radius)
        box, m = sphere.mask(shape)
        frac = float(fg[box][m].mean()) if m.any() else 0.0
        if best is None or frac > best[0]:
            best = (frac, sphere)
        if frac >= cfg.min_foreground:
            return sphere
    if best is None:
        centre = tuple(int(rng.integers(a, b)) for a, b in zip(lo, hi))
        log.warning("no foreground voxel found: sphere centre drawn anywhere in the volume")
        return Sphere(centre, radius)  # type: ignore[arg-type]
    return best[1]


def _foreground_voxel(fg: np.ndarray, lo: np.ndarray, hi: np.ndarray, rng: np.random.Generator,
                      tries: int = 2000) -> tuple[int, int, int] | None:
    """A uniformly drawn foreground voxel with lo <= index < hi: rejection sampling (no index arrays of the
    whole volume), then an exhaustive search of the allowed box for near-empty volumes."""
    for _ in range(tries):
        c = tuple(int(rng.integers(a, b)) for a, b in zip(lo, hi))
        if fg[c]:
            return c  # type: ignore[return-value]
    inner = fg[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    idx = np.flatnonzero(inner)
    if idx.size == 0:
        return None
    c = np.unravel_index(int(idx[rng.integers(idx.size)]), inner.shape)
    return tuple(int(a + b) for a, b in zip(c, lo))  # type: ignore[return-value]


# --- the five alterations: each returns the new values of the bounding box (float32, unclipped) -----------
def _uniform_addition(volume, sphere, box, mask, rng, cfg) -> tuple[np.ndarray, dict[str, Any]]:
    n = float(rng.normal(0.0, cfg.addition_sigma))
    region = volume[box].astype(np.float32, copy=True)
    region[mask] += np.float32(n)
    return region, {"n": n}


def _noise_addition(volume, sphere, box, mask, rng, cfg) -> tuple[np.ndarray, dict[str, Any]]:
    region = volume[box].astype(np.float32, copy=True)
    region[mask] += rng.normal(0.0, cfg.noise_sigma, int(mask.sum())).astype(np.float32)
    return region, {"sigma": cfg.noise_sigma}


def _sink_source(volume, sphere, box, mask, rng, cfg) -> tuple[np.ndarray, dict[str, Any]]:
    mode = "source" if rng.random() < 0.5 else "sink"
    idx = np.nonzero(mask)
    pts = np.stack([i + b.start for i, b in zip(idx, box)]).astype(np.float64)  # (3, n) voxel coordinates
    c = np.asarray(sphere.centre, dtype=np.float64)[:, None]
    rel = pts - c
    s = np.sum(rel**2, axis=0) / sphere.radius**2
    src = c + s * rel if mode == "source" else pts + (1.0 - s) * rel
    region = volume[box].astype(np.float32, copy=True)
    region[idx] = ndimage.map_coordinates(volume, src, order=1, mode="nearest").astype(np.float32)
    return region, {"mode": mode}


def _uniform_shift(volume, sphere, box, mask, rng, cfg) -> tuple[np.ndarray, dict[str, Any]]:
    shift = []
    for d in volume.shape:
        mag = max(1, int(round(rng.uniform(cfg.shift_frac[0] * d, cfg.shift_frac[1] * d))))
        shift.append(mag if rng.random() < 0.5 else -mag)
    idx = np.nonzero(mask)
    src = tuple(np.clip(i + b.start + s, 0, d - 1) for i, b, s, d in zip(idx, box, shift, volume.shape))
    region = volume[box].astype(np.float32, copy=True)
    region[idx] = volume[src]
    return region, {"shift": shift}


def _reflection(volume, sphere, box, mask, rng, cfg) -> tuple[np.ndarray, dict[str, Any]]:
    axis = int(cfg.reflect_axis)
    idx = np.nonzero(mask)
    src = [i + b.start for i, b in zip(idx, box)]
    src[axis] = volume.shape[axis] - 1 - src[axis]
    region = volume[box].astype(np.float32, copy=True)
    region[idx] = volume[tuple(src)]
    return region, {"axis": axis}


_OPS = {"uniform_addition": _uniform_addition, "noise_addition": _noise_addition, "sink_source": _sink_source,
        "uniform_shift": _uniform_shift, "reflection": _reflection}


def apply_outlier(volume: np.ndarray, kind: str, rng: np.random.Generator,
                  cfg: OutlierConfig = OutlierConfig(), sphere: Sphere | None = None) -> OutlierResult:
    """Insert one outlier of type ``kind`` into a copy of ``volume`` (3D, values in [0, 1]).

    Returns the altered float32 volume (clipped to [0, 1]), the uint8 label (1 = voxel whose value changed,
    always inside the sphere) and an ``info`` dict (type, centre, radius, parameters, voxel counts) for the
    manifest. ``sphere`` fixes the sphere (otherwise drawn with :func:`draw_sphere`).
    """
    if kind not in _OPS:
        raise ValueError(f"unknown outlier type {kind!r}; choose from {', '.join(OUTLIER_TYPES)}")
    vol = np.asarray(volume, dtype=np.float32)
    if vol.ndim != 3:
        raise ValueError(f"expected a 3D volume, got shape {vol.shape}")
    best: tuple[int, tuple, np.ndarray, np.ndarray, dict, Sphere] | None = None
    fg = object_voxels(vol, cfg) if sphere is None else None  # once, for every redraw
    for _ in range(max(1, cfg.max_tries)):
        sph = sphere if sphere is not None else draw_sphere(vol, rng, cfg, fg)
        box, mask = sph.mask(vol.shape)
        region, params = _OPS[kind](vol, sph, box, mask, rng, cfg)
        np.clip(region, 0.0, 1.0, out=region)
        region[~mask] = vol[box][~mask]  # guarantee: nothing outside the sphere changes
        changed = (region != vol[box]) & mask
        n_changed = int(changed.sum())
        if best is None or n_changed > best[0]:
            best = (n_changed, box, region, changed, params, sph)
        if n_changed >= max(1, cfg.min_changed_frac * mask.sum()):
            break
    assert best is not None
    n_changed, box, region, changed, params, sph = best
    if n_changed == 0:
        log.warning("%s outlier changed no voxel (sphere at %s, radius %.1f)", kind, sph.centre, sph.radius)
    out = vol.copy()
    out[box] = region
    label = np.zeros(vol.shape, dtype=np.uint8)
    label[box] = changed
    info = {"type": kind, "centre": [int(c) for c in sph.centre], "radius": round(float(sph.radius), 3),
            "params": params, "n_sphere": int(sph.mask(vol.shape)[1].sum()), "n_changed": n_changed}
    return OutlierResult(out, label, info)


def config_dict(cfg: OutlierConfig) -> dict[str, Any]:
    """The config as a JSON-friendly dict (for the manifest)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()}
