"""FPI's training resumed inside its SWA phase ends with the weights of the uninterrupted run."""

from pathlib import Path

import torch

from mood_detector.detector import TrainConfig, load_detector
from mood_detector.training.api import train_detector
from mood_detector.training.loop import LossLog, load_checkpoint
from tests.conftest import blob_volume, save_nifti


def test_resume_inside_the_swa_phase_gives_the_uninterrupted_weights(tmp_path: Path):
    data = tmp_path / "train"
    data.mkdir()
    for i in range(3):
        save_nifti(data / f"{i:05d}.nii.gz", blob_volume(seed=140 + i))
    kw = dict(kind="brain", size=32, width=0.125, epochs=1, batch_size=8, device="cpu", max_batches_per_pair=2)
    full = train_detector(data, tmp_path / "full.safetensors", TrainConfig(**kw, options={"swa_epochs": "2"}))
    # one SWA epoch (its checkpoint holds the average so far), then resumed with a second one
    train_detector(data, tmp_path / "part.safetensors", TrainConfig(**kw, options={"swa_epochs": "1"}))
    assert load_checkpoint(tmp_path / "part_run")["epoch"] == 2
    part = train_detector(data, tmp_path / "part.safetensors",
                          TrainConfig(**kw, resume=True, options={"swa_epochs": "2"}))
    tf, tp = load_detector(full).state_tensors(), load_detector(part).state_tensors()
    assert tf.keys() == tp.keys()
    assert all(torch.equal(tf[k], tp[k]) for k in tf)
    assert [r["phase"] for r in LossLog(tmp_path / "part_run").rows()] == ["train", "swa", "swa"]
