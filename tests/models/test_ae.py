"""The baseline reconstruction autoencoder: network shapes, scores, training, checkpoint/resume, CLI."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from mood_detector.cli import main
from mood_detector.detector import REGISTRY, TrainConfig, detector_class, load_detector
from mood_detector.io.nifti import list_volumes
from mood_detector.models.ae.detector import AEDetector
from mood_detector.models.ae.network import ConvAutoencoder
from mood_detector.training.loop import LossLog


@pytest.mark.parametrize("arch,size", [("brain", 32), ("brain", 40), ("abdom", 48)])
def test_network_shapes_and_range(arch, size):
    net = ConvAutoencoder(arch, width=0.125, latent=4).eval()
    x = torch.rand(2, 1, size, size)
    with torch.no_grad():
        y = net(x)
    assert y.shape == x.shape and 0 <= float(y.min()) and float(y.max()) <= 1
    n_conv = sum(isinstance(m, torch.nn.Conv2d) for m in net.modules())
    stages = 5 if arch == "brain" else 6
    assert n_conv == 1 + 2 * stages + 1 + 1 + 2 * (stages - 1) + 1  # FPI-comparable depth


def _cfg(**kw) -> TrainConfig:
    base = dict(detector="ae", kind="brain", size=32, width=0.125, epochs=1, batch_size=8, device="cpu",
                max_batches_per_pair=1, options={"latent": "4"})
    base.update(kw)
    return TrainConfig(**base)


def test_registered_fit_score_save_load_resume(volume_dir, tmp_path):
    assert detector_class("ae") is AEDetector and "ae" in REGISTRY
    files = list_volumes(volume_dir)
    det = AEDetector.fit(files, _cfg(), tmp_path / "run")
    assert det.card.extra["latent"] == 4 and det.card.detector == "ae"
    x = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        s = det.score_slices(x)
        recon = det.reconstruct(x)
    assert s.slice is None and s.pixel.shape == (3, 32, 32)
    torch.testing.assert_close(s.pixel, (x - recon).abs()[:, 0].clamp(0, 1))
    path = det.save(tmp_path / "ae.safetensors")
    again = load_detector(path)
    with torch.no_grad():
        torch.testing.assert_close(again.score_slices(x).pixel, s.pixel)
    # same seed on CPU -> same weights
    det2 = AEDetector.fit(files, _cfg(), tmp_path / "run2")
    for a, b in zip(det.net.state_dict().values(), det2.net.state_dict().values()):
        torch.testing.assert_close(a, b)
    # resume: a second epoch continues from the checkpoint and appends to the loss log
    AEDetector.fit(files, _cfg(epochs=2, resume=True), tmp_path / "run")
    rows = LossLog(tmp_path / "run").rows()
    assert [r["epoch"] for r in rows] == ["1", "2"] and all(float(r["loss"]) > 0 for r in rows)


def test_train_cli_and_bad_option(volume_dir, tmp_path):
    res = CliRunner().invoke(main, ["train", "-i", str(volume_dir), "-o", str(tmp_path / "w" / "ae.safetensors"),
                                    "--detector", "ae", "--size", "32", "--width", "0.125", "--epochs", "1",
                                    "--batch-size", "8", "--device", "cpu", "--max-batches-per-pair", "1",
                                    "--opt", "latent=2", "--opt", "error_scale=2"])
    assert res.exit_code == 0, res.output
    det = load_detector(tmp_path / "w" / "ae.safetensors")
    assert det.card.extra == {**det.card.extra, "latent": 2, "error_scale": 2.0} and det.error_scale == 2.0
    with pytest.raises(ValueError, match="latent"):
        AEDetector.card_for(_cfg(options={"latent": "0"}), 1)
