"""Test-time adaptation (mood_detector/inference/adapt.py: bn, finetune, the auto rule of the predictor's
adaptation policy) and the background rule of the predictor."""

from pathlib import Path

import numpy as np
import pytest
import torch

from mood_detector.detector import load_detector
from mood_detector.inference.adapt import Adaptation, adapt_batchnorm, batchnorm_layers, pick_slices
from mood_detector.inference.predictor import PredictConfig, Predictor
from mood_detector.preprocess import foreground_mask
from tests.conftest import blob_volume, save_nifti


def test_pick_slices_spreads_over_nonempty_slices_and_axes():
    vol = np.zeros((20, 20, 20), np.float32)
    vol[5:15, 5:15, 5:15] = 1.0
    x = pick_slices(vol, [2, 0], per_volume=8)
    assert x.shape == (8, 20, 20) and (x.reshape(8, -1).max(1) > 0).all()
    assert len(pick_slices(np.zeros((8, 8, 8), np.float32), [0])) == 0


def test_adapt_batchnorm_moves_statistics_to_the_inputs(tiny_fpi: Path):
    det = load_detector(tiny_fpi)
    layers = batchnorm_layers(det)
    assert layers
    before = [m.running_mean.clone() for m in layers]
    weights = {k: v.clone() for k, v in det.net.state_dict().items() if "running" not in k and "num_batches" not in k}
    bright = [np.clip(blob_volume(seed=s) * 3.0, 0, 1) for s in (1, 2)]
    n = adapt_batchnorm(det, bright, [det.slice_axis], batch_size=4)
    assert n > 0
    assert any(not torch.allclose(b, m.running_mean) for b, m in zip(before, layers))
    assert all(not m.training and m.momentum is not None for m in layers)
    for k, v in det.net.state_dict().items():  # the learned weights are untouched
        if k in weights:
            assert torch.equal(v, weights[k])
    again = [m.running_mean.clone() for m in layers]
    adapt_batchnorm(det, bright, [det.slice_axis], batch_size=4)  # a fixed sample: the same statistics
    assert all(torch.allclose(a, m.running_mean) for a, m in zip(again, layers))


def test_adapt_with_no_slices_leaves_the_model(tiny_fpi: Path):
    det = load_detector(tiny_fpi)
    before = [m.running_var.clone() for m in batchnorm_layers(det)]
    assert adapt_batchnorm(det, [np.zeros((32, 32, 32), np.float32)], [2]) == 0
    assert all(torch.equal(b, m.running_var) for b, m in zip(before, batchnorm_layers(det)))


def test_predict_folder_with_adapt_bn(tmp_path: Path, tiny_fpi: Path):
    inp = tmp_path / "in"
    inp.mkdir()
    for i in range(3):
        save_nifti(inp / f"v{i}.nii.gz", blob_volume(seed=20 + i) * 900.0)
    plain = Predictor(load_detector(tiny_fpi), PredictConfig(device="cpu", progress=False, adapt="none"))
    adapted = Predictor(load_detector(tiny_fpi), PredictConfig(device="cpu", progress=False, adapt="bn"))
    a = plain.predict_folder(inp, tmp_path / "a")
    b = adapted.predict_folder(inp, tmp_path / "b")
    assert a.exit_code == b.exit_code == 0
    assert "adapt" in adapted.timings.as_dict() and "adapt" not in plain.timings.seconds
    assert a.samples != b.samples  # the statistics changed, so did the scores


def test_card_adapt_is_the_default_and_checked(tiny_fpi: Path):
    det = load_detector(tiny_fpi)
    det.card.extra["adapt"] = "bn"
    assert Predictor(det, PredictConfig(device="cpu")).adapt_for(det) == "bn"
    assert Predictor(det, PredictConfig(device="cpu", adapt="none")).adapt_for(det) == "none"
    det.card.extra["adapt"] = "weird"
    with pytest.raises(ValueError, match="adapt"):
        Predictor(det, PredictConfig(device="cpu")).adapt_for(det)
    with pytest.raises(ValueError):
        PredictConfig(adapt="weird")


def test_background_of_a_noisy_scan_scores_zero(tiny_fpi: Path):
    rng = np.random.default_rng(0)
    head = blob_volume((40, 40, 40), seed=3) * 500.0
    noisy = (head + np.hypot(rng.normal(0, 20, head.shape), rng.normal(0, 20, head.shape))).astype(np.float32)
    res = Predictor(load_detector(tiny_fpi), PredictConfig(device="cpu", progress=False)).score_volume(noisy.copy())
    mask = foreground_mask(noisy)
    assert mask.mean() < 0.9 and (res.pixel[~mask] == 0).all()


def test_finetune_trains_the_task_on_the_inputs(tiny_fpi: Path):
    from mood_detector.inference.adapt import FinetuneConfig, adapt_finetune

    det = load_detector(tiny_fpi)
    before = {k: v.clone() for k, v in det.net.state_dict().items()}
    vols = [blob_volume(seed=s) for s in (5, 6)]
    cfg = FinetuneConfig(steps=2, batch_size=4, guard=False)  # the guard may undo 2 steps: tested apart
    assert adapt_finetune(det, vols, [det.slice_axis], cfg) == 2
    assert not det.net.training
    assert any(not torch.equal(before[k], v) for k, v in det.net.state_dict().items())
    again = load_detector(tiny_fpi)
    adapt_finetune(again, vols, [again.slice_axis], cfg)
    for k, v in det.net.state_dict().items():  # seeded: the same inputs give the same adapted model
        assert torch.allclose(v.float(), again.net.state_dict()[k].float())


@pytest.fixture
def no_guard(monkeypatch):
    """The predictor's fine-tune without its guard: a few steps of the tiny model change its task loss by noise,
    which the guard may undo, and these tests need the fine-tune to change the scores (the guard is tested in
    test_adapt_robust.py)."""
    from mood_detector.inference.adapt import FinetuneConfig

    monkeypatch.setattr(Adaptation, "_finetune_config",
                        lambda self: FinetuneConfig(steps=self.cfg.adapt_steps, guard=False))


def test_finetune_through_the_predictor(tmp_path: Path, tiny_fpi: Path):
    inp = tmp_path / "in"
    inp.mkdir()
    for i in range(2):
        save_nifti(inp / f"v{i}.nii.gz", blob_volume(seed=30 + i))
    pred = Predictor(load_detector(tiny_fpi), PredictConfig(device="cpu", progress=False, adapt="finetune",
                                                            adapt_steps=3))
    assert pred.predict_folder(inp, tmp_path / "out").exit_code == 0
    assert pred.timings.seconds["adapt"] > 0


def test_finetune_seconds_estimates_without_changing_the_detector(tiny_fpi: Path):
    from mood_detector.inference.adapt import FinetuneConfig, finetune_seconds

    det = load_detector(tiny_fpi)
    before = {k: v.clone() for k, v in det.net.state_dict().items()}
    vols = [blob_volume(seed=7)]
    est = finetune_seconds(det, vols, [det.slice_axis], FinetuneConfig(steps=1000, batch_size=4))
    short = finetune_seconds(det, vols, [det.slice_axis], FinetuneConfig(steps=10, batch_size=4))
    assert 0 < short < est < float("inf")
    assert all(torch.equal(before[k], v) for k, v in det.net.state_dict().items())


def auto_folder(tmp_path: Path, n: int) -> Path:
    inp = tmp_path / "in"
    inp.mkdir()
    for i in range(n):
        save_nifti(inp / f"v{i}.nii.gz", blob_volume(seed=40 + i))
    return inp


def fake_costs(monkeypatch, tune_s: float, network_s: float) -> list[str]:
    """Fix auto's two time estimates (fine-tune, network per input); returns the calls of the fine-tune probe."""
    from mood_detector.inference import adapt as adapt_module

    probes: list[str] = []

    def finetune_seconds(*args, **kwargs):
        probes.append("probe")
        return tune_s

    monkeypatch.setattr(adapt_module, "finetune_seconds", finetune_seconds)
    monkeypatch.setattr(Adaptation, "_network_seconds", lambda self, det, net: (network_s / 1000, network_s))
    return probes


def predict_samples(tiny_fpi: Path, inp: Path, out: Path, **cfg) -> tuple[Predictor, dict[str, float]]:
    pred = Predictor(load_detector(tiny_fpi), PredictConfig(device="cpu", progress=False, tasks=("pixel", "sample"),
                                                            adapt_steps=3, **cfg))
    report = pred.predict_folder(inp, out)
    assert report.exit_code == 0
    return pred, report.samples


def test_auto_fine_tunes_a_large_enough_folder_exactly_as_finetune(tmp_path: Path, tiny_fpi: Path, monkeypatch,
                                                                   no_guard):
    inp = auto_folder(tmp_path, 6)
    _, plain = predict_samples(tiny_fpi, inp, tmp_path / "none", adapt="none")
    _, tuned = predict_samples(tiny_fpi, inp, tmp_path / "finetune", adapt="finetune")
    probes = fake_costs(monkeypatch, tune_s=0.0, network_s=100.0)  # cheap next to 6 x 100 s of scoring
    pred, auto = predict_samples(tiny_fpi, inp, tmp_path / "auto", adapt="auto")
    assert probes and auto == tuned != plain
    for name in plain:
        assert (tmp_path / "auto" / name).read_bytes() == (tmp_path / "finetune" / name).read_bytes()
    assert pred.timings.seconds["adapt"] > 0


def test_auto_declines_when_the_fine_tune_would_exceed_its_share(tmp_path: Path, tiny_fpi: Path, monkeypatch,
                                                                  no_guard):
    inp = auto_folder(tmp_path, 6)
    _, plain = predict_samples(tiny_fpi, inp, tmp_path / "none", adapt="none")
    probes = fake_costs(monkeypatch, tune_s=100.0, network_s=50.0)  # 100 s > 20% of 6 x 50 s
    _, declined = predict_samples(tiny_fpi, inp, tmp_path / "auto", adapt="auto")
    assert probes and declined == plain
    probes.clear()
    _, generous = predict_samples(tiny_fpi, inp, tmp_path / "auto1", adapt="auto", adapt_budget=1.0)
    assert probes and generous != plain  # 100 s fits 100% of 300 s
    # the forward passes alone would not fit: rejected without probing the fine-tune
    probes = fake_costs(monkeypatch, tune_s=0.0, network_s=1e-3)
    monkeypatch.setattr(Adaptation, "_network_seconds", lambda self, det, net: (1.0, 1e-3))  # 1 s per slice
    _, bound = predict_samples(tiny_fpi, inp, tmp_path / "auto2", adapt="auto")
    assert not probes and bound == plain


def test_auto_never_adapts_a_small_folder(tmp_path: Path, tiny_fpi: Path, monkeypatch):
    inp = auto_folder(tmp_path, 4)  # fewer than 1 / 0.2 inputs
    _, plain = predict_samples(tiny_fpi, inp, tmp_path / "none", adapt="none")
    probes = fake_costs(monkeypatch, tune_s=0.0, network_s=100.0)
    pred, auto = predict_samples(tiny_fpi, inp, tmp_path / "auto", adapt="auto")
    assert auto == plain and not probes and "adapt" not in pred.timings.seconds


def test_auto_scores_as_trained_when_its_fine_tune_fails(tmp_path: Path, tiny_fpi: Path, monkeypatch, caplog):
    from mood_detector.inference import adapt as adapt_module

    inp = auto_folder(tmp_path, 6)
    _, plain = predict_samples(tiny_fpi, inp, tmp_path / "none", adapt="none")
    fake_costs(monkeypatch, tune_s=0.0, network_s=100.0)

    def broken(det, *args, **kwargs):  # changes the weights, then fails
        with torch.no_grad():
            for p in det.net.parameters():
                p.add_(1.0)
        raise RuntimeError("out of memory")

    monkeypatch.setattr(adapt_module, "adapt_finetune", broken)
    _, auto = predict_samples(tiny_fpi, inp, tmp_path / "auto", adapt="auto")
    assert auto == plain
    assert "fine-tune failed (RuntimeError: out of memory); scoring as trained" in caplog.text
    with pytest.raises(RuntimeError):  # an explicit --adapt finetune does not hide the failure
        predict_samples(tiny_fpi, inp, tmp_path / "ft", adapt="finetune")


def test_adapt_budget_is_checked():
    with pytest.raises(ValueError, match="adapt_budget"):
        PredictConfig(adapt_budget=0)
    assert PredictConfig(adapt="auto").adapt == "auto"
