"""One sliding window for every detector: a volume is tiled into patches, the patches that hold anything are
scored in batches, and their scores are put back (as in nnU-Net, 2D is the special case of 3D).

* **Patches**: a volumetric detector's are 3D (``Detector.patch_size``), their first voxels about ``step`` of
  the patch edge apart along each axis, the last patch ending at the volume's edge. A slice detector's slice is
  a patch of depth 1, (1, S, S) of the volume with its slicing axis first: its patches are the slices, in
  order, and its slice scores are the patch scores.
* **Empty patches** (``skip_empty``): a patch with no voxel above 0 and no voxel of the given foreground is not
  run; its voxels and its patch score stay 0 (:func:`~mood_detector.inference.fastpath.occupied`).
* **Crop** (``crop_stride``): each batch is cut, in its last two axes, to the stride-aligned box of its
  foreground plus ``crop_margin`` (:func:`~mood_detector.inference.fastpath.crop_box`); outside it scores 0.
* **Batching**: ``batch`` patches per scorer call; on CUDA out of memory the batch is halved and retried
  (:attr:`WindowScores.batch` is the size it ended with, for the caller's next volume).
* **Accumulation**: patches that do not overlap (slices, or one patch the size of the volume) are written
  straight into the output, which may be any view (e.g. of a Fortran-ordered volume), so no volume beyond it is
  allocated. Overlapping patches are blended: each patch's scores are weighted by a Gaussian centred on it
  (standard deviation 1/8 of the edge, nnU-Net's weighting: a patch's border voxels saw less context) and the
  weighted sum is divided by the summed weights (one accumulator and one weight volume). A voxel that no
  scored patch covers scores 0.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, ContextManager, NamedTuple, Sequence

import numpy as np
import torch

from mood_detector.inference.aggregate import slice_scores
from mood_detector.inference.fastpath import crop_box, occupied

if TYPE_CHECKING:
    from mood_detector.detector import Detector

log = logging.getLogger(__name__)

#: standard deviation of the blending Gaussian, as a fraction of the patch edge
SIGMA_SCALE = 1 / 8


class Scored(NamedTuple):
    """A scorer's result for a batch of patches: voxel scores ``pixel`` (B, d, h, w) and, where the scorer
    gives them, one score per patch ``patch`` (B,) (a slice detector's slice scores)."""

    pixel: torch.Tensor
    patch: torch.Tensor | None = None


#: ``score(x, origins)``: patches ``x`` (B, 1, d, h, w) float32 whose first voxels lie at ``origins`` (B, 3) ->
#: their voxel scores (B, d, h, w), as a tensor or as :class:`Scored` with patch scores
ScoreFn = Callable[[torch.Tensor, torch.Tensor], "torch.Tensor | Scored"]


def axis_origins(size: int, patch: int, step: float) -> list[int]:
    """Origins along one axis of length ``size`` for patches of ``patch`` voxels, about ``step * patch`` apart,
    the first at 0 and the last ending at ``size``."""
    if patch >= size:
        return [0]
    n = int(np.ceil((size - patch) / max(1.0, step * patch))) + 1
    return [int(round(v)) for v in np.linspace(0, size - patch, n)]


def gaussian_weights(patch: Sequence[int]) -> np.ndarray:
    """Blending weights of a patch (float32, maximum 1, no zeros)."""
    grids = np.meshgrid(*[(np.arange(p) - (p - 1) / 2) / (SIGMA_SCALE * p) for p in patch], indexing="ij")
    w = np.exp(-0.5 * sum(g**2 for g in grids)).astype(np.float32)
    return np.maximum(w / w.max(), 1e-4)


@dataclass(frozen=True)
class Tiles:
    """The patches of a volume of ``shape``: edges ``patch`` (each at most the volume's) and the origins along
    each axis, ``axis_starts``; the patches are their grid, in C order (:attr:`origins`)."""

    shape: tuple[int, int, int]
    patch: tuple[int, int, int]
    axis_starts: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, shape: Sequence[int], patch: Sequence[int], step: float = 0.5) -> "Tiles":
        """The tiling of ``shape`` by ``patch`` with origins about ``step`` of the patch edge apart."""
        shape3 = tuple(int(s) for s in shape)
        edges = tuple(max(1, min(int(p), s)) for p, s in zip(patch, shape3))
        if len(shape3) != 3 or len(edges) != 3:
            raise ValueError(f"need a 3D volume and a 3D patch, got {shape3} and {tuple(patch)}")
        starts = tuple(tuple(axis_origins(s, p, step)) for s, p in zip(shape3, edges))
        return cls(shape3, edges, starts)  # type: ignore[arg-type]

    @property
    def origins(self) -> np.ndarray:
        """First voxels of the patches (n, 3), int64."""
        return np.array(list(itertools.product(*self.axis_starts)), dtype=np.int64).reshape(-1, 3)

    @property
    def overlapping(self) -> bool:
        """Whether some voxel lies in more than one patch (then the scores are blended)."""
        return any(np.any(np.diff(s) < p) for s, p in zip(self.axis_starts, self.patch))

    @property
    def planes(self) -> bool:
        """Whether each patch spans whole planes of the last two axes (slices of depth ``patch[0]``)."""
        return self.patch[1:] == self.shape[1:]

    def box(self, origin: Sequence[int]) -> tuple[slice, slice, slice]:
        """The index of the patch at ``origin``."""
        return tuple(slice(int(o), int(o) + p) for o, p in zip(origin, self.patch))  # type: ignore[return-value]

    def occupied(self, volume: np.ndarray, foreground: np.ndarray | None = None) -> np.ndarray:
        """Boolean (n,): the patches with a voxel above 0 in ``volume`` or in ``foreground`` (boolean, the
        volume's shape)."""
        if self.planes:  # per plane in one pass over the (possibly strided) volume, then per window of planes
            per_plane = occupied(volume, foreground=foreground)
            counts = np.concatenate([[0], np.cumsum(per_plane)])
            first = self.origins[:, 0]
            return counts[first + self.patch[0]] - counts[first] > 0
        return np.array([volume[b].max() > 0 or (foreground is not None and bool(foreground[b].any()))
                         for b in map(self.box, self.origins)], dtype=bool)


@dataclass(frozen=True)
class Window:
    """How a detector's volumes are tiled and cut (the policy is the caller's; :func:`score_window` runs it).

    Attributes:
        patch: patch edges (d, h, w); a slice detector's are (1, S, S).
        step: origins about this fraction of the patch edge apart (0.5: half-overlapping patches).
        skip_empty: do not run patches with nothing above 0 (and nothing of the foreground).
        crop_stride: cut each batch to its foreground box aligned to multiples of this (0: no crop).
        crop_margin: background pixels kept around the foreground box.
    """

    patch: tuple[int, int, int]
    step: float = 0.5
    skip_empty: bool = False
    crop_stride: int = 0
    crop_margin: int = 0

    def tiles(self, shape: Sequence[int]) -> Tiles:
        return Tiles.of(shape, self.patch, self.step)


@dataclass
class WindowScores:
    """What :func:`score_window` gives: the voxel scores ``pixel`` (the output passed in, or a new volume; an
    empty array where not needed), one score per patch ``patch`` (float64, 0 for patches not run or when the
    scorer gives none; a slice detector's slice scores), the indices of the patches ``run``, and the batch size
    ``batch`` it ended with."""

    pixel: np.ndarray
    patch: np.ndarray
    run: np.ndarray
    batch: int


def _gather(volume: np.ndarray, tiles: Tiles, origins: np.ndarray) -> np.ndarray:
    """The patches at ``origins`` as one (B, d, h, w) array: for slices, the run of them itself (a view where they
    are consecutive), else a stacked copy."""
    if tiles.planes and tiles.patch[0] == 1:
        idx = origins[:, 0]
        run = slice(int(idx[0]), int(idx[-1]) + 1) if idx[-1] - idx[0] == len(idx) - 1 else idx
        return np.asarray(volume[run])[:, None]
    return np.stack([volume[tiles.box(o)] for o in origins])


@torch.no_grad()
def score_window(volume: np.ndarray, window: Window, score: ScoreFn, batch: int = 1, *,
                 out: np.ndarray | None = None, need_pixel: bool = True,
                 foreground: np.ndarray | None = None) -> WindowScores:
    """Score ``volume`` (D, H, W; any strides) patch by patch with ``score`` (:data:`ScoreFn`).

    ``out`` (the volume's shape, zero-filled, any strides) receives the voxel scores in place; without it a
    volume is allocated (nothing when ``need_pixel`` is False and the patches do not overlap). ``foreground``
    (boolean, the volume's shape) counts as occupied and stays inside the crop box, dark regions included."""
    tiles = window.tiles(volume.shape)
    origins = tiles.origins
    todo = np.flatnonzero(tiles.occupied(volume, foreground)) if window.skip_empty else np.arange(len(origins))
    blend = tiles.overlapping
    if blend:
        weights = gaussian_weights(tiles.patch)
        target = np.zeros(volume.shape, dtype=np.float32)
        norm = np.zeros(volume.shape, dtype=np.float32)
    else:
        target = out if out is not None else np.zeros(volume.shape if need_pixel else 0, dtype=np.float32)
    write = need_pixel or blend  # the map of overlapping patches is made anyway: it is blended
    per_patch = np.zeros(len(origins), dtype=np.float64)
    bs, i = max(1, int(batch)), 0
    while i < len(todo):
        sel = todo[i:i + bs]
        starts = origins[sel]
        patches = np.asarray(_gather(volume, tiles, starts), dtype=np.float32)
        ys, xs = slice(None), slice(None)
        if window.crop_stride:
            fg = None if foreground is None else _gather(foreground, tiles, starts)
            box = crop_box(_planes(patches), window.crop_stride, window.crop_margin,
                           foreground=None if fg is None else _planes(fg))
            if box is not None:
                ys, xs = box.index
        x = torch.from_numpy(np.ascontiguousarray(patches[..., ys, xs]))[:, None]
        del patches
        at = torch.from_numpy(starts + np.array([0, ys.start or 0, xs.start or 0], dtype=np.int64))
        try:
            res = score(x, at)
            pixel, scores = (res, None) if isinstance(res, torch.Tensor) else (res.pixel, res.patch)
            if write:
                p = pixel.float().cpu().numpy()
                if not blend and tiles.planes and tiles.patch[0] == 1:  # slices: one assignment for the batch
                    idx = starts[:, 0]
                    run = slice(int(idx[0]), int(idx[-1]) + 1) if idx[-1] - idx[0] == len(idx) - 1 else idx
                    target[run, ys, xs] = p[:, 0]
                else:
                    for o, s in zip(starts, p):
                        b = _cut(tiles.box(o), ys, xs)
                        if blend:
                            w = weights[:, ys, xs]
                            target[b] += s * w
                            norm[b] += w
                        else:
                            target[b] = s
            if scores is not None:
                per_patch[sel] = scores.float().cpu().numpy()
        except torch.cuda.OutOfMemoryError:
            if bs == 1:
                raise
            bs = max(1, bs // 2)
            torch.cuda.empty_cache()
            log.warning("CUDA out of memory: batch size halved to %d", bs)
            continue
        i += len(sel)
    if blend:
        np.divide(target, norm, out=target, where=norm > 0)  # voxels of no scored patch stay 0
        del norm
        if out is not None:
            out[...] = target
            target = out
    return WindowScores(pixel=target, patch=per_patch, run=todo, batch=bs)


def _planes(patches: np.ndarray) -> np.ndarray:
    """Patches (B, d, h, w) as planes (B * d, h, w), without a copy for depth 1."""
    return patches[:, 0] if patches.shape[1] == 1 else patches.reshape(-1, *patches.shape[2:])


def _cut(box: tuple[slice, slice, slice], ys: slice, xs: slice) -> tuple[slice, slice, slice]:
    """``box`` narrowed in its last two axes to the crop ``ys``, ``xs`` (relative to the box)."""
    def narrow(s: slice, c: slice) -> slice:
        return slice(s.start + (c.start or 0), s.stop if c.stop is None else s.start + c.stop)
    return box[0], narrow(box[1], ys), narrow(box[2], xs)


def sliding_window(volume: np.ndarray, patch: Sequence[int], score: ScoreFn, batch: int = 1,
                   step: float = 0.5) -> np.ndarray:
    """Voxel scores (float32, ``volume``'s shape) of ``volume`` (D, H, W) scored patch by patch, every patch
    run, nothing cut (:func:`score_window`)."""
    return score_window(volume, Window(tuple(patch), step), score, batch).pixel  # type: ignore[arg-type]


def detector_scorer(det: "Detector", fn: Callable[[torch.Tensor], object] | None = None,
                    context: Callable[[], ContextManager] = contextlib.nullcontext,
                    area: int | None = None) -> ScoreFn:
    """The :data:`ScoreFn` of detector ``det`` (on its device), its scores clamped to [0, 1], run under
    ``context()`` (e.g. the caller's timing, inference mode and autocast).

    A slice detector's ``fn`` (its ``score_slices``, or a compiled one; default ``det.score_slices``) scores the
    depth-1 patches as slices (N, 1, h, w); the patch scores are its slice scores, its own or else by its slice
    rule over the whole slice of ``area`` pixels (default: of its ``patch_size``; pixels outside a crop count
    0). A volumetric detector's ``score_patches`` scores the patches and their origins; its patch scores are none
    (its slice scores come from the blended map)."""
    if det.dims == 3:
        def volumetric(x: torch.Tensor, origins: torch.Tensor) -> Scored:
            with context():
                return Scored(det.score_patches(x, origins).pixel.float().clamp(0, 1))
        return volumetric

    run = fn if fn is not None else det.score_slices
    area = int(area or np.prod(det.patch_size[1:]))
    rule = det.slice_rule

    def slices(x: torch.Tensor, origins: torch.Tensor) -> Scored:
        with context():
            res = run(x[:, :, 0].to(det.device, non_blocking=True))  # (B, 1, 1, h, w) -> slices (B, 1, h, w)
            p = res.pixel.float().clamp(0, 1)
            s = res.slice if res.slice is not None else slice_scores(p, area, rule)
            return Scored(p[:, None], s.float().clamp(0, 1))
    return slices
