"""CUDA-only checks, skipped without a GPU: ``pytest -m cuda tests/cuda`` (step a of scripts/gpu_check.sh).

They cover what the CPU suite cannot: bf16 autocast in training, scores on the GPU against the CPU's, the
automatic batch size from free GPU memory, the test-time fine-tune on the GPU and the NCCL backend choice.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import blob_volume, save_nifti

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device (GPU check only)")]


def test_nccl_is_the_backend_for_the_gpu():
    from mood_detector import distributed

    device = distributed.device_for_rank("auto", distributed.DistEnv())
    assert device.type == "cuda"
    assert distributed.backend_for(device) == "nccl"
    assert torch.distributed.is_nccl_available()


def train_tiny_nsa(root: Path, device: str, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[tuple]]:
    """A 3-step nsa run on four 32^3 blob volumes on ``device``; returns the run folder and, for every time
    the training loop entered its autocast context, (device type, autocast enabled on CUDA, its dtype)."""
    import mood_detector.models.fpi.detector as fpi
    from mood_detector.detector import TrainConfig
    from mood_detector.training.api import train_detector

    data = root / "train"
    data.mkdir()
    for i in range(4):
        save_nifti(data / f"{i:05d}.nii.gz", blob_volume(seed=20 + i))
    seen: list[tuple] = []
    real = fpi.autocast

    @contextlib.contextmanager
    def spy(dev: torch.device, enabled: bool = True):
        with real(dev, enabled):
            seen.append((torch.device(dev).type, torch.is_autocast_enabled("cuda"),
                         torch.get_autocast_dtype("cuda")))
            yield

    monkeypatch.setattr(fpi, "autocast", spy)
    cfg = TrainConfig(detector="nsa", kind="brain", size=32, width=0.125, batch_size=8, device=device, amp=True,
                      options={"steps": "3", "probe_volumes": "0", "final_bn": "0", "train_axes": "model"})
    train_detector(data, root / "nsa.safetensors", cfg)
    return root / "nsa_run", seen


def test_training_steps_run_under_bf16_autocast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    run, seen = train_tiny_nsa(tmp_path, "cuda", monkeypatch)
    assert seen, "the training loop never entered its autocast context"
    assert all(s == ("cuda", True, torch.bfloat16) for s in seen), seen
    with (run / "loss_log.csv").open(newline="") as f:
        losses = [float(r["loss"]) for r in csv.DictReader(f)]
    assert losses and all(math.isfinite(v) for v in losses)
    assert (tmp_path / "nsa.safetensors").stat().st_size > 0


def test_convolutions_run_in_bf16_under_the_training_autocast():
    """Every convolution of the nsa network computes in bf16; the loss and the weights' gradients are float32
    (the output bias, a float32 parameter, promotes the logits to float32)."""
    from mood_detector.detector import TrainConfig
    from mood_detector.models.nsa.detector import NSADetector
    from mood_detector.training.loop import autocast

    det = NSADetector.build(NSADetector.card_for(TrainConfig(detector="nsa", size=32, width=0.125), 4))
    det.to(torch.device("cuda"))
    convs = [m for m in det.net.modules() if isinstance(m, torch.nn.Conv2d)]
    dtypes: list[torch.dtype] = []
    for conv in convs:
        conv.register_forward_hook(lambda _m, _i, out: dtypes.append(out.dtype))
    x = torch.rand(4, 1, 32, 32, device="cuda").contiguous(memory_format=torch.channels_last)
    with autocast(torch.device("cuda"), True):
        logits = det.net(x)
    assert convs and len(dtypes) >= len(convs) and set(dtypes) == {torch.bfloat16}, dtypes
    loss = det.loss(logits, torch.rand(4, 32, 32, device="cuda"))
    loss.backward()
    assert loss.dtype == torch.float32 and math.isfinite(float(loss))
    grads = [p.grad for p in det.net.parameters() if p.grad is not None]
    assert grads and all(g.dtype == torch.float32 and bool(torch.isfinite(g).all()) for g in grads)


@pytest.mark.parametrize("amp,max_diff,mean_diff", [(False, 1e-2, 1e-3), (True, 0.1, 1e-2)])
def test_gpu_scores_match_the_cpu(tiny_fpi: Path, amp: bool, max_diff: float, mean_diff: float):
    """fp32 on the GPU (TF32 convolutions) and bf16 autocast against the CPU, both at full field of view
    (the CPU's crop is turned off: the GPU does not crop)."""
    from mood_detector.detector import load_detector
    from mood_detector.inference.predictor import PredictConfig, Predictor

    data = blob_volume(seed=5)
    ref = Predictor(load_detector(tiny_fpi), PredictConfig(device="cpu", crop=False, progress=False)
                    ).score_volume(data.copy())
    got = Predictor(load_detector(tiny_fpi), PredictConfig(device="cuda", amp=amp, progress=False)
                    ).score_volume(data.copy())
    diff = np.abs(got.pixel - ref.pixel)
    assert got.pixel.shape == ref.pixel.shape and np.isfinite(got.pixel).all()
    assert float(diff.max()) <= max_diff and float(diff.mean()) <= mean_diff, (float(diff.max()), float(diff.mean()))
    assert abs(got.sample - ref.sample) <= max_diff


def test_automatic_batch_size_from_gpu_memory(tiny_fpi: Path):
    from mood_detector.detector import load_detector
    from mood_detector.inference.accel import GPU_BATCH_CAP
    from mood_detector.inference.predictor import PredictConfig, Predictor

    pred = Predictor(load_detector(tiny_fpi), PredictConfig(device="cuda", batch_size=0, progress=False))
    pred.score_volume(blob_volume(seed=6))
    (bs,) = pred.batch_sizes.values()
    assert 1 <= bs <= GPU_BATCH_CAP and bs & (bs - 1) == 0  # a power of two


def test_finetune_before_scoring_on_the_gpu(tiny_fpi: Path, volume_dir: Path, tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture):
    from mood_detector.inference.api import predict_folder
    from mood_detector.inference.predictor import PredictConfig

    out = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="mood_detector"):
        rep = predict_folder(volume_dir, out, PredictConfig(tasks=("sample",), device="cuda", adapt="finetune",
                                                            adapt_steps=3, progress=False), weights=tiny_fpi)
    assert rep.exit_code == 0 and len(rep.scored) == 4
    assert "--adapt finetune: 3 steps" in caplog.text
    for txt in out.glob("*.txt"):
        assert 0.0 <= float(txt.read_text()) <= 1.0
