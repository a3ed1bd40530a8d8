"""The float16 disk cache of training volumes: decoded once, memory-mapped, equal to the RAM cache."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from mood_detector.detector import TrainConfig
from mood_detector.training.cache import DiskCache
from mood_detector.training.data import VolumeStore, pair_loader
from tests.conftest import blob_volume, save_nifti


def test_disk_cache_matches_ram_cache(tmp_path: Path):
    files = [save_nifti(tmp_path / f"{i}.nii.gz", blob_volume((20, 24, 28), seed=i)) for i in range(2)]
    ram = VolumeStore(files, 16, 2)
    disk = VolumeStore(files, 16, 2, cache_dir=tmp_path / "cache")
    disk.prepare(threads=2)
    entries = sorted((tmp_path / "cache").glob("*.npy"))
    assert len(entries) == 2
    for i in range(2):
        a, b = ram.slices(i), disk.slices(i)
        assert isinstance(b, np.memmap) and b.dtype == np.float16 and not b.flags.writeable
        np.testing.assert_array_equal(a, b)
    # a changed source gets a new entry; an unchanged one is not decoded again
    cache = DiskCache(tmp_path / "cache", 16, 2)
    before = cache.entry(files[0])
    os.utime(files[0], ns=(1, 1))
    assert cache.entry(files[0]) != before and cache.entry(files[1]) in entries


def test_loader_workers_read_the_disk_cache(tmp_path: Path):
    files = [save_nifti(tmp_path / f"{i}.nii.gz", blob_volume(seed=20 + i)) for i in range(2)]
    ram = VolumeStore(files, 32, 2)
    disk = VolumeStore(files, 32, 2, cache_dir=tmp_path / "cache")
    disk.prepare()
    pairs = [(0, 1)]
    a = list(pair_loader(ram, pairs, batch_size=8, seed=3, workers=0, max_batches_per_pair=2))
    b = list(pair_loader(disk, pairs, batch_size=8, seed=3, workers=1, max_batches_per_pair=2))
    assert len(a) == len(b) == 2
    for (x1, y1), (x2, y2) in zip(a, b):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)

