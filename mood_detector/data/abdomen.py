"""A procedural CT-like abdominal phantom (generated data for exercising the pipeline, *not* real anatomy).

Each subject is painted from simple shapes in a normalised coordinate frame (x = patient's right, y =
anterior, z = superior; [-1, 1] covers the field of view of 420 mm):

* body outline: a super-ellipse cross-section (flatter posteriorly) whose half-axes vary smoothly along z,
  with skin, subcutaneous fat (subject-dependent thickness) and an abdominal-wall muscle layer; visceral fat
  inside;
* organs (super-quadrics / tapered capsules): liver, spleen, stomach with an air-fluid level, pancreas,
  gallbladder, kidneys (cortex, medulla, sinus fat), aorta with iliac bifurcation, inferior vena cava, psoas
  and paraspinal muscles, lumbar vertebrae (cortical shell, cancellous body, discs, neural arch, spinal canal,
  spinous and transverse processes), colon and small-bowel loops (random walks of capsules: wall, fluid and
  gas pockets floating anteriorly);
* per-subject variation: body size and shape, organ positions, sizes, rotations and super-quadric exponents,
  bowel layout, tissue contrast, noise level, and a smooth random deformation of the whole frame.

Values are CT numbers (HU-like) mapped linearly from [-1000, 1000] to [0, 1] and clipped; the outside of the
body is exactly 0. The volume is built in slabs along the cranio-caudal array axis (axis 1, the ``abdom``
kind's slice axis, so the 2D network sees axial sections); the deformation is a tensor product of Gaussian
bumps on a coarse grid, evaluated per slab with three small matrix products, so a 512^3 subject needs the
float32 output plus slab-sized temporaries (no full-size coordinate or displacement arrays).

Array axes: 0 = right-left (x), 1 = inferior-superior (z), 2 = posterior-anterior (y); the affine maps them
to RAS world coordinates in mm.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from mood_detector.io.nifti import write_volume

log = logging.getLogger(__name__)

FOV_MM = 420.0
HU_RANGE = (-1000.0, 1000.0)  # mapped linearly to [0, 1]
AIR = -1000.0


@dataclass(frozen=True)
class AbdomenVariation:
    """Ranges of the per-subject variation (uniform unless stated).

    Attributes:
        body_scale: scale of the body cross-section.
        organ_shift: standard deviation of organ centre offsets (normalised units; 1 = 210 mm).
        organ_scale: per-axis organ size factor.
        organ_rot_deg: largest in-plane organ rotation.
        deform_grid: coarse grid points per axis of the smooth deformation.
        deform_amp: standard deviation of the deformation coefficients (normalised units).
        fat: subcutaneous fat thickness (fraction of the body half-axis).
        noise_hu: standard deviation range of the image noise (HU).
        contrast_hu: standard deviation of per-tissue HU offsets (contrast timing).
        small_bowel_loops: number of small-bowel random walks.
        slab_voxels: voxels per processing slab (bounds the temporaries).
        tissue_hu: per-tissue HU range for random tissue values (:mod:`.abdomen_random`), or None.
    """

    body_scale: tuple[float, float] = (0.88, 1.08)
    organ_shift: float = 0.025
    organ_scale: tuple[float, float] = (0.85, 1.15)
    organ_rot_deg: float = 12.0
    deform_grid: int = 5
    deform_amp: float = 0.02
    fat: tuple[float, float] = (0.04, 0.14)
    noise_hu: tuple[float, float] = (8.0, 18.0)
    contrast_hu: float = 12.0
    small_bowel_loops: tuple[int, int] = (7, 11)
    slab_voxels: int = 1 << 22
    #: tissue name -> (low, high) HU range drawn uniformly per subject; None = the fixed values + contrast_hu
    tissue_hu: Callable[[str], tuple[float, float]] | None = None


def _pow(t: np.ndarray, p: float) -> np.ndarray:
    """``t ** p`` for t >= 0, with cheap special cases for p in {2, 2.5, 3}."""
    if p == 2.0:
        return t * t
    if p == 2.5:
        return t * t * np.sqrt(t)
    if p == 3.0:
        return t * t * t
    return t**p


# --- shapes: each gives a normalised "radius" field f (f <= 1 inside) on the deformed coordinates ---------
class Shape:
    """A structure painted as nested layers ``(f_max, HU)`` (outermost first) where ``f <= f_max``."""

    lo: np.ndarray
    hi: np.ndarray
    layers: list[tuple[float, float]]

    def field(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def paint(self, hu: np.ndarray, x: np.ndarray, y: np.ndarray, z: np.ndarray, allowed: np.ndarray) -> None:
        f = self.field(x, y, z)
        for fmax, value in self.layers:
            hu[(f <= fmax) & allowed] = value


class Superquadric(Shape):
    """|l_x/s_x|^p + |l_y/s_y|^p + |l_z/s_z|^p <= 1 with l = R^T (q - c)."""

    def __init__(self, centre: Sequence[float], semi: Sequence[float], rot: np.ndarray, p: float,
                 layers: list[tuple[float, float]]) -> None:
        self.c = np.asarray(centre, dtype=np.float32)
        self.s = np.asarray(semi, dtype=np.float32)
        self.r = np.asarray(rot, dtype=np.float32)
        self.p = float(p)
        reach = np.abs(self.r) @ self.s  # axis-aligned bound of the rotated box |l_a| <= s_a
        self.lo, self.hi = self.c - reach, self.c + reach
        self.layers = layers

    def field(self, x, y, z):
        d = (x - self.c[0], y - self.c[1], z - self.c[2])
        acc = None
        for a in range(3):
            la = (self.r[0, a] * d[0] + self.r[1, a] * d[1] + self.r[2, a] * d[2]) / self.s[a]
            term = _pow(np.abs(la), self.p)
            acc = term if acc is None else acc + term
        return acc

    def paint(self, hu, x, y, z, allowed):
        s = self.field(x, y, z)  # sum of powers: f <= fmax  <=>  s <= fmax ** p
        for fmax, value in self.layers:
            hu[(s <= fmax**self.p) & allowed] = value


class Capsule(Shape):
    """Tapered capsule around the segment p0-p1 (radius r0 at p0 to r1 at p1): f = distance / radius."""

    def __init__(self, p0: Sequence[float], p1: Sequence[float], r0: float, r1: float,
                 layers: list[tuple[float, float]]) -> None:
        self.p0 = np.asarray(p0, dtype=np.float32)
        self.p1 = np.asarray(p1, dtype=np.float32)
        self.r0, self.r1 = float(r0), float(r1)
        rmax = max(self.r0, self.r1)
        self.lo = np.minimum(self.p0, self.p1) - rmax
        self.hi = np.maximum(self.p0, self.p1) + rmax
        self.layers = layers
        self.d = self.p1 - self.p0
        self.dd = max(float(self.d @ self.d), 1e-12)

    def axis(self, x, y, z):
        """Parameter t in [0, 1] of the nearest axis point, and the squared distance to it."""
        t = ((x - self.p0[0]) * self.d[0] + (y - self.p0[1]) * self.d[1] + (z - self.p0[2]) * self.d[2]) / self.dd
        np.clip(t, 0.0, 1.0, out=t)
        dist2 = ((x - self.p0[0] - t * self.d[0]) ** 2 + (y - self.p0[1] - t * self.d[1]) ** 2
                 + (z - self.p0[2] - t * self.d[2]) ** 2)
        return t, dist2

    def field(self, x, y, z):
        t, dist2 = self.axis(x, y, z)
        return np.sqrt(dist2) / (self.r0 + t * (self.r1 - self.r0))


class GasCapsule(Capsule):
    """A bowel segment: wall, fluid lumen and a gas pocket above an air-fluid level (gas floats anteriorly,
    +y, in a supine patient)."""

    def __init__(self, p0, p1, r, wall_hu: float, fluid_hu: float, lumen: float, gas_level: float) -> None:
        super().__init__(p0, p1, r, r, [(1.0, wall_hu), (lumen, fluid_hu)])
        self.lumen, self.gas_level = lumen, gas_level

    def paint(self, hu, x, y, z, allowed):
        t, dist2 = self.axis(x, y, z)
        f = np.sqrt(dist2) / self.r0
        hu[(f <= 1.0) & allowed] = self.layers[0][1]
        lumen = (f <= self.lumen) & allowed
        hu[lumen] = self.layers[1][1]
        if self.gas_level < 1.0:
            axis_y = self.p0[1] + t * self.d[1]
            hu[lumen & ((y - axis_y) > self.gas_level * self.lumen * self.r0)] = AIR


class Spine(Shape):
    """Lumbar column along z: vertebral bodies (cortical shell + cancellous bone) separated by discs, spinal
    canal, neural arch, spinous and transverse processes at vertebral (not disc) levels."""

    def __init__(self, cx: float, cy: float, rx: float, ry: float, period: float, phase: float,
                 hu: dict[str, float]) -> None:
        self.cx, self.cy, self.rx, self.ry = cx, cy, rx, ry
        self.period, self.phase, self.hu = period, phase, hu
        self.lo = np.array([cx - 0.25, cy - 0.4, -2.0], dtype=np.float32)
        self.hi = np.array([cx + 0.25, cy + ry + 0.02, 2.0], dtype=np.float32)
        self.layers = []

    def paint(self, hu, x, y, z, allowed):
        dx, dy = x - self.cx, y - self.cy
        body = (np.abs(dx / self.rx) ** 2.5 + np.abs(dy / self.ry) ** 2.5) ** 0.4
        ph = np.mod(z - self.phase, self.period) / self.period  # 0..1 within one vertebra + disc
        disc = ph < 0.22
        hu[(body <= 1.0) & disc & allowed] = self.hu["disc"]
        hu[(body <= 1.0) & ~disc & allowed] = self.hu["cortical"]
        hu[(body <= 0.86) & ~disc & allowed] = self.hu["cancellous"]
        level = (ph > 0.35) & (ph < 0.9)
        ccy = self.cy - self.ry - 0.055  # spinal canal centre
        rc = np.sqrt(dx**2 + (y - ccy) ** 2)
        hu[(rc <= 0.085) & (rc > 0.05) & (y < self.cy - self.ry * 0.6) & allowed] = self.hu["arch"]
        sp = Capsule((self.cx, ccy - 0.07, 0), (self.cx, ccy - 0.2, 0), 0.022, 0.018, [])
        for side in (-1.0, 1.0):
            tp = Capsule((self.cx + side * 0.06, ccy + 0.01, 0), (self.cx + side * 0.17, ccy + 0.03, 0), 0.02,
                         0.014, [])
            _, d2 = tp.axis(x, y, np.zeros_like(z))
            hu[(np.sqrt(d2) <= 0.02) & level & allowed] = self.hu["arch"]
        _, d2 = sp.axis(x, y, np.zeros_like(z))
        hu[(np.sqrt(d2) <= 0.022) & level & allowed] = self.hu["arch"]
        hu[(rc <= 0.05) & allowed] = self.hu["csf"]


# --- the subject ------------------------------------------------------------------------------------------
def _rot_z(deg: float) -> np.ndarray:
    a = math.radians(deg)
    return np.array([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])


@dataclass
class Body:
    """Body outline parameters: centre (bx, by), half-axes a (x), b_ant / b_post (y), exponent p, the z
    profile coefficients, and layer thicknesses in units of the outline's normalised radius."""

    bx: float
    by: float
    a: float
    b_ant: float
    b_post: float
    p: float
    za: tuple[float, float]
    skin: float
    fat: float
    muscle: float

    @property
    def inner(self) -> float:
        return 1.0 - self.skin - self.fat - self.muscle

    def radius_pow(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """The outline's normalised radius to the power p (compare with ``threshold ** p``)."""
        prof = 1.0 + self.za[0] * z + self.za[1] * z * z
        b = np.where(y > self.by, np.float32(self.b_ant), np.float32(self.b_post)) * prof
        return _pow(np.abs((x - self.bx) / (self.a * prof)), self.p) + _pow(np.abs((y - self.by) / b), self.p)


@dataclass
class Subject:
    """Everything random about one subject."""

    body: Body
    shapes: list[Shape]
    tissue: dict[str, float]
    noise: float
    deform: np.ndarray  # (3, G, G, G) coefficients, for (x, y, z)


def make_subject(rng: np.random.Generator, var: AbdomenVariation = AbdomenVariation()) -> Subject:
    """Draw one subject's anatomy (no voxels yet)."""
    u = rng.uniform
    jit = lambda: rng.normal(0.0, var.organ_shift, 3)  # noqa: E731
    sc = lambda: u(*var.organ_scale, 3)  # noqa: E731
    rot = lambda: _rot_z(u(-var.organ_rot_deg, var.organ_rot_deg))  # noqa: E731
    base = {"fat": -95, "skin": 30, "muscle": 50, "liver": 100, "spleen": 110, "kidney_cortex": 180,
            "kidney_medulla": 120, "sinus_fat": -80, "aorta": 230, "ivc": 130, "pancreas": 90, "gallbladder": 10,
            "bowel_wall": 45, "bowel_fluid": 15, "colon_content": 0, "stomach_wall": 50, "stomach_fluid": 20,
            "disc": 90, "cortical": 950, "cancellous": 260, "arch": 650, "csf": 15}
    if var.tissue_hu is not None:  # domain randomisation: every tissue anywhere in its CT class's range
        tissue = {k: float(rng.uniform(*var.tissue_hu(k))) for k in base}
    else:
        tissue = {k: float(v + (rng.normal(0.0, var.contrast_hu) if k not in ("cortical",) else rng.normal(0, 40)))
                  for k, v in base.items()}
    s = u(*var.body_scale)
    body = Body(bx=float(rng.normal(0, 0.02)), by=float(-0.05 + rng.normal(0, 0.02)), a=0.85 * s * u(0.95, 1.05),
                b_ant=0.62 * s * u(0.9, 1.1), b_post=0.72 * s * u(0.95, 1.05), p=float(rng.choice([2.0, 2.5, 3.0])),
                za=(float(u(-0.06, 0.06)), float(u(-0.06, 0.04))), skin=0.012, fat=float(u(*var.fat)),
                muscle=float(u(0.035, 0.055)))
    T = tissue
    shapes: list[Shape] = []
    # bowel first: solid organs painted later cover it
    colon_r = u(0.055, 0.075)
    cz = 0.2 + rng.normal(0, 0.04)
    colon_pts = [(0.48, -0.05, -0.75), (0.5, 0.0, cz - 0.05), (0.3, 0.28, cz), (-0.3, 0.28, cz + 0.05),
                 (-0.5, 0.0, cz + 0.1), (-0.48, -0.05, -0.45), (-0.2, 0.05, -0.8)]
    colon_pts = [np.asarray(p) + jit() for p in colon_pts]
    for p0, p1 in zip(colon_pts[:-1], colon_pts[1:]):
        shapes.append(GasCapsule(p0, p1, colon_r, T["bowel_wall"], T["colon_content"], 0.85, float(u(-0.5, 0.5))))
    for _ in range(int(rng.integers(var.small_bowel_loops[0], var.small_bowel_loops[1] + 1))):
        p = np.array([u(-0.4, 0.4), u(-0.1, 0.35), u(-0.8, 0.1)])
        r = u(0.045, 0.065)
        for _ in range(int(rng.integers(6, 12))):
            step = rng.normal(0, 1, 3)
            step = step / max(np.linalg.norm(step), 1e-6) * u(0.08, 0.14)
            q = np.clip(p + step, [-0.45, -0.15, -0.85], [0.45, 0.4, 0.15])
            level = float(u(0.0, 1.0)) if rng.random() < 0.4 else 1.0  # 40% of segments hold gas
            shapes.append(GasCapsule(p, q, r, T["bowel_wall"], T["bowel_fluid"], 0.7, level))
            p = q
    shapes.append(GasCapsule(np.array([-0.2, 0.12, 0.58]) + jit(), np.array([-0.3, 0.18, 0.72]) + jit(),
                             u(0.11, 0.15), T["stomach_wall"], T["stomach_fluid"], 0.88, float(u(0.1, 0.6))))
    # muscles
    for side in (-1.0, 1.0):
        shapes.append(Superquadric(np.array([side * 0.17, -0.5, 0.0]) + jit(), [0.12, 0.085, 1.6], rot(),
                                   2.5, [(1.0, T["muscle"])]))
        shapes.append(Capsule(np.array([side * 0.1, -0.3, 0.3]) + jit(), np.array([side * 0.25, -0.17, -1.05]) + jit(),
                              0.02, u(0.065, 0.085), [(1.0, T["muscle"])]))
    # spine and vessels
    shapes.append(Spine(float(rng.normal(0, 0.01)), -0.3 + float(rng.normal(0, 0.015)), 0.1 * u(0.9, 1.1),
                        0.085 * u(0.9, 1.1), float(u(0.16, 0.19)), float(u(0, 0.2)),
                        {k: T[k] for k in ("disc", "cortical", "cancellous", "arch", "csf")}))
    bif = np.array([-0.03, -0.15, -0.5 + rng.normal(0, 0.05)])
    ra = u(0.04, 0.05)
    shapes.append(Capsule(bif, np.array([-0.05, -0.18, 1.3]) + jit(), ra, ra, [(1.0, T["aorta"])]))
    for side in (-1.0, 1.0):
        shapes.append(Capsule(bif, np.array([side * 0.28, -0.08, -1.2]) + jit(), ra * 0.75, ra * 0.7,
                              [(1.0, T["aorta"])]))
    shapes.append(Superquadric(np.array([0.11, -0.17, 0.3]) + jit(), [0.05, 0.035, 1.1], rot(), 2.0,
                               [(1.0, T["ivc"])]))
    # retroperitoneal and solid organs
    for side, z in ((1.0, 0.08), (-1.0, 0.16)):
        semi = np.array([0.085, 0.07, 0.17]) * sc()
        shapes.append(Superquadric(np.array([side * 0.3, -0.3, z]) + jit(), semi, _rot_z(side * u(10, 30)),
                                   2.0, [(1.0, T["kidney_cortex"]), (0.7, T["kidney_medulla"]),
                                                 (0.32, T["sinus_fat"])]))
    shapes.append(Superquadric(np.array([-0.05, -0.05, 0.33]) + jit(), np.array([0.28, 0.045, 0.05]) * sc(),
                               _rot_z(u(-20, 5)), 2.0, [(1.0, T["pancreas"])]))
    shapes.append(Superquadric(np.array([-0.5, -0.22, 0.58]) + jit(), np.array([0.1, 0.2, 0.16]) * sc(), rot(),
                               float(rng.choice([2.0, 2.5])), [(1.0, T["spleen"])]))
    shapes.append(Superquadric(np.array([0.36, 0.02, 0.55]) + jit(), np.array([0.32, 0.42, 0.3]) * sc(), rot(),
                               float(rng.choice([2.0, 2.5, 3.0])), [(1.0, T["liver"])]))
    shapes.append(Superquadric(np.array([0.3, 0.25, 0.32]) + jit(), np.array([0.05, 0.05, 0.1]) * sc(), rot(),
                               2.0, [(1.0, T["gallbladder"])]))
    g = var.deform_grid
    deform = rng.normal(0.0, var.deform_amp, (3, g, g, g)).astype(np.float32)
    return Subject(body, shapes, tissue, float(u(*var.noise_hu)), deform)


def _basis(coords: np.ndarray, g: int) -> np.ndarray:
    """Gaussian bumps on ``g`` knots over [-1, 1] evaluated at ``coords``: (len(coords), g), each row scaled to
    unit L2 norm, so the tensor-product displacement has standard deviation ``deform_amp`` everywhere."""
    knots = np.linspace(-1.0, 1.0, g)
    w = 2.0 / max(g - 1, 1)
    b = np.exp(-0.5 * ((coords[:, None] - knots[None, :]) / w) ** 2)
    return (b / np.sqrt((b * b).sum(axis=1, keepdims=True))).astype(np.float32)


def _index_range(lo: float, hi: float, size: int) -> tuple[int, int]:
    """Voxel indices whose centres (idx + 0.5) / size * 2 - 1 lie in [lo, hi] (clipped to the array)."""
    a = int(math.floor((lo + 1.0) / 2.0 * size - 0.5))
    b = int(math.ceil((hi + 1.0) / 2.0 * size - 0.5)) + 1
    return max(0, a), min(size, b)


def render_subject(subj: Subject, size: int, rng: np.random.Generator,
                   var: AbdomenVariation = AbdomenVariation()) -> np.ndarray:
    """Voxelise ``subj`` into a float32 ``size``^3 volume in [0, 1] (axes: x, z, y; background exactly 0)."""
    out = np.zeros((size, size, size), dtype=np.float32)
    coord = ((np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0)
    g = subj.deform.shape[1]
    bx, by = _basis(coord, g), _basis(coord, g)  # along array axes 0 (x) and 2 (y)
    nz = max(1, min(size, var.slab_voxels // (size * size)))
    lo_hu, hi_hu = HU_RANGE
    for j0 in range(0, size, nz):
        j1 = min(size, j0 + nz)
        zc = coord[j0:j1]
        bz = _basis(zc, g)
        # displacement of each component on the slab: D[i, j, k] = sum_abc C[a, b, c] Bx[i, a] By[k, b] Bz[j, c]
        disp = []
        for comp in range(3):
            m = np.einsum("abc,jc->abj", subj.deform[comp], bz)            # (g, g, nz)
            m = np.einsum("abj,kb->ajk", m, by)                             # (g, nz, size)
            disp.append((bx @ m.reshape(g, -1)).reshape(size, j1 - j0, size))
        x = coord[:, None, None] + disp[0]
        y = coord[None, None, :] + disp[1]
        z = zc[None, :, None] + disp[2]
        del disp
        reach = float(max(np.abs(x - coord[:, None, None]).max(), np.abs(y - coord[None, None, :]).max(),
                          np.abs(z - zc[None, :, None]).max()))
        b = subj.body
        rb = b.radius_pow(x, y, z)
        inside = rb <= 1.0
        hu = np.full(x.shape, AIR, dtype=np.float32)
        T = subj.tissue
        hu[inside] = T["skin"]
        hu[rb <= (1.0 - b.skin) ** b.p] = T["fat"]
        hu[rb <= (1.0 - b.skin - b.fat) ** b.p] = T["muscle"]
        interior = rb <= b.inner ** b.p
        hu[interior] = T["fat"]
        del rb
        for shape in subj.shapes:
            i0, i1 = _index_range(float(shape.lo[0]) - reach, float(shape.hi[0]) + reach, size)
            k0, k1 = _index_range(float(shape.lo[1]) - reach, float(shape.hi[1]) + reach, size)
            s0, s1 = _index_range(float(shape.lo[2]) - reach, float(shape.hi[2]) + reach, size)
            s0, s1 = max(s0, j0) - j0, min(s1, j1) - j0
            if i0 >= i1 or k0 >= k1 or s0 >= s1:
                continue
            box = (slice(i0, i1), slice(s0, s1), slice(k0, k1))
            sub = hu[box]
            shape.paint(sub, x[box], y[box], z[box], interior[box])
            hu[box] = sub
        del x, y, z, interior
        noise = rng.standard_normal(hu.shape, dtype=np.float32)
        noise *= np.float32(subj.noise)
        hu += noise
        del noise
        hu -= lo_hu
        hu *= 1.0 / (hi_hu - lo_hu)
        np.clip(hu, 0.0, 1.0, out=hu)
        hu[~inside] = 0.0
        out[:, j0:j1, :] = hu
        del hu, inside
    return out


def abdomen_affine(size: int) -> np.ndarray:
    """Voxel -> RAS mm: axis 0 -> x, axis 1 -> z, axis 2 -> y, spacing FOV / size, centred on the origin."""
    vox = FOV_MM / size
    aff = np.zeros((4, 4))
    aff[0, 0] = vox
    aff[2, 1] = vox
    aff[1, 2] = vox
    aff[3, 3] = 1.0
    aff[:3, 3] = -vox * (size - 1) / 2.0
    return aff


def make_abdomen_volume(size: int, seed: int, k: int, var: AbdomenVariation = AbdomenVariation()) -> np.ndarray:
    """Subject ``k`` of the phantom family ``seed`` as a float32 ``size``^3 volume in [0, 1]."""
    rng = np.random.default_rng([seed, k])
    subj = make_subject(rng, var)
    return render_subject(subj, size, rng, var)


def make_abdomen_data(out_dir: str | Path, n: int, size: int = 512, seed: int = 0, start: int = 0) -> list[Path]:
    """Write ``n`` phantom subjects ``{start:05d}.nii.gz ...`` into ``out_dir``; subject k depends only on
    (seed, k), so folders made with different ``n`` agree on the subjects they share."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    affine = abdomen_affine(size)
    written = []
    from tqdm import tqdm

    for k in tqdm(range(start, start + n), desc="make-data abdom", unit="vol"):
        vol = make_abdomen_volume(size, seed, k)
        written.append(write_volume(out_dir / f"{k:05d}.nii.gz", vol, affine))
        del vol
    log.info("wrote %d abdominal phantom volumes (%d^3) to %s", n, size, out_dir)
    return written
