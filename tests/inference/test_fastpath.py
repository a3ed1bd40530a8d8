"""CPU fast path: empty slices are not run and score 0; cropping to the stride-aligned foreground box gives the
full-slice result within a tolerance; both only for detectors that declare the capability."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from mood_detector.detector import load_detector
from mood_detector.inference.accel import CompiledScorer, compile_cache_problem
from mood_detector.inference.fastpath import Box, crop_box, occupied
from mood_detector.inference.predictor import PredictConfig, Predictor
from mood_detector.preprocess import normalise_intensity
from tests.conftest import blob_volume


def _counting(det):
    """Record the input shape of every network call of ``det`` (patched before the predictor is built)."""
    shapes: list[tuple[int, ...]] = []
    orig = det.score_slices

    def score(x):
        shapes.append(tuple(x.shape))
        return orig(x)

    det.score_slices = score
    return shapes


def test_crop_box_is_stride_aligned():
    batch = np.zeros((2, 64, 64), np.float32)
    batch[0, 20:30, 40:41] = 1.0
    batch[1, 35, 5] = 0.5
    assert crop_box(batch, 16, 0) == Box(16, 48, 0, 48)
    assert crop_box(batch, 16, 8) == Box(0, 48, 0, 64)
    assert crop_box(np.zeros((1, 64, 64), np.float32), 16, 8) is None
    assert crop_box(batch[:, :, :60], 16, 0) == Box(0, 64, 0, 60)  # not a stride multiple: no crop
    assert occupied(batch).tolist() == [True, True] and not occupied(batch * 0).any()


def test_dark_foreground_is_run_and_kept_in_the_box():
    """A slice whose object is all dark (intensity 0, like the background) is run when the foreground mask
    says it holds the object, and the box covers a dark region at the object's edge; without the mask both
    drop it. An empty background stays out either way."""
    batch = np.zeros((3, 64, 64), np.float32)
    batch[0, 20:40, 20:40] = 0.7  # tissue
    fg = np.zeros(batch.shape, bool)
    fg[0, 20:40, 20:60] = True  # the object reaches x = 60; its part at x >= 40 is dark
    fg[1, 30:34, 30:34] = True  # a slice of the object that is dark throughout
    assert occupied(batch).tolist() == [True, False, False]
    assert occupied(batch, foreground=fg).tolist() == [True, True, False]
    assert crop_box(batch, 16, 0) == Box(16, 48, 16, 48)
    assert crop_box(batch, 16, 0, foreground=fg) == Box(16, 48, 16, 64)
    assert crop_box(batch[1:], 16, 0, foreground=fg[1:]) == Box(16, 48, 16, 48)
    assert crop_box(batch[2:], 16, 0, foreground=fg[2:]) is None


def test_empty_slices_skipped_and_scored_zero(tiny_fpi: Path):
    vol = blob_volume((32, 32, 32), seed=1)
    vol[:, :, :6] = 0
    vol[:, :, -6:] = 0
    empty = vol.max(axis=(0, 1)) <= 0
    det = load_detector(tiny_fpi)
    assert det.slice_axis == 2 and empty.sum() >= 12
    shapes = _counting(det)
    fast = Predictor(det, PredictConfig(device="cpu", progress=False)).score_volume(vol)
    assert sum(s[0] for s in shapes) == int((~empty).sum())  # empty slices never reach the network
    assert np.all(fast.pixel[:, :, empty] == 0) and np.all(fast.slice_scores[empty] == 0)
    exact_det = load_detector(tiny_fpi)
    exact = Predictor(exact_det, PredictConfig(device="cpu", progress=False, skip_empty=False, crop=False))
    ref = exact.score_volume(vol)
    np.testing.assert_allclose(fast.pixel[:, :, ~empty], ref.pixel[:, :, ~empty], atol=1e-5)
    np.testing.assert_allclose(fast.slice_scores[~empty], ref.slice_scores[~empty], atol=1e-6)

    # a detector without the capability gets every slice
    other = load_detector(tiny_fpi)
    other.skip_empty_slices = False
    shapes = _counting(other)
    Predictor(other, PredictConfig(device="cpu", progress=False)).score_volume(vol)
    assert sum(s[0] for s in shapes) == 32


def test_crop_matches_full_forward(tiny_fpi: Path):
    # the tiny model is fully convolutional: run it on 96^2 slices with a 32^3 object in the middle
    size = 96
    vol = np.zeros((size,) * 3, np.float32)
    vol[32:64, 32:64, 32:64] = blob_volume((32, 32, 32), seed=3)
    full_det, crop_det = load_detector(tiny_fpi), load_detector(tiny_fpi)
    for d in (full_det, crop_det):
        d.card.size = size
    full = Predictor(full_det, PredictConfig(device="cpu", progress=False, crop=False)).score_volume(vol)
    shapes = _counting(crop_det)
    cropped = Predictor(crop_det, PredictConfig(device="cpu", progress=False, crop=True, crop_margin=16)
                        ).score_volume(vol)
    assert shapes and all(s[2] < size and s[3] < size and s[2] % 16 == 0 and s[3] % 16 == 0 for s in shapes)
    fg = vol > 0
    assert float(np.abs(cropped.pixel - full.pixel)[fg].max()) < 5e-3
    # outside every batch's box (here: beyond the 16-aligned, 16-widened object box) the score is 0
    assert np.all(cropped.pixel[:16] == 0) and np.all(cropped.pixel[:, 80:] == 0)


def test_normalise_in_place_only_when_asked():
    x = np.linspace(-5, 5, 27, dtype=np.float32).reshape(3, 3, 3)
    keep = x.copy()
    y = normalise_intensity(x)
    assert np.array_equal(x, keep) and y is not x
    z = normalise_intensity(x, inplace=True)
    assert z is x and np.allclose(x, y) and x.min() == 0 and x.max() == 1


def test_compile_refused_without_writable_cache(tmp_path: Path, tiny_fpi: Path, monkeypatch, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(blocker / "cache"))
    import torch

    assert "not writable" in (compile_cache_problem(torch.device("cpu")) or "")
    pred = Predictor(load_detector(tiny_fpi), PredictConfig(device="cpu", progress=False, compile=True))
    assert not any(isinstance(s, CompiledScorer) for s in pred._scorers.values())
    assert "--compile ignored" in caplog.text
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "cache"))
    assert compile_cache_problem(torch.device("cpu")) is None and os.path.isdir(tmp_path / "cache")


def test_predictor_runs_dark_foreground_slices(tiny_fpi: Path):
    """Given the foreground, a slice of the object that is dark throughout is run, and the crop keeps a dark
    region at the object's edge; without it the slice is skipped and the region cut off."""
    det = load_detector(tiny_fpi)
    shapes = _counting(det)
    pred = Predictor(det, PredictConfig(device="cpu", progress=False, crop=True, crop_margin=0))
    slices = np.zeros((3, 32, 32), np.float32)
    slices[0, 8:24, 8:16] = 0.6
    fg = np.zeros(slices.shape, bool)
    fg[0, 8:24, 8:32] = True  # dark at x >= 16
    fg[1, 12:20, 12:20] = True  # dark throughout
    pred.score_slices(det, slices)
    assert [s[0] for s in shapes] == [1] and shapes[0][-1] == 16
    shapes.clear()
    pixel, _ = pred.score_slices(det, slices, fg=fg)
    assert [s[0] for s in shapes] == [2] and shapes[0][-1] == 32
    assert not pixel[2].any()
