"""The one sliding window (inference/sliding.py): tiles, empty-patch skipping, crop, batching, accumulation, and
slice detectors going through it as patches of depth 1."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mood_detector.detector import SliceScores
from mood_detector.inference.predictor import PredictConfig, Predictor, describe_scoring
from mood_detector.inference.sliding import Scored, Tiles, Window, detector_scorer, score_window
from mood_detector.preprocess import to_slices
from tests.conftest import StandIn, stand_in_card

shapes = st.tuples(*[st.integers(1, 12)] * 3)


def _cover(tiles: Tiles) -> np.ndarray:
    count = np.zeros(tiles.shape, np.int32)
    for o in tiles.origins:
        count[tiles.box(o)] += 1
    return count


@settings(max_examples=60, deadline=None)
@given(shape=shapes)
def test_depth_one_tiles_cover_every_voxel_exactly_once(shape):
    tiles = Tiles.of(shape, (1, shape[1], shape[2]))
    assert not tiles.overlapping and tiles.planes
    assert (_cover(tiles) == 1).all()
    assert tiles.origins[:, 0].tolist() == list(range(shape[0]))  # the slices, in order


@settings(max_examples=60, deadline=None)
@given(shape=shapes, patch=st.tuples(*[st.integers(1, 8)] * 3), step=st.sampled_from([0.25, 0.5, 1.0]))
def test_tiles_cover_every_voxel_and_overlap_only_when_they_say_so(shape, patch, step):
    tiles = Tiles.of(shape, patch, step)
    count = _cover(tiles)
    assert count.min() >= 1
    assert tiles.overlapping == bool(count.max() > 1)


def _local(x: torch.Tensor, origins: torch.Tensor) -> torch.Tensor:
    return x[:, 0] * 3  # a score of each voxel alone, 0 where the input is 0


@settings(max_examples=60, deadline=None)
@given(shape=st.tuples(*[st.integers(2, 16)] * 3), depth=st.sampled_from([1, 2, 5]), step=st.sampled_from([0.5, 1.0]),
       skip=st.booleans(), stride=st.sampled_from([0, 1, 4]), margin=st.integers(0, 3), batch=st.integers(1, 4),
       seed=st.integers(0, 2**16))
def test_a_local_score_comes_back_whatever_the_window(shape, depth, step, skip, stride, margin, batch, seed):
    """Blending weights normalise, skipped patches and the area outside the crop are background (a local score
    of 0 there is 0), so the window gives back the local score of every voxel."""
    rng = np.random.default_rng(seed)
    vol = (rng.random(shape, dtype=np.float32) * (rng.random(shape) < 0.1)).astype(np.float32)
    vol[:, : shape[1] // 2] = 0  # empty slices and a box to crop to
    window = Window((depth, shape[1], max(1, shape[2] - 1)), step, skip, stride, margin)
    res = score_window(vol, window, _local, batch)
    np.testing.assert_allclose(res.pixel, vol * 3, rtol=1e-5, atol=1e-6)


def test_slices_are_written_straight_into_the_output_view():
    """Depth-1 patches into a slice view of a Fortran-ordered map: no accumulator, no weight volume, no copy."""
    vol = np.random.default_rng(0).random((64, 64, 64), dtype=np.float32)
    out = np.zeros(vol.shape, np.float32, order="F")
    tracemalloc.start()
    res = score_window(to_slices(vol, 2), Window((1, 64, 64)), _local, batch=4, out=to_slices(out, 2))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert res.pixel.base is not None and np.shares_memory(res.pixel, out)
    assert peak < vol.nbytes / 4  # a few batches of slices, not a volume (blending would take two)
    np.testing.assert_allclose(out, vol * 3, rtol=1e-6)


def test_empty_patches_are_not_run_and_the_foreground_counts():
    vol = np.zeros((6, 8, 8), np.float32)
    vol[[1, 2, 4]] = 0.5
    fg = np.zeros(vol.shape, bool)
    fg[5, 2, 2] = True  # dark throughout, but the object's
    seen: list[int] = []

    def score(x, origins):
        seen.extend(origins[:, 0].tolist())
        return Scored(x[:, 0] + 1, torch.ones(len(x)))

    res = score_window(vol, Window((1, 8, 8), skip_empty=True), score, batch=8, foreground=fg)
    assert seen == [1, 2, 4, 5] and res.run.tolist() == [1, 2, 4, 5]
    assert res.patch.tolist() == [0, 1, 1, 0, 1, 1]
    assert not res.pixel[[0, 3]].any() and (res.pixel[[1, 2, 4, 5]] >= 1).all()


def test_batches_are_consecutive_runs_of_the_patches_to_run():
    vol = np.zeros((10, 4, 4), np.float32)
    vol[[0, 1, 2, 5, 6, 9]] = 1
    batches: list[list[int]] = []

    def score(x, origins):
        batches.append(origins[:, 0].tolist())
        return x[:, 0]

    score_window(vol, Window((1, 4, 4), skip_empty=True), score, batch=4)
    assert batches == [[0, 1, 2, 5], [6, 9]]


def test_out_of_memory_halves_the_batch_and_retries():
    vol = np.ones((7, 4, 4), np.float32)
    sizes: list[int] = []

    def score(x, origins):
        sizes.append(len(x))
        if len(x) > 2:
            raise torch.cuda.OutOfMemoryError("too big")
        return x[:, 0]

    res = score_window(vol, Window((1, 4, 4)), score, batch=8)
    assert res.batch == 2 and sizes == [7, 4, 2, 2, 2, 1]
    assert (res.pixel == 1).all()

    def never(x, origins):
        raise torch.cuda.OutOfMemoryError("too big")

    with pytest.raises(torch.cuda.OutOfMemoryError):  # one patch at a time and still too big: passed on
        score_window(vol, Window((1, 4, 4)), never, batch=2)


def test_crop_is_stride_aligned_and_origins_follow_it():
    vol = np.zeros((2, 32, 32), np.float32)
    vol[:, 17:20, 9:11] = 1
    seen = []

    def score(x, origins):
        seen.append((tuple(x.shape), origins.tolist()))
        return x[:, 0]

    res = score_window(vol, Window((1, 32, 32), crop_stride=8, crop_margin=0), score, batch=2)
    assert seen == [((2, 1, 1, 8, 8), [[0, 16, 8], [1, 16, 8]])]
    np.testing.assert_array_equal(res.pixel, vol)


class Ruled(StandIn):
    """A slice detector whose pixel scores are its input; slice scores by its rule, or its own."""

    name = "ruled"
    own = False

    def score_slices(self, x):
        return SliceScores(pixel=x[:, 0] * 2, slice=torch.full((len(x),), 0.25) if self.own else None)


def test_a_slice_detector_is_a_depth_one_window():
    det = Ruled(stand_in_card("ruled", size=8, extra={"slice_score": "mean"}))
    assert det.patch_size == (1, 8, 8)
    vol = np.zeros((3, 8, 8), np.float32)
    vol[1, :2, :2] = 0.3
    res = score_window(vol, Window(det.patch_size), detector_scorer(det))
    np.testing.assert_allclose(res.patch, [0, 4 * 0.6 / 64, 0])  # the mean over the whole slice
    np.testing.assert_allclose(res.pixel, vol * 2)
    det.own = True
    assert score_window(vol, Window(det.patch_size), detector_scorer(det)).patch.tolist() == [0.25] * 3


def test_the_predictor_reports_what_it_scores(caplog):
    caplog.set_level("INFO")
    det = Ruled(stand_in_card("ruled", size=8))
    Predictor(det, PredictConfig(device="cpu", progress=False))
    assert "slices along axis 2 (patches of 1x8x8) of the volume resampled to 8^3" in caplog.text
    # a card that records them (saved by this version) is what is reported
    det.card.extra.update(patch_size=[1, 8, 8], network_size=8)
    assert "patches of 1x8x8" in describe_scoring(det)


def test_saving_records_the_patch_and_the_network_size(tmp_path):
    from mood_detector.weights import load_weights

    det = Ruled(stand_in_card("ruled", size=8))
    det.save(tmp_path / "r.safetensors")
    _, card = load_weights(tmp_path / "r.safetensors")
    assert card.extra["patch_size"] == [1, 8, 8] and card.extra["network_size"] == 8
