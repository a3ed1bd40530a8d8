import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from mood_detector.detector import TrainConfig, load_detector
from mood_detector.training.api import train_detector
from mood_detector.training.loop import LossLog
from tests.conftest import blob_volume, save_nifti


def _data(tmp_path: Path, n: int = 4) -> Path:
    d = tmp_path / "train"
    d.mkdir()
    for i in range(n):
        save_nifti(d / f"{i:05d}.nii.gz", blob_volume(seed=100 + i))
    return d


def test_short_training_loss_falls(tmp_path: Path):
    d = _data(tmp_path)
    cfg = TrainConfig(kind="brain", size=32, width=0.25, epochs=6, batch_size=16, device="cpu", lr=2e-3)
    out = train_detector(d, tmp_path / "w" / "fpi.safetensors", cfg)
    rows = LossLog(tmp_path / "w" / "fpi_run").rows()
    losses = [float(r["loss"]) for r in rows]
    assert len(losses) == 6
    assert np.mean(losses[-2:]) < 0.8 * np.mean(losses[:2])
    card = json.loads(out.with_suffix(".json").read_text())
    for key in ("detector", "arch", "width", "kind", "slice_axis", "mode", "classes", "training_data", "epochs",
                "seed", "package_version", "commit"):
        assert key in card
    assert card["classes"] == 5 and card["mode"] == "discrete"


def test_fixed_seed_repeatable_and_resume(tmp_path: Path):
    d = _data(tmp_path, 3)
    kw = dict(kind="brain", size=32, width=0.125, batch_size=8, device="cpu", max_batches_per_pair=2)
    a = train_detector(d, tmp_path / "a.safetensors", TrainConfig(epochs=2, **kw))
    b = train_detector(d, tmp_path / "b.safetensors", TrainConfig(epochs=2, **kw))
    ta, tb = load_detector(a).state_tensors(), load_detector(b).state_tensors()
    assert all(torch.equal(ta[k], tb[k]) for k in ta)
    # one epoch, then resume to two: identical to the uninterrupted run
    train_detector(d, tmp_path / "c.safetensors", TrainConfig(epochs=1, **kw))
    c = train_detector(d, tmp_path / "c.safetensors", TrainConfig(epochs=2, resume=True, **kw))
    tc = load_detector(c).state_tensors()
    assert all(torch.allclose(ta[k].float(), tc[k].float()) for k in ta)


def test_swa_averages_epoch_minima(tmp_path: Path):
    """The SWA model is the mean of the weights at each SWA epoch's end (torch.optim.swa_utils)."""
    net = nn.Linear(3, 1)
    snapshots = []
    swa = AveragedModel(net)
    for k in range(3):
        with torch.no_grad():
            net.weight.fill_(float(k + 1))
        snapshots.append(net.weight.detach().clone())
        swa.update_parameters(net)
    assert torch.allclose(swa.module.weight, torch.stack(snapshots).mean(0))
    # and the training loop's SWA phase runs end to end, recording its phase in the loss log
    d = _data(tmp_path, 3)
    cfg = TrainConfig(kind="brain", size=32, width=0.125, epochs=1, swa_epochs=2, batch_size=8, device="cpu",
                      max_batches_per_pair=2)
    train_detector(d, tmp_path / "s.safetensors", cfg)
    phases = [r["phase"] for r in LossLog(tmp_path / "s_run").rows()]
    assert phases == ["train", "swa", "swa"]


def test_final_bn_recomputes_only_the_running_statistics(tmp_path: Path):
    d = _data(tmp_path, 4)
    kw = dict(kind="brain", size=32, width=0.125, batch_size=8, device="cpu", max_batches_per_pair=2, epochs=1)
    on = load_detector(train_detector(d, tmp_path / "on.safetensors", TrainConfig(**kw))).state_tensors()
    off = load_detector(train_detector(d, tmp_path / "off.safetensors",
                                       TrainConfig(options={"final_bn": "0"}, **kw))).state_tensors()
    stats = [k for k in on if k.endswith(("running_mean", "running_var"))]
    learned = [k for k in on if k not in stats and not k.endswith("num_batches_tracked")]
    assert stats and learned
    assert all(torch.equal(on[k], off[k]) for k in learned)          # the same trained weights ...
    assert any(not torch.allclose(on[k], off[k]) for k in stats)      # ... with other BatchNorm statistics
