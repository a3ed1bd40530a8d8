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
    for key in ("detector", "arch", "width", "kind", "slice_axis", "mode", "training_data", "epochs",
                "seed", "package_version", "commit"):
        assert key in card
    assert card["extra"]["classes"] == 5 and card["mode"] == "discrete"


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
    cfg = TrainConfig(kind="brain", size=32, width=0.125, epochs=1, batch_size=8, device="cpu",
                      max_batches_per_pair=2, options={"swa_epochs": "2"})
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


def test_all_axes_slices_each_pair_along_a_random_axis(tmp_path: Path):
    """``all_axes``: a pair's batches are slices along one of the three axes, in either in-plane orientation;
    all three axes occur; paired slices stay paired (same axis, same index, same orientation)."""
    import numpy as np

    from mood_detector.training.data import PairBatches, VolumeStore
    from tests.conftest import save_nifti

    n = 16
    grid = np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij")).astype(np.float32)
    code = (1 + grid[0] + n * grid[1] + n * n * grid[2]) / n**3  # every voxel's value names its position
    for i in range(2):
        save_nifti(tmp_path / f"{i}.nii.gz", code)
    store = VolumeStore(sorted(tmp_path.glob("*.nii.gz")), n, slice_axis=2)
    vol = store.slices(0).astype(np.float32)
    seen = set()
    for seed in range(12):
        ds = PairBatches(store, [(0, 1)], batch_size=4, seed=seed, max_batches_per_pair=1, all_axes=True)
        a, b = next(iter(ds))
        assert torch.equal(a, b)
        s = a[0].numpy()
        for axis in range(3):
            planes = np.moveaxis(vol, axis, 0)
            for k in range(n):
                if np.array_equal(s, planes[k]) or np.array_equal(s, planes[k].T):
                    seen.add((axis, np.array_equal(s, planes[k])))
    assert {axis for axis, _ in seen} == {0, 1, 2} and {o for _, o in seen} == {True, False}
