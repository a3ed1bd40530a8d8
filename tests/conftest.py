"""Shared fixtures: tiny NIfTI volumes and a tiny trained FPI model."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

import nibabel as nib
import numpy as np
import pytest
import torch
from tqdm import tqdm

from mood_detector.detector import Detector
from mood_detector.weights import ModelCard

# Tiny test models gain nothing from intra-op threads, and oversubscription (subprocess tests, a shared
# machine) makes them much slower (OpenMP spin-waits): one thread per test process...
torch.set_num_threads(1)
# No tqdm monitor thread: tests then run with the main thread only (plus the ones a test starts itself), which
# keeps tracemalloc / SIGALRM based tests free of cross-thread interference.
tqdm.monitor_interval = 0


@pytest.fixture(autouse=True)
def one_thread():
    """... and again before every test: code under test (the predictor's default uses every core) may change it;
    the test's own setting is undone afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@contextlib.contextmanager
def float64() -> Iterator[None]:
    """torch's default dtype float64 (and 1 thread) inside, restored afterwards: trainings compared with a
    tolerance run in it (float32 training amplifies each CPU's rounding; see tests/training/test_fixed_seed.py)."""
    dtype, threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_default_dtype(dtype)
        torch.set_num_threads(threads)


class StandIn(Detector):
    """Base of the tests' stand-in detectors: no networks, built from a card, not trainable; a subclass gives
    ``name`` and ``score_slices``."""

    @classmethod
    def build(cls, card: ModelCard) -> "StandIn":
        return cls(card)

    def modules(self) -> dict:
        return {}

    @classmethod
    def fit(cls, files, cfg, run_dir):
        raise NotImplementedError


def stand_in_card(name: str, kind: str = "brain", size: int = 16, extra: dict | None = None) -> ModelCard:
    """The model card of a stand-in detector: slices along axis 2 of ``size``^2, the foreground scheme."""
    return ModelCard(detector=name, arch=kind, width=1.0, kind=kind, slice_axis=2, size=size, mode="continuous",
                     extra={"preprocess": "foreground", **(extra or {})})


def blob_volume(shape=(32, 32, 32), seed: int = 0) -> np.ndarray:
    """A smooth ellipsoid 'head' in [0, 1] with zero background."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    radii = rng.uniform(0.6, 0.8, 3)
    r = np.sqrt(sum((grid[i] / radii[i]) ** 2 for i in range(3)))
    vol = np.clip(1.0 - r, 0, None) * (0.6 + 0.4 * np.cos(4 * grid[0] + rng.uniform(0, 6)) ** 2)
    vol[r > 1] = 0
    return (vol / max(vol.max(), 1e-6)).astype(np.float32)


def save_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    if affine is None:
        affine = np.array([[1.5, 0, 0, -20.0], [0, 1.2, 0, 10.0], [0, 0, 0.9, 5.0], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


@pytest.fixture
def volume_dir(tmp_path: Path) -> Path:
    """Folder with four 32^3 blob volumes 00000.nii.gz ... 00003.nii.gz."""
    d = tmp_path / "vols"
    d.mkdir()
    for i in range(4):
        save_nifti(d / f"{i:05d}.nii.gz", blob_volume(seed=i))
    return d


@pytest.fixture(scope="session")
def tiny_fpi(tmp_path_factory) -> Path:
    """A tiny FPI model (32^2 slices, width 1/8) trained for one epoch on blob volumes; path to weights."""
    from mood_detector.detector import TrainConfig
    from mood_detector.training.api import train_detector

    root = tmp_path_factory.mktemp("tiny_fpi")
    d = root / "train"
    d.mkdir()
    for i in range(3):
        save_nifti(d / f"{i:05d}.nii.gz", blob_volume(seed=10 + i))
    # final_bn=0: BatchNorm keeps its running statistics, so zero background stays close to neutral and the crop
    # test's tolerance measures the crop mechanism, not one model's padding sensitivity (docs/speed.md measures
    # that on real models)
    cfg = TrainConfig(kind="brain", size=32, width=0.125, epochs=1, batch_size=8, device="cpu",
                      max_batches_per_pair=2, options={"final_bn": "0"})
    return train_detector(d, root / "fpi.safetensors", cfg)
