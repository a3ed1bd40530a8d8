"""The fine-tune's robust rule (slices the model as trained scores as outliers are left out) and its guard
(the weights as trained come back where the task loss on held-out slices rises): mood_detector/inference/adapt.py."""

from pathlib import Path

import numpy as np
import pytest
import torch

from mood_detector.detector import load_detector
from mood_detector.inference import adapt as adapt_module
from mood_detector.inference.adapt import (FinetuneConfig, drop_outlier_slices, finetune_stacks, hold_out,
                                           outlier_threshold, pick_slices)
from tests.conftest import blob_volume


def planted_folder(n: int = 4) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``n`` 32^3 heads (intensities up to 0.8); every other one carries a large sphere of intensity 1 (radius 9
    voxels, a quarter of the edge): (volumes, the spheres' masks)."""
    vols, masks = [], []
    z, y, x = np.ogrid[:32, :32, :32]
    for i in range(n):
        v = (blob_volume(seed=90 + i) * 0.8).astype(np.float32)
        m = np.zeros(v.shape, bool)
        if i % 2 == 0:
            m = ((z - 16) ** 2 + (y - 14) ** 2 + (x - 16) ** 2 <= 81) & (v > 0)
            v[m] = 1.0
        vols.append(v)
        masks.append(m)
    return vols, masks


def bright_fraction_scores(det, stacks, device="cpu", batch_size=16):
    """A model as trained that sees the spheres: slice score = the fraction of its pixels at intensity 1."""
    return [(s >= 0.99).reshape(len(s), -1).mean(1) for s in stacks]


def inside_score(det, vols: list[np.ndarray], masks: list[np.ndarray]) -> float:
    """Mean pixel score inside the planted spheres (slices along axis 2)."""
    scores = []
    with torch.no_grad():
        for v, m in zip(vols, masks):
            if m.any():
                pixel = det.score_slices(torch.from_numpy(np.moveaxis(v, 2, 0).copy())[:, None]).pixel.numpy()
                scores.append(np.moveaxis(pixel, 0, 2)[m].mean())
    return float(np.mean(scores))


def test_outlier_threshold_is_robust_and_ignores_rounding():
    scores = np.r_[np.zeros(20), 0.01, 5.0]
    assert 0.01 < outlier_threshold(scores, 2.0) < 5.0  # the MAD is 0: its floor keeps rounding differences in
    spread = np.r_[np.linspace(-1, 1, 21), 9.0]  # one far outlier moves the median and the MAD little
    med = np.median(spread)
    assert outlier_threshold(spread, 2.0) == pytest.approx(med + 2 * np.median(np.abs(spread - med)))
    assert outlier_threshold(spread, 2.0) < 1.5


def test_outlier_slices_are_the_planted_ones(tiny_fpi: Path, monkeypatch):
    monkeypatch.setattr(adapt_module, "stack_slice_scores", bright_fraction_scores)
    vols, masks = planted_folder()
    stacks = [pick_slices(v, [2], 16) for v in vols]
    kept, dropped = drop_outlier_slices(load_detector(tiny_fpi), stacks, k=2.0)
    assert dropped > 0
    assert all(not (s >= 0.99).any() for s in kept)  # every slice through a sphere is left out ...
    assert sum(len(s) for s in kept) == sum(len(s) for s in stacks) - dropped  # ... and no other


def test_robust_fine_tune_does_not_learn_the_planted_anomalies(tiny_fpi: Path, monkeypatch):
    """Fine-tuned on a folder whose scans carry large anomalies, the robust rule leaves their slices out; the
    plain fine-tune learns them as normal tissue and scores them lower."""
    monkeypatch.setattr(adapt_module, "stack_slice_scores", bright_fraction_scores)
    vols, masks = planted_folder()
    stacks = [pick_slices(v, [2], 16) for v in vols]
    scores = {}
    for name, k in (("plain", None), ("robust", 2.0)):
        det = load_detector(tiny_fpi)
        out = finetune_stacks(det, stacks, FinetuneConfig(steps=200, batch_size=8, lr=1e-3, outlier_k=k,
                                                          guard=False))
        assert out.changed and (out.dropped > 0) == (k is not None)
        scores[name] = inside_score(det, vols, masks)
    assert scores["robust"] >= scores["plain"], scores


def test_guard_reverts_a_harmful_fine_tune(tiny_fpi: Path, caplog):
    vols = [blob_volume(seed=s) for s in (5, 6, 7)]
    stacks = [pick_slices(v, [2], 32) for v in vols]
    harmful = FinetuneConfig(steps=5, batch_size=8, lr=10.0)  # a learning rate that wrecks the model
    det = load_detector(tiny_fpi)
    before = {k: v.clone() for k, v in det.state_tensors().items()}
    out = finetune_stacks(det, stacks, harmful)
    assert out.reverted and not out.changed and out.held_out > 0
    assert not out.loss_after <= out.loss_before
    assert all(torch.equal(before[k], v) for k, v in det.state_tensors().items())
    assert "reverted to the weights as trained" in caplog.text
    unguarded = load_detector(tiny_fpi)  # the same fine-tune without the guard does change the model
    finetune_stacks(unguarded, stacks, FinetuneConfig(steps=5, batch_size=8, lr=10.0, guard=False))
    assert any(not torch.equal(before[k], v) for k, v in unguarded.state_tensors().items())


def test_guard_keeps_a_fine_tune_that_lowers_the_task_loss(tiny_fpi: Path):
    vols = [blob_volume(seed=s) for s in (5, 6, 7)]
    stacks = [pick_slices(v, [2], 32) for v in vols]
    det = load_detector(tiny_fpi)
    out = finetune_stacks(det, stacks, FinetuneConfig(steps=60, batch_size=8, lr=1e-3))
    assert out.changed and out.loss_after <= out.loss_before


def test_hold_out_takes_at_most_a_quarter_of_each_stack():
    stacks = [np.zeros((n, 4, 4), np.float32) for n in (3, 8, 64)]
    train, held = hold_out(stacks, 16)
    assert [len(s) for s in train] == [3, 6, 58] and [len(s) for s in held] == [2, 6]
