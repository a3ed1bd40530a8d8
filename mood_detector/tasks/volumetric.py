"""Self-supervised training tasks of the volumetric detector (a compact 3D U-Net that segments synthetic
anomalies in normal 3D scans).

The 2D tasks (:mod:`mood_detector.tasks.fpi`, :mod:`mood_detector.tasks.nsa`) change intensities only; a 3D
network can also learn *geometry* (tissue moved, mirrored, rotated, zoomed or warped), which a single slice
cannot tell from normal anatomy. After Baugh et al. (MICCAI 2023, "Many tasks make light work") the task is a
set of families, each an independent way of changing a region, so that families can be held out for checkpoint
selection, and the label is soft and measured from the *actual* change; after the MOOD 2022 winner, content is
also pasted from other locations and subjects.

One example (:func:`make_example`) of a volume ``vol`` (D, H, W) in [0, 1], background 0:

1. A family is drawn uniformly from :attr:`VolumeTaskConfig.families` (:func:`family_sample`).
2. 1..``max_shapes`` regions are drawn, each an irregular smooth blob (:func:`random_shape`: a union of 1-3
   randomly oriented ellipsoids whose radius is modulated by smooth angular noise, never a sphere) centred on a
   voxel of the object (``vol > fg_threshold``), its size a fraction ``radius`` of the volume's edge.
3. Inside the blob's soft mask ``m`` the family computes changed content ``c`` (on the blob's bounding box only)
   and the region becomes ``(1 - m) vol + m c``, clipped to [0, 1]:

   - ``blend``: another subject's content (or this volume's, from a far location) at a different location,
     interpolated with a factor in [0.3, 1] (FPI-like), its intensity optionally matched or rescaled;
   - ``intensity``: an additive (+-[0.1, 0.7]) or multiplicative change, or a black hole; half darken;
   - ``texture``: added white or smoothed Gaussian noise (standard deviation in [0.03, 0.3]), or local blur;
   - ``translate``: the volume's own content from 0.5-2 radii away;
   - ``flip``: the region's content mirrored about its centre, or the content of the mirror-symmetric location
     across the volume's mid-plane (mirrored or not);
   - ``rotate``: the content rotated by 20-180 degrees about a random axis;
   - ``rescale``: the content zoomed by 0.5-0.8 or 1.25-2 about the centre;
   - ``warp``: a radial sink/source (a fold-free power map of the radius) or a smooth random displacement field,
     either fading to 0 at the blob's edge.
4. The label is ``m * clip(G_1(|out - vol|) / tau, 0, 1)`` (``G_1``: a Gaussian of ``label_sigma`` voxels), 0
   outside the blobs: a move over homogeneous tissue changes (and labels) almost nothing. An example whose label
   stays below ``min_label`` is redrawn (at most ``max_tries`` times; then a normal example is returned).

Nothing here uses the evaluation's sphere generators (:mod:`mood_detector.evaluation.outliers`): the shapes are
irregular and the changes are this module's own. NumPy/SciPy only, float32; work is confined to the blobs'
bounding boxes (plus a small margin), so one 128^3 example costs a few tens of milliseconds on one core.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy import ndimage

#: The task families, in a fixed order.
FAMILIES: tuple[str, ...] = ("blend", "intensity", "texture", "translate", "flip", "rotate", "rescale", "warp")

Box = tuple[slice, slice, slice]


@dataclass(frozen=True)
class VolumeTaskConfig:
    """Sampling parameters of the volumetric tasks (ranges are (low, high), drawn uniformly unless noted)."""

    families: tuple[str, ...] = FAMILIES      # which families to draw from (uniformly)
    radius: tuple[float, float] = (0.04, 0.16)  # shape size as a fraction of the volume edge (128 -> 5..20 voxels)
    max_shapes: int = 1                         # anomalies per example (1..max_shapes), all of one family
    p_normal: float = 0.1                       # probability an example is left unchanged (label all 0)
    tau: float = 0.05                           # soft label: change of tau (of the [0,1] range) or more -> 1
    label_sigma: float = 1.0                    # Gaussian smoothing (voxels) of |out - vol| before the label
    min_label: float = 0.2                      # an example whose label maximum is below this is redrawn
    max_tries: int = 6                          # draws per example before giving up (-> a normal example)
    fg_threshold: float = 0.05                  # centres are drawn among voxels with vol > fg_threshold
    irregularity: float = 0.25                  # amplitude of the shapes' angular radius modulation (0: ellipsoids)
    edge: float = 2.0                           # width (voxels) of the soft mask's transition 1 -> 0
    alpha: tuple[float, float] = (0.3, 1.0)     # blend: interpolation factor towards the foreign content
    p_match: float = 0.5                        # blend: probability the content's intensity is matched/rescaled
    delta: tuple[float, float] = (0.1, 0.7)     # intensity: magnitude of the additive change
    gain_dark: tuple[float, float] = (0.2, 0.7)    # intensity: multiplicative darkening
    gain_bright: tuple[float, float] = (1.4, 2.5)  # intensity: multiplicative brightening
    p_hole: float = 0.2                         # intensity: probability a darkening is a black hole (-> ~0)
    noise_sigma: tuple[float, float] = (0.03, 0.3)  # texture: standard deviation of the added noise
    blur_sigma: tuple[float, float] = (1.0, 3.0)    # texture: Gaussian blur (voxels) of the local-blur variant
    shift: tuple[float, float] = (0.5, 2.0)     # translate: offset in radii
    angle: tuple[float, float] = (20.0, 180.0)  # rotate: angle in degrees (either sense)
    zoom_in: tuple[float, float] = (1.25, 2.0)  # rescale: magnification factors
    zoom_out: tuple[float, float] = (0.5, 0.8)  # rescale: shrinking factors
    warp_power: tuple[float, float] = (1.3, 2.5)   # warp: exponent g of the radial map rho -> rho^g (or 1/g)
    warp_field: tuple[float, float] = (0.3, 0.6)   # warp: random-field displacement amplitude in radii

    def __post_init__(self) -> None:
        if not self.families or any(f not in FAMILIES for f in self.families):
            raise ValueError(f"families must be a non-empty subset of {FAMILIES}, got {self.families}")
        lo, hi = self.radius
        if not 0 < lo <= hi <= 0.5:
            raise ValueError(f"radius must satisfy 0 < low <= high <= 0.5, got {self.radius}")
        if self.max_shapes < 1 or self.max_tries < 1:
            raise ValueError("max_shapes and max_tries must be >= 1")
        for name in ("p_normal", "p_match", "p_hole"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {getattr(self, name)}")
        if self.tau <= 0 or self.label_sigma < 0 or self.edge <= 0 or not 0 <= self.irregularity < 0.6:
            raise ValueError("tau and edge must be > 0, label_sigma >= 0, irregularity in [0, 0.6)")
        for name in ("alpha", "delta", "gain_dark", "gain_bright", "noise_sigma", "blur_sigma", "shift", "angle",
                     "zoom_in", "zoom_out", "warp_power", "warp_field"):
            a, b = getattr(self, name)
            if not 0 <= a <= b:
                raise ValueError(f"{name} must satisfy 0 <= low <= high, got {(a, b)}")


@dataclass
class Region:
    """One anomaly: its bounding ``box`` (slices), soft ``mask`` (box-shaped float32), ``centre`` (voxel
    coordinates, float) and ``radius`` (voxels)."""

    box: Box
    mask: np.ndarray
    centre: np.ndarray
    radius: float


@dataclass
class VolumeExample:
    """A training example: ``image`` and ``label`` (D, H, W) float32 in [0, 1], the ``family`` ("normal" when
    unchanged) and the ``regions`` changed (empty when normal)."""

    image: np.ndarray
    label: np.ndarray
    family: str
    regions: list[Region] = field(default_factory=list)


def family_sample(cfg: VolumeTaskConfig, rng: np.random.Generator) -> str:
    """A family drawn uniformly from ``cfg.families``."""
    return cfg.families[int(rng.integers(len(cfg.families)))]


# ----------------------------------------------------------------------------------------------------- shapes


def _unit(rng: np.random.Generator, n: int | None = None) -> np.ndarray:
    """Random unit vector(s) in 3D, shape (3,) or (n, 3)."""
    v = rng.standard_normal(3 if n is None else (n, 3))
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """3x3 rotation matrix about unit ``axis`` by ``angle`` radians (Rodrigues)."""
    x, y, z = axis
    k = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random rotation matrix (from a random unit quaternion)."""
    w, x, y, z = _unit4(rng)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def _unit4(rng: np.random.Generator) -> np.ndarray:
    q = rng.standard_normal(4)
    return q / max(float(np.linalg.norm(q)), 1e-12)


def _grid(box: Box) -> list[np.ndarray]:
    """Open (broadcastable) float32 coordinate grids of ``box``."""
    return [np.arange(s.start, s.stop, dtype=np.float32).reshape([-1 if i == a else 1 for i in range(3)])
            for a, s in enumerate(box)]


def _clip_box(lo: np.ndarray, hi: np.ndarray, shape3d) -> Box:
    return tuple(slice(int(max(0, a)), int(min(n, b))) for a, b, n in zip(lo, hi, shape3d))


def random_shape(shape3d, centre, radius_vox, rng: np.random.Generator, *, irregularity: float = 0.25,
                 edge: float = 2.0) -> tuple[Box, np.ndarray]:
    """An irregular smooth blob around ``centre`` (voxel coordinates) of about ``radius_vox`` voxels: the union
    of 1-3 randomly oriented ellipsoids (the first centred, the others offset by 0.3-0.8 radii), each with its
    radius modulated by smooth angular noise of relative amplitude up to ``irregularity``.

    Returns the bounding box (slices, clipped to ``shape3d`` and trimmed to the mask's support) and the soft
    mask in [0, 1] (float32, box-shaped): 1 inside, 0 outside, a smoothstep over ``edge`` voxels across the
    (approximate) surface. The centre voxel is always inside (mask 1).
    """
    shape3d = tuple(int(s) for s in shape3d)
    c = np.asarray(centre, dtype=np.float64)
    r = max(float(radius_vox), 1.0)
    n_ell = int(rng.integers(1, 4))
    parts = []
    for k in range(n_ell):
        off = np.zeros(3) if k == 0 else _unit(rng) * r * rng.uniform(0.3, 0.8)
        axes = r * (1.0 if k == 0 else rng.uniform(0.5, 0.85)) * np.exp(rng.uniform(-0.25, 0.25, 3))
        rot = _random_rotation(rng)
        n_waves = 3
        amp = irregularity * rng.uniform(0.3, 1.0, n_waves) / n_waves
        dirs = _unit(rng, n_waves)
        freq = rng.uniform(1.0, 3.0, n_waves) * np.pi
        phase = rng.uniform(0, 2 * np.pi, n_waves)
        parts.append((c + off, axes, rot, amp, dirs, freq, phase))
    # per-ellipsoid extent along each world axis, inflated by the modulation and the soft edge
    lo_all, hi_all, boxes = [], [], []
    for cc, axes, rot, amp, *_ in parts:
        ext = np.sqrt(((rot * axes[None, :]) ** 2).sum(1)) * (1 + amp.sum()) + edge + 1
        lo, hi = np.floor(cc - ext), np.ceil(cc + ext) + 1
        boxes.append(_clip_box(lo, hi, shape3d))
        lo_all.append(lo)
        hi_all.append(hi)
    box = _clip_box(np.min(lo_all, 0), np.max(hi_all, 0), shape3d)
    mask = np.zeros(tuple(s.stop - s.start for s in box), np.float32)
    for (cc, axes, rot, amp, dirs, freq, phase), sub in zip(parts, boxes):
        if any(s.stop <= s.start for s in sub):
            continue
        g = _grid(sub)
        p = [g[i] - np.float32(cc[i]) for i in range(3)]
        # q = rot^T p / axes: coordinates in the ellipsoid's frame, normalised by its axes
        q = [(p[0] * np.float32(rot[0, i]) + p[1] * np.float32(rot[1, i]) + p[2] * np.float32(rot[2, i]))
             / np.float32(axes[i]) for i in range(3)]
        rho = np.sqrt(q[0] ** 2 + q[1] ** 2 + q[2] ** 2)
        inv = 1.0 / np.maximum(rho, np.float32(1e-6))
        bound = np.ones_like(rho)
        for a, d, f, ph in zip(amp, dirs, freq, phase):
            cos_t = (q[0] * np.float32(d[0]) + q[1] * np.float32(d[1]) + q[2] * np.float32(d[2])) * inv
            bound += np.float32(a) * np.cos(np.float32(f) * cos_t + np.float32(ph))
        # distance to the surface ~ (rho - bound) / |grad rho|, |grad rho| = |q / axes| / rho
        grad = np.sqrt((q[0] / np.float32(axes[0])) ** 2 + (q[1] / np.float32(axes[1])) ** 2
                       + (q[2] / np.float32(axes[2])) ** 2) * inv
        grad = np.maximum(grad, np.float32(1.0 / axes.max()))
        dist = (rho - bound) / grad
        t = np.clip(0.5 - dist / np.float32(edge), 0, 1)
        m = t * t * (3 - 2 * t)
        sl = tuple(slice(s.start - b.start, s.stop - b.start) for s, b in zip(sub, box))
        np.maximum(mask[sl], m, out=mask[sl])
    ci = tuple(int(np.clip(round(c[i]), box[i].start, box[i].stop - 1)) - box[i].start for i in range(3))
    mask[ci] = 1.0
    # trim to the support
    keep = []
    for a in range(3):
        nz = np.flatnonzero(mask.any(axis=tuple(i for i in range(3) if i != a)))
        keep.append(slice(int(nz[0]), int(nz[-1]) + 1))
    mask = np.ascontiguousarray(mask[tuple(keep)])
    box = tuple(slice(b.start + k.start, b.start + k.stop) for b, k in zip(box, keep))
    return box, mask


# ---------------------------------------------------------------------------------------------------- helpers


def _take(arr: np.ndarray, box: Box, offset=(0, 0, 0), flip_axes: tuple[int, ...] = (),
          flip_about: np.ndarray | None = None) -> np.ndarray:
    """``arr`` at integer positions ``box + offset`` (each axis in ``flip_axes`` mirrored: index ``i -> 2 *
    flip_about[a] - i`` before the offset); 0 outside ``arr``."""
    idx, valid = [], []
    for a, (s, n) in enumerate(zip(box, arr.shape)):
        i = np.arange(s.start, s.stop)
        if a in flip_axes:
            i = np.round(2 * flip_about[a]).astype(int) - i
        i = i + int(offset[a])
        valid.append((i >= 0) & (i < n))
        idx.append(np.clip(i, 0, n - 1))
    out = arr[np.ix_(*idx)]
    ok = valid[0][:, None, None] & valid[1][None, :, None] & valid[2][None, None, :]
    return out if ok.all() else np.where(ok, out, 0).astype(arr.dtype)


def _sample(arr: np.ndarray, coords: list[np.ndarray]) -> np.ndarray:
    """Linear interpolation of ``arr`` at (broadcast) voxel ``coords`` [z, y, x]; 0 outside."""
    full = np.broadcast_arrays(*coords)
    pts = np.stack([np.asarray(c, dtype=np.float32) for c in full])
    return ndimage.map_coordinates(arr, pts, order=1, mode="constant", cval=0.0, output=np.float32)


def _fg_point(vol: np.ndarray, rng: np.random.Generator, thr: float) -> np.ndarray:
    """A random voxel with ``vol > thr`` (rejection sampling, then an exhaustive draw); the volume's central
    half when there is none."""
    shape = np.array(vol.shape)
    for _ in range(64):
        p = rng.integers(0, shape)
        if vol[tuple(p)] > thr:
            return p
    fg = np.flatnonzero(vol > thr)
    if fg.size:
        return np.array(np.unravel_index(int(fg[rng.integers(fg.size)]), vol.shape))
    return rng.integers(shape // 4, 3 * shape // 4 + 1)


def _far_point(src: np.ndarray, centre: np.ndarray, min_dist: float, rng: np.random.Generator,
               thr: float) -> np.ndarray:
    """A foreground voxel of ``src`` at least ``min_dist`` from ``centre`` (the farthest of 16 draws if none)."""
    best, best_d = None, -1.0
    for _ in range(16):
        p = _fg_point(src, rng, thr)
        d = float(np.linalg.norm(p - centre))
        if d >= min_dist:
            return p
        if d > best_d:
            best, best_d = p, d
    return best


def _smooth_field(box: Box, centre: np.ndarray, radius: float, rng: np.random.Generator,
                  n_waves: int = 3) -> np.ndarray:
    """A smooth random field on ``box`` (sum of ``n_waves`` plane waves of wavelength 2-6 radii), about unit
    standard deviation."""
    g = _grid(box)
    f = np.zeros(tuple(s.stop - s.start for s in box), np.float32)
    for _ in range(n_waves):
        k = _unit(rng) * rng.uniform(1.0, 3.0) / radius
        ph = rng.uniform(0, 2 * np.pi)
        arg = sum(np.float32(k[i]) * (g[i] - np.float32(centre[i])) for i in range(3)) + np.float32(ph)
        f += np.cos(arg)
    return f * np.float32(np.sqrt(2.0 / n_waves))


# --------------------------------------------------------------------------------------------------- families

Family = Callable[[np.ndarray, "np.ndarray | None", Region, np.random.Generator, VolumeTaskConfig], np.ndarray]


def _blend(cur, other, reg, rng, cfg):
    src = other if other is not None else cur
    min_dist = (1.5 if other is not None else 3.0) * reg.radius
    c = np.round(reg.centre).astype(int)
    s = _far_point(src, c, min_dist, rng, cfg.fg_threshold)
    patch = _take(src, reg.box, offset=s - c)
    dst = cur[reg.box]
    if rng.random() < cfg.p_match:
        if rng.random() < 0.5:  # match the content's mean and spread (tissue voxels) to the destination's
            w_src = reg.mask * (patch > 0)
            w_dst = reg.mask * (dst > 0)
            if w_src.sum() > 1 and w_dst.sum() > 1:
                ms, md = (patch * w_src).sum() / w_src.sum(), (dst * w_dst).sum() / w_dst.sum()
                ss = np.sqrt((((patch - ms) ** 2) * w_src).sum() / w_src.sum()) + 1e-3
                sd = np.sqrt((((dst - md) ** 2) * w_dst).sum() / w_dst.sum()) + 1e-3
                patch = np.where(patch > 0, (patch - ms) * (sd / ss) + md, patch)
        else:  # a random gain and offset
            patch = patch * np.float32(np.exp(rng.uniform(-0.5, 0.5))) + np.float32(rng.uniform(-0.15, 0.15))
    alpha = np.float32(rng.uniform(*cfg.alpha))
    return (1 - alpha) * dst + alpha * patch


def _intensity(cur, other, reg, rng, cfg):
    dst = cur[reg.box]
    dark = rng.random() < 0.5
    u = rng.random()
    if dark and u < cfg.p_hole:  # a black hole: down to ~0
        return dst * np.float32(rng.uniform(0.0, 0.1))
    if u < 0.6:  # additive, smoothly modulated (+-25 %)
        d = rng.uniform(*cfg.delta) * (-1 if dark else 1)
        mod = 1 + 0.25 * np.clip(_smooth_field(reg.box, reg.centre, reg.radius, rng), -1, 1)
        return dst + np.float32(d) * mod * (dst > 0)  # tissue only: a lesion stops at the object's edge
    gain = rng.uniform(*(cfg.gain_dark if dark else cfg.gain_bright))
    return dst * np.float32(gain)


def _texture(cur, other, reg, rng, cfg):
    u = rng.random()
    if u < 0.3:  # local blur (computed with a margin so the box faces see their neighbours)
        sigma = rng.uniform(*cfg.blur_sigma)
        m = int(np.ceil(3 * sigma))
        big = _clip_box(np.array([s.start - m for s in reg.box]), np.array([s.stop + m for s in reg.box]),
                        cur.shape)
        blurred = ndimage.gaussian_filter(cur[big], sigma, mode="nearest")
        return blurred[tuple(slice(s.start - b.start, s.stop - b.start) for s, b in zip(reg.box, big))]
    dst = cur[reg.box]
    noise = rng.standard_normal(dst.shape).astype(np.float32)
    if u < 0.65:  # smoothed noise, rescaled to unit standard deviation
        noise = ndimage.gaussian_filter(noise, rng.uniform(0.7, 2.0))
        noise /= noise.std() + np.float32(1e-8)
    return dst + np.float32(rng.uniform(*cfg.noise_sigma)) * noise * (dst > 0)  # tissue only


def _translate(cur, other, reg, rng, cfg):
    if rng.random() < 0.4:  # along one axis (in-plane or through-plane)
        d = np.zeros(3)
        d[rng.integers(3)] = rng.choice([-1.0, 1.0])
    else:
        d = _unit(rng)
    off = np.round(d * rng.uniform(*cfg.shift) * reg.radius).astype(int)
    if not off.any():
        off[int(np.argmax(np.abs(d)))] = 1 if d[int(np.argmax(np.abs(d)))] >= 0 else -1
    return _take(cur, reg.box, offset=off)


def _flip(cur, other, reg, rng, cfg):
    axis = int(rng.integers(3))
    u = rng.random()
    if u < 0.5:  # the region's own content mirrored about its centre
        return _take(cur, reg.box, flip_axes=(axis,), flip_about=reg.centre)
    mid = (cur.shape[axis] - 1) / 2.0
    if u < 0.75:  # the mirror-symmetric location's content, mirrored (the volume reflected there)
        about = np.zeros(3)
        about[axis] = mid
        return _take(cur, reg.box, flip_axes=(axis,), flip_about=about)
    off = np.zeros(3, int)  # the mirror-symmetric location's content, not mirrored
    off[axis] = int(round(2 * (mid - reg.centre[axis])))
    return _take(cur, reg.box, offset=off)


def _rotate(cur, other, reg, rng, cfg):
    if rng.random() < 0.5:
        axis = np.eye(3)[rng.integers(3)]
    else:
        axis = _unit(rng)
    angle = np.deg2rad(rng.uniform(*cfg.angle)) * rng.choice([-1.0, 1.0])
    rot = _rotation(axis, angle)
    g = _grid(reg.box)
    p = [g[i] - np.float32(reg.centre[i]) for i in range(3)]
    coords = [np.float32(reg.centre[i]) + sum(np.float32(rot[i, j]) * p[j] for j in range(3)) for i in range(3)]
    return _sample(cur, coords)


def _rescale(cur, other, reg, rng, cfg):
    s = rng.uniform(*(cfg.zoom_in if rng.random() < 0.5 else cfg.zoom_out))
    s = s * np.exp(rng.uniform(-0.1, 0.1, 3))  # slightly anisotropic
    g = _grid(reg.box)
    coords = [np.float32(reg.centre[i]) + (g[i] - np.float32(reg.centre[i])) / np.float32(s[i]) for i in range(3)]
    return _sample(cur, coords)


def _warp(cur, other, reg, rng, cfg):
    g = _grid(reg.box)
    c = reg.centre + rng.uniform(-0.25, 0.25, 3) * reg.radius
    p = [g[i] - np.float32(c[i]) for i in range(3)]
    dist = np.sqrt(p[0] ** 2 + p[1] ** 2 + p[2] ** 2)
    # the displacement fades to 0 at the blob's edge (so its boundary, not a sphere, bounds the warp): a window
    # that is 1 deep inside the mask and 0 from its half-way contour outwards
    sigma = max(1.0, 0.25 * reg.radius)
    window = np.clip(2 * ndimage.gaussian_filter(reg.mask, sigma, mode="constant", truncate=2.5) - 1, 0, 1)
    if rng.random() < 0.6:
        # radial sink/source: a voxel at relative radius rho takes the content from radius rho^gamma (monotone,
        # never folding); gamma > 1 magnifies the centre (source), gamma < 1 shrinks it (sink)
        gamma = rng.uniform(*cfg.warp_power)
        if rng.random() < 0.5:
            gamma = 1.0 / gamma
        reach = np.float32(dist[reg.mask > 0].max() + 1.0)
        rho = np.minimum(dist / reach, np.float32(1))
        factor = np.power(np.maximum(rho, np.float32(1e-6)), np.float32(gamma - 1))
        factor = 1 + window * (factor - 1)
        coords = [np.float32(c[i]) + p[i] * factor for i in range(3)]
    else:
        # a smooth random displacement field of amplitude warp_field radii
        amp = np.float32(rng.uniform(*cfg.warp_field) * reg.radius)
        coords = [g[i] + amp * window * _smooth_field(reg.box, c, reg.radius, rng, 2) for i in range(3)]
    return _sample(cur, coords)


_FAMILY_FUNCS: dict[str, Family] = {"blend": _blend, "intensity": _intensity, "texture": _texture,
                                    "translate": _translate, "flip": _flip, "rotate": _rotate,
                                    "rescale": _rescale, "warp": _warp}


# ---------------------------------------------------------------------------------------------------- examples


def _label_into(label: np.ndarray, vol: np.ndarray, out: np.ndarray, reg: Region, cfg: VolumeTaskConfig) -> None:
    """label[box] = max(label[box], m * clip(G(|out - vol|) / tau, 0, 1)), the Gaussian computed on the box
    plus its truncation radius so it equals the whole volume's."""
    m = int(np.ceil(4 * cfg.label_sigma)) if cfg.label_sigma > 0 else 0
    big = _clip_box(np.array([s.start - m for s in reg.box]), np.array([s.stop + m for s in reg.box]), vol.shape)
    change = np.abs(out[big] - vol[big])
    if cfg.label_sigma > 0:
        change = ndimage.gaussian_filter(change, cfg.label_sigma, mode="nearest", truncate=4.0)
    change = change[tuple(slice(s.start - b.start, s.stop - b.start) for s, b in zip(reg.box, big))]
    lab = reg.mask * np.clip(change / np.float32(cfg.tau), 0, 1)
    np.maximum(label[reg.box], lab, out=label[reg.box])


def make_example_info(vol: np.ndarray, other: np.ndarray | None, rng: np.random.Generator,
                      cfg: VolumeTaskConfig = VolumeTaskConfig()) -> VolumeExample:
    """:func:`make_example` with the regions it changed (for tests and visualisation); the same draws."""
    vol = np.asarray(vol, dtype=np.float32)
    if vol.ndim != 3:
        raise ValueError(f"vol must be (D, H, W), got shape {vol.shape}")
    if other is not None:
        other = np.asarray(other, dtype=np.float32)
        if other.shape != vol.shape:
            raise ValueError(f"other must have vol's shape {vol.shape}, got {other.shape}")
    out = vol.copy(order="K")  # keeps the layout (NIfTI arrays are often Fortran-ordered): a plain copy
    label = np.zeros_like(vol)
    if rng.random() < cfg.p_normal:
        return VolumeExample(out, label, "normal")
    family = family_sample(cfg, rng)
    fn = _FAMILY_FUNCS[family]
    edge = min(vol.shape)
    for _ in range(cfg.max_tries):
        regions = []
        for _ in range(int(rng.integers(1, cfg.max_shapes + 1))):
            centre = _fg_point(vol, rng, cfg.fg_threshold).astype(np.float64)
            radius = float(rng.uniform(*cfg.radius) * edge)
            box, mask = random_shape(vol.shape, centre, radius, rng, irregularity=cfg.irregularity, edge=cfg.edge)
            reg = Region(box, mask, centre, max(radius, 1.0))
            changed = fn(out, other, reg, rng, cfg)
            blended = (1 - mask) * out[box] + mask * changed
            out[box] = np.clip(blended, 0, 1)
            regions.append(reg)
        for reg in regions:
            _label_into(label, vol, out, reg, cfg)
        if max(float(label[reg.box].max()) for reg in regions) >= cfg.min_label:
            return VolumeExample(out, label, family, regions)
        for reg in regions:  # too subtle: undo and redraw
            out[reg.box] = vol[reg.box]
            label[reg.box] = 0
    return VolumeExample(out, label, "normal")


def make_example(vol: np.ndarray, other: np.ndarray | None, rng: np.random.Generator,
                 cfg: VolumeTaskConfig = VolumeTaskConfig()) -> tuple[np.ndarray, np.ndarray, str]:
    """One training example: (anomalous volume, soft label in [0, 1], family name), both arrays float32 of
    ``vol``'s shape. ``other`` is another subject's volume of the same shape (for ``blend``; if None, blend
    from a far location of ``vol``). Centres are drawn inside the object (``vol > cfg.fg_threshold``). The
    family is "normal" (volume unchanged, label 0) with probability ``cfg.p_normal`` or when no draw of
    ``cfg.max_tries`` gave a visible change."""
    ex = make_example_info(vol, other, rng, cfg)
    return ex.image, ex.label, ex.family
