"""Contrast augmentation for training slices, so a model is not tied to one MRI contrast (T1).

One random intensity remap per volume pair is applied to the foreground (value > 0) of *both* paired slice
stacks alike, so the FPI task itself is unchanged (a patch is foreign because of anatomy, not because its two
sources got different contrasts). Background stays exactly 0 and values stay in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ContrastAugment:
    """Parameters of the remap (each draw: gamma, then optionally inversion, then optionally a random curve).

    Attributes:
        p: probability that a pair is remapped at all (0 = off).
        gamma: (low, high) range of the exponent, drawn log-uniformly.
        p_invert: probability of ``v -> 1 - v`` on the foreground (T1 -> roughly T2-like: fluid bright).
        p_curve: probability of a random smooth non-monotone curve (piecewise linear through ``knots`` random
            points in [0, 1]), e.g. FLAIR-like (fluid dark, lesions bright) or PD-like contrasts.
        knots: inner knots of that curve.
        floor: the smallest foreground value after the remap (keeps foreground > 0 = distinct from background).
    """

    p: float = 0.8
    gamma: tuple[float, float] = (0.6, 1.7)
    p_invert: float = 0.35
    p_curve: float = 0.25
    knots: int = 3
    floor: float = 0.02

    def __call__(self, rng: np.random.Generator, *stacks: np.ndarray) -> tuple[np.ndarray, ...]:
        """Remap every array in ``stacks`` (float32 in [0, 1]) with the same random draw; returns new arrays."""
        if self.p <= 0 or rng.random() >= self.p:
            return stacks
        g = float(np.exp(rng.uniform(np.log(self.gamma[0]), np.log(self.gamma[1]))))
        invert = rng.random() < self.p_invert
        xs = ys = None
        if rng.random() < self.p_curve:
            xs = np.concatenate([[0.0], np.sort(rng.uniform(0, 1, self.knots)), [1.0]])
            ys = rng.uniform(0.05, 1.0, self.knots + 2)
        out = []
        for s in stacks:
            fg = s > 0
            v = np.clip(s, 0.0, 1.0) ** g
            if invert:
                v = 1.0 - v
            if xs is not None:
                v = np.interp(v, xs, ys)
            v = self.floor + (1.0 - self.floor) * v
            out.append(np.where(fg, v, 0.0).astype(np.float32))
        return tuple(out)


@dataclass(frozen=True)
class SourceIntensity:
    """An intensity change of the *second* source (B) of an FPI pair only: subjects differ in brightness and
    contrast, so a patch interpolated from B then also differs from A in intensity, not only in anatomy.

    Attributes:
        p: probability per pair (0 = off: the paper's task).
        gamma: (low, high) exponent range, log-uniform.
        scale: (low, high) range of a multiplicative brightness change.
    """

    p: float = 0.0
    gamma: tuple[float, float] = (0.7, 1.4)
    scale: tuple[float, float] = (0.75, 1.25)

    def __call__(self, rng: np.random.Generator, b: np.ndarray) -> np.ndarray:
        """``b`` with one random gamma and scale applied to its foreground (values clipped to [0, 1])."""
        if self.p <= 0 or rng.random() >= self.p:
            return b
        g = float(np.exp(rng.uniform(np.log(self.gamma[0]), np.log(self.gamma[1]))))
        s = float(rng.uniform(*self.scale))
        return np.where(b > 0, np.clip(np.clip(b, 0, 1) ** g * s, 1e-3, 1.0), 0.0).astype(np.float32)


@dataclass(frozen=True)
class SourceShift:
    """An in-plane translation of the *second* source (B) of an FPI pair only, one per slice: a patch
    interpolated from B then comes from *another location* of the other subject, so it carries foreign
    structure and may be brighter or darker than both local sources (the paper's same-location patch can
    never be brighter than both). Values wrap around the slice border (``np.roll``); B stays a normal-looking,
    translated slice, so the reverse example (the patch placed into B) is valid too.

    Attributes:
        p: probability per slice (0 = off: the paper's task).
        shift: (low, high) magnitude of the offset along each axis as a fraction of the slice size, each axis
            with a random sign.
    """

    p: float = 0.0
    shift: tuple[float, float] = (0.05, 0.25)

    def __call__(self, rng: np.random.Generator, b: np.ndarray) -> np.ndarray:
        """``b`` (k, H, W) with each slice translated with probability ``p``; a new array when any moved."""
        if self.p <= 0:
            return b
        out = b
        for i in range(len(b)):
            if rng.random() >= self.p:
                continue
            offs = tuple(int(round(rng.uniform(*self.shift) * n)) * int(rng.choice((-1, 1)))
                         for n in b.shape[1:])
            if out is b:
                out = b.copy()
            out[i] = np.roll(b[i], offs, axis=(0, 1))
        return out
