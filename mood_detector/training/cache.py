"""Pre-decoded training volumes on disk: float16 ``.npy`` files opened as read-only memory maps.

Every volume is read, normalised, resampled to the network size and stored once as float16 with the slice
axis first (32 MiB per 256^3 volume, a quarter of float32 in RAM... but on disk). Data-loader worker processes
then map the same files, so they share the operating system's page cache instead of each decoding the
``.nii.gz`` files again into a private cache. A file's name carries a hash of the source path, size and
modification time, the network size, slice axis and the cache format version, so a changed input or setting
is decoded again and stale entries are simply ignored.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from mood_detector.io.nifti import ReadLimits, read_volume
from mood_detector.preprocess import prepare, resample, to_slices

log = logging.getLogger(__name__)

CACHE_VERSION = 2  # 2: foreground mask and percentile normalisation (preprocess.prepare)


def cache_name(path: Path, size: int, slice_axis: int) -> str:
    """File name of ``path``'s cache entry for ``size`` and ``slice_axis``."""
    st = path.stat()
    key = f"{CACHE_VERSION}|{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{size}|{slice_axis}"
    stem = re.sub(r"[^A-Za-z0-9_-]", "_", path.name.split(".")[0])[:40]
    return f"{stem}-{hashlib.sha1(key.encode()).hexdigest()[:16]}.npy"


def decode(path: Path, size: int, slice_axis: int, limits: ReadLimits | None = None) -> np.ndarray:
    """Volume ``path`` as float16 slices (S, size, size) in [0, 1] (what training reads)."""
    vol = read_volume(path, limits or ReadLimits()).data
    net = resample(prepare(vol, inplace=True)[0], (size,) * 3)
    del vol
    return np.ascontiguousarray(to_slices(net, slice_axis), dtype=np.float16)


class DiskCache:
    """Decodes training volumes once into ``folder`` and maps them read-only."""

    def __init__(self, folder: str | Path, size: int, slice_axis: int, limits: ReadLimits | None = None) -> None:
        self.folder = Path(folder)
        self.size, self.slice_axis = int(size), int(slice_axis)
        self.limits = limits or ReadLimits()

    def entry(self, path: Path) -> Path:
        return self.folder / cache_name(Path(path), self.size, self.slice_axis)

    def ensure(self, path: Path) -> Path:
        """The cache file of ``path``, decoding it first if missing (written atomically: temp file + rename,
        so concurrent processes never see a partial file)."""
        target = self.entry(path)
        if target.exists():
            return target
        self.folder.mkdir(parents=True, exist_ok=True)
        arr = decode(Path(path), self.size, self.slice_axis, self.limits)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as fh:
                np.save(fh, arr, allow_pickle=False)
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return target

    def open(self, path: Path) -> np.ndarray:
        """Read-only memory map of ``path``'s slices (decoded first if needed)."""
        return np.load(self.ensure(path), mmap_mode="r", allow_pickle=False)

    def fits(self, n_files: int) -> bool:
        """True if ``n_files`` entries fit on the cache's file system with 10% to spare."""
        probe = self.folder
        while not probe.exists():
            probe = probe.parent
        need = n_files * 2 * self.size**3
        return shutil.disk_usage(probe).free > 1.1 * need

    def prepare(self, files: Sequence[Path], threads: int = 2, rank: int = 0, world_size: int = 1,
                progress: bool = True) -> None:
        """Decode the missing entries of ``files`` (this rank's share ``i % world_size == rank``) with a few
        threads (gzip, resampling and float16 conversion release the GIL for most of their time)."""
        todo = [f for i, f in enumerate(files) if i % world_size == rank and not self.entry(Path(f)).exists()]
        if not todo:
            return
        log.info("decoding %d training volumes into %s (float16, %d MiB each)", len(todo), self.folder,
                 2 * self.size**3 >> 20)
        with ThreadPoolExecutor(max(1, threads)) as pool:
            for _ in tqdm(pool.map(self.ensure, todo), total=len(todo), desc="cache", unit="vol",
                          disable=not progress, leave=False):
                pass
