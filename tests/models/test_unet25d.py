"""The 2.5D detector: a 2D U-Net per slice with neighbours and coordinates, trained and scored like unet3d."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mood_detector.detector import TrainConfig, load_detector
from mood_detector.inference.predictor import PredictConfig, Predictor
from mood_detector.models.unet25d.detector import UNet25DDetector, UNet25DOptions
from mood_detector.models.unet25d.network import SlabUNet
from mood_detector.training.api import train_detector
from tests.conftest import blob_volume, save_nifti


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("context", [0, 1, 2])
def test_a_slice_score_sees_only_its_slab(axis: int, context: int):
    """Changing one slice changes the scores of the slices within ``context`` of it and of no other."""
    net = SlabUNet(base=2, levels=2, context=context, axis=axis).eval()
    x = torch.randn(1, 4, 8, 10, 12)
    changed = x.clone()
    index = [slice(None)] * 5
    index[1], index[2 + axis] = 0, 4
    changed[tuple(index)] += 1.0
    with torch.no_grad():
        diff = (net(changed) - net(x)).abs()
    assert diff.shape == (1, 1, 8, 10, 12)
    per_slice = diff.amax(dim=[d for d in range(5) if d != 2 + axis])
    assert (per_slice > 0).nonzero().ravel().tolist() == list(range(4 - context, 5 + context))


def test_the_coordinates_reach_the_network():
    net = SlabUNet(base=2, levels=2, context=1, axis=2).eval()
    x = torch.randn(1, 4, 8, 8, 8)
    moved = x.clone()
    moved[:, 1:] += 0.5
    with torch.no_grad():
        assert not torch.allclose(net(x), net(moved))


def test_bad_context_is_refused():
    with pytest.raises(ValueError, match="context"):
        UNet25DOptions(context=-1)


def test_trains_and_scores_through_the_harness(tmp_path: Path):
    data = tmp_path / "train"
    data.mkdir()
    for i, s in enumerate([40, 41, 42]):
        save_nifti(data / f"{i:05d}.nii.gz", blob_volume(seed=s))
    options = {"patch": "16", "base": "2", "levels": "3", "steps_per_epoch": "2", "patches_per_step": "2",
               "val_volumes": "1", "val_examples": "1", "context": "1"}
    cfg = TrainConfig(detector="unet25d", kind="brain", size=32, epochs=1, device="cpu", seed=1, options=options)
    weights = train_detector(data, tmp_path / "m" / "unet25d.safetensors", cfg, tmp_path / "run", data_command="")
    det = load_detector(weights)
    assert isinstance(det, UNet25DDetector) and det.dims == 3
    assert isinstance(det.net, SlabUNet) and det.net.context == 1 and det.net.axis == det.slice_axis
    vol = np.pad(blob_volume(shape=(40, 40, 24), seed=3), 4)
    res = Predictor(det, PredictConfig(tasks=("pixel", "sample"), device="cpu", progress=False)).score_volume(vol)
    assert res.pixel.shape == vol.shape and 0 <= res.pixel.min() and res.pixel.max() <= 1
    assert res.pixel[0, 0, 0] == 0
