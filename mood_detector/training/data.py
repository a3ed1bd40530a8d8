"""Training data: lazily read volumes, a compact cache, and slice batches drawn from volume pairs.

Volumes are read on first use, normalised to [0, 1], resampled to the network size and kept as float16
(half the memory of float32; 32 MiB per 256^3 volume) in an LRU cache bounded by ``cache_gb``, so training on
hundreds of volumes needs neither hundreds of GB of RAM nor a re-read of every file every epoch.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from mood_detector.io.nifti import ReadLimits, read_volume
from mood_detector.preprocess import prepare, resample, to_slices
from mood_detector.tasks.augment import ContrastAugment, SourceIntensity, SourceShift

log = logging.getLogger(__name__)


class VolumeStore:
    """Reads training volumes lazily and caches them compactly (float16, slice axis first): in an LRU in RAM,
    or, with ``cache_dir``, as memory-mapped ``.npy`` files that data-loader workers share
    (:class:`~mood_detector.training.cache.DiskCache`; call :meth:`prepare` before the workers start)."""

    def __init__(self, files: Sequence[Path], size: int, slice_axis: int, cache_gb: float = 4.0,
                 limits: ReadLimits | None = None, cache_dir: str | Path | None = None) -> None:
        if not files:
            raise ValueError("no training volumes given")
        self.files = [Path(f) for f in files]
        self.size, self.slice_axis = int(size), int(slice_axis)
        self.limits = limits or ReadLimits()
        self.disk = None
        if cache_dir is not None:
            from mood_detector.training.cache import DiskCache

            disk = DiskCache(cache_dir, self.size, self.slice_axis, self.limits)
            if disk.fits(len(self.files)):
                self.disk = disk
            else:
                log.warning("%s: not enough free disk for the float16 volume cache; caching in RAM", cache_dir)
        per_volume = 2 * self.size**3
        self.capacity = max(1, int(cache_gb * 2**30 // per_volume))
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self.files)

    def prepare(self, threads: int = 2, rank: int = 0, world_size: int = 1) -> None:
        """Decode every volume (this rank's share) into the disk cache now, once, instead of in each worker."""
        if self.disk is not None:
            self.disk.prepare(self.files, threads, rank, world_size)

    def slices(self, i: int) -> np.ndarray:
        """Volume ``i`` as float16 slices (S, size, size) in [0, 1]."""
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        if self.disk is not None:  # memory maps cost no RAM of their own: keep many open (bounded: file handles)
            arr = self.disk.open(self.files[i])
            self._cache[i] = arr
            while len(self._cache) > 256:
                self._cache.popitem(last=False)
            return arr
        vol = read_volume(self.files[i], self.limits).data
        vol = resample(prepare(vol)[0], (self.size,) * 3)
        arr = np.ascontiguousarray(to_slices(vol, self.slice_axis), dtype=np.float16)
        self._cache[i] = arr
        while len(self._cache) > self.capacity:
            self._cache.popitem(last=False)
        return arr


def nonempty(slices: np.ndarray) -> np.ndarray:
    """Per slice of ``slices`` (n, ...), whether any voxel is above 0 (all-background slices are False)."""
    return slices.reshape(len(slices), -1).max(1) > 0


def epoch_pairs(n: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """Random disjoint pairs covering all ``n`` volumes once (an odd one out pairs with a random other)."""
    if n < 2:
        raise ValueError("FPI training needs at least two volumes")
    perm = rng.permutation(n)
    pairs = [(int(perm[k]), int(perm[k + 1])) for k in range(0, n - 1, 2)]
    if n % 2:
        other = int(rng.integers(0, n - 1))
        pairs.append((int(perm[-1]), int(perm[other])))
    return pairs


@dataclass
class PairBatches(IterableDataset):
    """Yields ``(a, b)`` float32 tensors of paired slices (k, size, size), ``k = batch_size // 2`` slice indices
    per batch (each gives two FPI examples), drawn from one volume pair; slices empty in both volumes are
    skipped. Pairs are split across data-loader workers and across distributed ranks."""

    store: VolumeStore
    pairs: list[tuple[int, int]]
    batch_size: int
    seed: int
    max_batches_per_pair: int = 0
    rank: int = 0
    world_size: int = 1
    augment: ContrastAugment | None = None
    source: SourceIntensity | None = None
    shift: SourceShift | None = None
    all_axes: bool = False

    def _plan(self, p: int) -> tuple[np.random.Generator, np.ndarray, np.ndarray, bool, list[np.ndarray]]:
        """Pair ``p``'s random stream (after the choices made here), its two slice stacks along the chosen axis,
        whether to transpose the slices, and the slice indices of each of its batches."""
        ia, ib = self.pairs[p]
        rng = np.random.default_rng([self.seed, p])
        a, b = self.store.slices(ia), self.store.slices(ib)
        transpose = False
        if self.all_axes:  # one axis per pair, either in-plane orientation (the volumes are cubes)
            axis = int(rng.integers(3))
            a, b = np.moveaxis(a, axis, 0), np.moveaxis(b, axis, 0)
            transpose = bool(rng.integers(2))
        n = min(len(a), len(b))
        keep = np.flatnonzero(nonempty(a[:n]) | nonempty(b[:n]))
        rng.shuffle(keep)
        k = max(1, self.batch_size // 2)
        batches = [keep[j:j + k] for j in range(0, len(keep), k)]
        if self.max_batches_per_pair:
            batches = batches[: self.max_batches_per_pair]
        return rng, a, b, transpose, batches

    def batch_counts(self) -> list[int]:
        """The number of batches each pair yields (all pairs, whatever the shard), without making them."""
        return [len(self._plan(p)[4]) for p in range(len(self.pairs))]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        shard = self.rank * nw + wid
        nshards = self.world_size * nw
        for p in range(len(self.pairs)):
            if p % nshards != shard:
                continue
            rng, a, b, transpose, batches = self._plan(p)
            for idx in batches:
                idx = np.sort(idx)
                sa, sb = a[idx].astype(np.float32), b[idx].astype(np.float32)
                if transpose:
                    sa, sb = np.ascontiguousarray(sa.transpose(0, 2, 1)), np.ascontiguousarray(sb.transpose(0, 2, 1))
                if self.augment is not None:  # one remap for both stacks: the FPI task is unchanged
                    sa, sb = self.augment(rng, sa, sb)
                if self.source is not None:  # B alone: its patches differ from A in intensity too
                    sb = self.source(rng, sb)
                if self.shift is not None:  # B alone: its patches come from another location
                    sb = self.shift(rng, sb)
                yield torch.from_numpy(sa), torch.from_numpy(sb)


def pair_loader(store: VolumeStore, pairs: list[tuple[int, int]], batch_size: int, seed: int, workers: int = 0,
                max_batches_per_pair: int = 0, rank: int = 0, world_size: int = 1,
                pin_memory: bool = False, augment: ContrastAugment | None = None,
                source: SourceIntensity | None = None, shift: SourceShift | None = None,
                all_axes: bool = False) -> DataLoader:
    """A DataLoader over :class:`PairBatches` (batches are already formed, so ``batch_size=None``); ``all_axes``:
    each volume pair is sliced along a random one of the three axes, in a random in-plane orientation."""
    ds = PairBatches(store, pairs, batch_size, seed, max_batches_per_pair, rank, world_size, augment, source,
                     shift, all_axes)
    return DataLoader(ds, batch_size=None, num_workers=workers, pin_memory=pin_memory,
                      persistent_workers=False, prefetch_factor=4 if workers else None)


@dataclass
class SliceBatches(IterableDataset):
    """Yields batches (batch_size, 1, size, size) of single non-empty slices from shuffled volumes, for
    detectors that learn to reconstruct normal slices."""

    store: VolumeStore
    order: list[int]
    batch_size: int
    seed: int
    max_batches_per_volume: int = 0
    rank: int = 0
    world_size: int = 1

    def __iter__(self) -> Iterator[torch.Tensor]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        shard, nshards = self.rank * nw + wid, self.world_size * nw
        for p, iv in enumerate(self.order):
            if p % nshards != shard:
                continue
            rng = np.random.default_rng([self.seed, p])
            a = self.store.slices(iv)
            keep = np.flatnonzero(nonempty(a))
            rng.shuffle(keep)
            batches = [keep[j:j + self.batch_size] for j in range(0, len(keep), self.batch_size)]
            if self.max_batches_per_volume:
                batches = batches[: self.max_batches_per_volume]
            for idx in batches:
                yield torch.from_numpy(a[np.sort(idx)].astype(np.float32))[:, None]


def slice_loader(store: VolumeStore, order: list[int], batch_size: int, seed: int, workers: int = 0,
                 max_batches_per_volume: int = 0, rank: int = 0, world_size: int = 1,
                 pin_memory: bool = False) -> DataLoader:
    """A DataLoader over :class:`SliceBatches`."""
    ds = SliceBatches(store, order, batch_size, seed, max_batches_per_volume, rank, world_size)
    return DataLoader(ds, batch_size=None, num_workers=workers, pin_memory=pin_memory,
                      prefetch_factor=4 if workers else None)


def epoch_slices(store: VolumeStore, epoch: int, seed: int, batch_size: int, workers: int = 0,
                 max_batches_per_volume: int = 0, device: torch.device | None = None) -> DataLoader:
    """The batches of non-empty slices of ``epoch``: the volumes in an order seeded by (``seed``, ``epoch``),
    each one's slices batched as :class:`SliceBatches` does (the slice detectors' epoch; a resumed run draws the
    same)."""
    order = [int(i) for i in np.random.default_rng([seed, epoch]).permutation(len(store))]
    return slice_loader(store, order, batch_size, seed=seed * 7919 + epoch, workers=workers,
                        max_batches_per_volume=max_batches_per_volume,
                        pin_memory=device is not None and device.type == "cuda")
