"""A natural-synthetic-anomaly task (after Schlueter et al., "Natural Synthetic Anomalies for Self-Supervised
Anomaly Detection and Localization", ECCV 2022), made for 3D volumes sliced in 2D.

For a destination slice A and a source slice B (another subject):

1. 1..``max_patches`` patches are drawn, each a box of random height and width (aspect ratio varies) centred
   on a foreground pixel of A, with a smooth irregular shape inside it (an ellipse whose radius is perturbed
   by smoothed noise).
2. The content comes from B **at another location** (a box centred on a random foreground pixel of B), resized
   by a random factor and possibly mirrored, then optionally changed in intensity (gain and offset) and in
   texture (added smoothed Gaussian noise).
3. It is blended into A either in the gradient domain (Poisson image editing: inside the shape A's gradients
   are replaced by the content's, the box border stays A's; solved exactly with a type-I discrete sine
   transform) or pasted with a feathered shape.
4. The label measures how much each pixel changed: ``sigmoid(k (|A' - A|_s - x0))`` inside the box (``|.|_s``:
   the absolute change smoothed by a Gaussian of ``label_sigma`` pixels), 0 elsewhere (NSA's logistic label).

Anomalies stay inside the object: A's background (value <= 0) is never changed. Every choice is a named
field of :class:`NSAConfig`. The whole task runs in NumPy/SciPy on the CPU (one call per slice pair batch).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import fft, ndimage


@dataclass(frozen=True)
class NSAConfig:
    """Sampling parameters of the task (defaults: the brain's; ``label_x0``/``label_k`` are per kind).

    Attributes:
        max_patches: patches per example, uniform in 1..max_patches.
        half_width: (low, high) half height / half width of a box as a fraction of the slice size, each drawn
            independently (so boxes are not square).
        scale: (low, high) of the source box size relative to the destination box (content resized by it).
        p_flip: probability that the content is mirrored (left-right).
        p_intensity: probability of an intensity change of the content: gain (log-uniform in
            1/gain_max..gain_max) and offset (uniform in +-offset_max).
        gain_max, offset_max: ranges of that change.
        p_texture: probability of added texture: Gaussian noise of standard deviation U(0.02, texture_max),
            smoothed by a Gaussian of U(0, 1.5) pixels (then rescaled to that standard deviation).
        texture_max: upper end of the texture's standard deviation.
        p_poisson: probability of gradient-domain (Poisson) blending; otherwise a feathered paste.
        shape_noise: how irregular the shapes are (amplitude of the radius perturbation; 0 = ellipses).
        label_x0, label_k: the logistic label's midpoint (an absolute intensity change in [0, 1] units) and
            slope.
        label_sigma: smoothing (pixels) of the absolute change before the logistic.
    """

    max_patches: int = 2
    half_width: tuple[float, float] = (0.04, 0.20)
    scale: tuple[float, float] = (0.75, 1.33)
    p_flip: float = 0.5
    p_intensity: float = 0.5
    gain_max: float = 2.0
    offset_max: float = 0.3
    p_texture: float = 0.3
    texture_max: float = 0.4
    p_poisson: float = 0.5
    shape_noise: float = 0.35
    label_x0: float = 0.04
    label_k: float = 100.0
    label_sigma: float = 1.0

    def __post_init__(self) -> None:
        if self.max_patches < 1:
            raise ValueError(f"max_patches must be >= 1, got {self.max_patches}")
        lo, hi = self.half_width
        if not 0 < lo <= hi <= 0.5:
            raise ValueError(f"half_width must satisfy 0 < low <= high <= 0.5, got {self.half_width}")
        if not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"scale must satisfy 0 < low <= high, got {self.scale}")
        for name in ("p_flip", "p_intensity", "p_texture", "p_poisson"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {getattr(self, name)}")
        if self.gain_max < 1 or self.offset_max < 0 or self.texture_max < 0.02 or self.shape_noise < 0:
            raise ValueError("gain_max must be >= 1, offset_max and shape_noise >= 0, texture_max >= 0.02")
        if self.label_k <= 0 or self.label_sigma < 0:
            raise ValueError("label_k must be > 0 and label_sigma >= 0")


@dataclass
class NSABatch:
    """``images`` (M, H, W) float32 in [0, 1] and ``labels`` (M, H, W) float32 in [0, 1]."""

    images: np.ndarray
    labels: np.ndarray


def poisson_blend(dst: np.ndarray, src: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Gradient-domain blend of ``src`` into ``dst`` (same 2D shape): the result has ``src``'s gradients where
    ``mask`` (weights in [0, 1]) is 1, ``dst``'s where it is 0, and equals ``dst`` on the border.

    The result is ``dst + v`` with ``lap(v) = div(m grad(src - dst))`` and ``v = 0`` on the border (5-point
    Laplacian, edge weights the mean of their two pixels' mask), solved exactly by a type-I DST; no
    iteration, so its cost is two FFTs of the box.
    """
    h, w = dst.shape
    if h < 3 or w < 3:
        return dst.copy()
    d = (src - dst).astype(np.float64)
    m = mask.astype(np.float64)
    gx = (d[:, 1:] - d[:, :-1]) * 0.5 * (m[:, 1:] + m[:, :-1])    # (h, w-1): edge (i, j)-(i, j+1)
    gy = (d[1:, :] - d[:-1, :]) * 0.5 * (m[1:, :] + m[:-1, :])    # (h-1, w)
    div = (gx[1:-1, 1:] - gx[1:-1, :-1]) + (gy[1:, 1:-1] - gy[:-1, 1:-1])  # interior (h-2, w-2)
    p = np.arange(1, h - 1)[:, None]
    q = np.arange(1, w - 1)[None, :]
    lam = (2 * np.cos(np.pi * p / (h - 1)) - 2) + (2 * np.cos(np.pi * q / (w - 1)) - 2)
    v = np.zeros((h, w))
    v[1:-1, 1:-1] = fft.idstn(fft.dstn(div, type=1) / lam, type=1)
    return (dst + v).astype(dst.dtype)


def irregular_shape(h: int, w: int, rng: np.random.Generator, noise: float) -> np.ndarray:
    """A smooth irregular blob filling most of an ``h`` x ``w`` box (float 0/1)."""
    yy = (np.arange(h) + 0.5) / h * 2 - 1
    xx = (np.arange(w) + 0.5) / w * 2 - 1
    r = np.sqrt(yy[:, None] ** 2 + xx[None, :] ** 2)
    if noise > 0:
        field = ndimage.gaussian_filter(rng.standard_normal((h, w)), sigma=max(1.0, min(h, w) / 6), mode="wrap")
        field /= field.std() + 1e-8
        r = r + noise * field
    shape = (r < 0.9).astype(np.float32)
    if not shape.any():
        shape[h // 2, w // 2] = 1.0
    return shape


def _fg_point(img: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    """A random foreground (> 0) pixel of ``img``, or a random pixel of the central half when there is none."""
    fg = np.flatnonzero(img > 0)
    h, w = img.shape
    if fg.size == 0:
        return int(rng.integers(h // 4, 3 * h // 4 + 1)), int(rng.integers(w // 4, 3 * w // 4 + 1))
    k = int(fg[rng.integers(fg.size)])
    return k // w, k % w


def _box(centre: tuple[int, int], hh: int, hw: int, h: int, w: int) -> tuple[int, int, int, int]:
    r0, c0 = max(0, centre[0] - hh), max(0, centre[1] - hw)
    return r0, min(h, centre[0] + hh + 1), c0, min(w, centre[1] + hw + 1)


def _content(b: np.ndarray, bh: int, bw: int, cfg: NSAConfig, rng: np.random.Generator) -> np.ndarray:
    """A ``bh`` x ``bw`` patch of ``b`` from a random foreground location, resized, flipped and changed."""
    h, w = b.shape
    s = rng.uniform(*cfg.scale)
    sh, sw = max(2, min(h, round(bh * s))), max(2, min(w, round(bw * s)))
    cr, cc = _fg_point(b, rng)
    r0 = int(np.clip(cr - sh // 2, 0, h - sh))
    c0 = int(np.clip(cc - sw // 2, 0, w - sw))
    patch = b[r0:r0 + sh, c0:c0 + sw].astype(np.float32)
    if (sh, sw) != (bh, bw):
        patch = ndimage.zoom(patch, (bh / sh, bw / sw), order=1, grid_mode=True, mode="nearest")[:bh, :bw]
        if patch.shape != (bh, bw):  # zoom rounding: pad with edge values
            patch = np.pad(patch, ((0, bh - patch.shape[0]), (0, bw - patch.shape[1])), mode="edge")
    if rng.random() < cfg.p_flip:
        patch = patch[:, ::-1]
    if rng.random() < cfg.p_intensity:
        gain = float(np.exp(rng.uniform(-np.log(cfg.gain_max), np.log(cfg.gain_max))))
        patch = patch * gain + rng.uniform(-cfg.offset_max, cfg.offset_max)
    if rng.random() < cfg.p_texture:
        sigma = rng.uniform(0.02, cfg.texture_max)
        noise = rng.standard_normal((bh, bw))
        smooth = rng.uniform(0.0, 1.5)
        if smooth > 0.3:
            noise = ndimage.gaussian_filter(noise, smooth)
            noise /= noise.std() + 1e-8
        patch = patch + sigma * noise
    return np.clip(patch, 0.0, 1.0).astype(np.float32)


def nsa_example(a: np.ndarray, b: np.ndarray, cfg: NSAConfig, rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray]:
    """One example: slice ``a`` (H, W) with patches whose content comes from ``b``; returns (image, label)."""
    h, w = a.shape
    out = a.astype(np.float32).copy()
    box_mask = np.zeros((h, w), dtype=bool)
    size = min(h, w)
    for _ in range(int(rng.integers(1, cfg.max_patches + 1))):
        hh = max(1, int(rng.uniform(*cfg.half_width) * size))
        hw = max(1, int(rng.uniform(*cfg.half_width) * size))
        r0, r1, c0, c1 = _box(_fg_point(a, rng), hh, hw, h, w)
        bh, bw = r1 - r0, c1 - c0
        if bh < 3 or bw < 3:
            continue
        dst = out[r0:r1, c0:c1]
        fg = a[r0:r1, c0:c1] > 0
        shape = irregular_shape(bh, bw, rng, cfg.shape_noise) * fg
        content = _content(b, bh, bw, cfg, rng)
        if rng.random() < cfg.p_poisson:
            blended = poisson_blend(dst, content, shape)
        else:
            soft = ndimage.gaussian_filter(shape, 1.0) * fg
            blended = dst * (1 - soft) + content * soft
        out[r0:r1, c0:c1] = np.where(fg, np.clip(blended, 0.0, 1.0), dst)
        box_mask[r0:r1, c0:c1] = True
    change = np.abs(out - a.astype(np.float32))
    if cfg.label_sigma > 0:
        change = ndimage.gaussian_filter(change, cfg.label_sigma)
    label = 1.0 / (1.0 + np.exp(-cfg.label_k * (change - cfg.label_x0)))
    label = np.where(box_mask & (change > 0), label, 0.0).astype(np.float32)
    return out, label


def nsa_pair(a: np.ndarray, b: np.ndarray, cfg: NSAConfig, rng: np.random.Generator) -> NSABatch:
    """Examples from paired slice stacks ``a`` and ``b`` (N, H, W): the first N are A with content from B, the
    next N are B with content from A (both directions, like the FPI task)."""
    if a.shape != b.shape or a.ndim != 3:
        raise ValueError(f"a and b must both be (N, H, W); got {a.shape} and {b.shape}")
    images, labels = [], []
    for dst_stack, src_stack in ((a, b), (b, a)):
        for i in range(len(dst_stack)):
            x, y = nsa_example(dst_stack[i], src_stack[i], cfg, rng)
            images.append(x)
            labels.append(y)
    return NSABatch(np.stack(images), np.stack(labels))
