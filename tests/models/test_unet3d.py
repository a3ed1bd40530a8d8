"""The volumetric detector: network, sliding window, training, scoring through the harness, export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mood_detector.detector import TrainConfig, check_train_config, load_detector
from mood_detector.errors import MoodError, OptionError
from mood_detector.inference.predictor import PredictConfig, Predictor
from mood_detector.inference.sliding import axis_origins, gaussian_weights, sliding_window
from mood_detector.models.unet3d.detector import UNet3DDetector, UNet3DOptions
from mood_detector.models.unet3d.network import UNet3D, coordinate_channels
from mood_detector.training.api import train_detector
from tests.conftest import blob_volume, save_nifti

TINY = {"patch": "16", "base": "2", "levels": "3", "steps_per_epoch": "2", "patches_per_step": "2",
        "val_volumes": "1", "val_examples": "1"}


def test_coordinates_span_the_whole_volume():
    c = coordinate_channels(torch.tensor([[0, 8, 16]]), (8, 8, 16), (16, 16, 32), torch.float32,
                            torch.device("cpu"))
    assert c.shape == (1, 3, 8, 8, 16)
    assert c[0, 0, 0, 0, 0] == -1 and c[0, 1, 0, -1, 0] == 1 and c[0, 2, 0, 0, -1] == 1
    assert torch.all(c[0, 0, :, 3, 5] == c[0, 0, :, 0, 0])  # each channel varies along its own axis only


def test_network_keeps_the_shape_and_refuses_bad_settings():
    net = UNet3D(base=2, levels=3).eval()
    assert net(torch.rand(1, 4, 16, 8, 24)).shape == (1, 1, 16, 8, 24)
    with pytest.raises(ValueError):
        UNet3D(base=2, levels=1)


@pytest.mark.parametrize("opts, word", [({"families": "blend,spheres"}, "families"),
                                        ({"patch": "20"}, "patch"), ({"infer_patch": "12"}, "infer_patch"),
                                        ({"families": "rotate", "holdout": "rotate"}, "held out")])
def test_bad_options_are_refused(opts, word):
    with pytest.raises(ValueError, match=word):
        UNet3DOptions(**{k: (int(v) if k.endswith("patch") else v) for k, v in opts.items()})


def test_size_must_suit_the_network():
    cfg = TrainConfig(detector="unet3d", size=34, options={"levels": "3", "patch": "16"})
    with pytest.raises(OptionError, match="--size"):
        check_train_config(cfg)


def test_batch_size_is_not_a_unet3d_option():
    assert "batch_size" not in UNet3DDetector.train_fields


@settings(max_examples=40, deadline=None)
@given(shape=st.tuples(*[st.integers(4, 20)] * 3), patch=st.tuples(*[st.integers(2, 12)] * 3),
       step=st.sampled_from([0.25, 0.5, 1.0]), batch=st.integers(1, 3))
def test_sliding_window_reassembles_a_local_score(shape, patch, step, batch):
    """A score that is a function of each voxel alone comes back unchanged, whatever the patching: every voxel
    is covered and the Gaussian weights are normalised."""
    vol = np.random.default_rng(0).random(shape, dtype=np.float32)
    seen: list[tuple[int, ...]] = []

    def score(x: torch.Tensor, origins: torch.Tensor) -> torch.Tensor:
        seen.extend(tuple(o) for o in origins.tolist())
        return x[:, 0] * 2

    out = sliding_window(vol, patch, score, batch=batch, step=step)
    np.testing.assert_allclose(out, vol * 2, rtol=1e-5, atol=1e-6)
    assert len(seen) == len(set(seen))


def test_window_origins_reach_both_edges():
    assert axis_origins(10, 10, 0.5) == [0] and axis_origins(8, 10, 0.5) == [0]
    o = axis_origins(100, 32, 0.5)
    assert o[0] == 0 and o[-1] == 68 and max(np.diff(o)) <= 16
    w = gaussian_weights((5, 5, 5))
    assert w.max() == 1 and w.min() > 0 and w[2, 2, 2] == 1


def test_sliding_window_gives_patches_their_origin():
    """The coordinates a volumetric detector sees come from the origins: score = the origin's first entry."""
    out = sliding_window(np.zeros((12, 4, 4), np.float32), (4, 4, 4),
                         lambda x, o: o[:, :1, None, None].float().expand(-1, 4, 4, 4) + 0 * x[:, 0], step=1.0)
    assert out[0, 0, 0] == 0 and out[5, 0, 0] == 4 and out[11, 0, 0] == 8


@pytest.fixture(scope="module")
def tiny_unet3d(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("unet3d")
    data = root / "train"
    data.mkdir()
    for i, s in enumerate([40, 41, 42]):
        save_nifti(data / f"{i:05d}.nii.gz", blob_volume(seed=s))
    cfg = TrainConfig(detector="unet3d", kind="brain", size=32, epochs=2, device="cpu", seed=1, options=TINY)
    return train_detector(data, root / "m" / "unet3d.safetensors", cfg, root / "run", data_command="")


def test_training_keeps_the_best_epoch_on_held_out_families(tiny_unet3d: Path):
    det = load_detector(tiny_unet3d)
    assert isinstance(det, UNet3DDetector) and det.dims == 3 and det.size == 32
    extra = det.card.extra
    assert extra["val_families"] == "rotate,rescale" and 1 <= extra["val_epoch"] <= 2 and 0 <= extra["val_ap"] <= 1


def test_predictor_scores_a_volume_with_a_volumetric_detector(tiny_unet3d: Path):
    det = load_detector(tiny_unet3d)
    vol = np.pad(blob_volume(shape=(40, 40, 24), seed=3), 4)
    pred = Predictor(det, PredictConfig(tasks=("pixel", "sample"), device="cpu", progress=False))
    res = pred.score_volume(vol.copy())
    assert res.pixel.shape == vol.shape and res.pixel.dtype == np.float32
    assert 0 <= res.pixel.min() and res.pixel.max() <= 1 and 0 <= res.sample <= 1
    assert res.pixel[0, 0, 0] == 0  # background outside the foreground
    assert res.slice_scores.shape == (32,)
    mirrored = Predictor(det, PredictConfig(tasks=("pixel",), device="cpu", progress=False, mirror="0"))
    assert np.isfinite(mirrored.score_volume(vol.copy()).pixel).all()


def test_adaptation_is_refused_by_name_for_a_volumetric_detector(tiny_unet3d: Path):
    det = load_detector(tiny_unet3d)
    with pytest.raises(MoodError, match="volumetric"):
        Predictor(det, PredictConfig(device="cpu", adapt="finetune")).adapt_for(det)
    assert Predictor(det, PredictConfig(device="cpu", adapt="auto")).adapt_for(det) == "none"


def test_export_from_a_run_folder(tiny_unet3d: Path, tmp_path: Path):
    det = UNet3DDetector.from_checkpoint(tiny_unet3d.parents[1] / "run")
    final = load_detector(tiny_unet3d)
    assert det.card.extra["val_epoch"] == final.card.extra["val_epoch"]
    for k, v in final.state_tensors().items():
        assert torch.equal(det.state_tensors()[k], v), k

