"""The stop rule, the best weights by probe loss and the verdict of a training run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from mood_detector.cli import main
from mood_detector.detector import TrainConfig
from mood_detector.training import diagnostic
from mood_detector.training.api import train_detector
from mood_detector.training.loop import BEST, LossLog
from mood_detector.training.small_data import FEW_VOLUMES, few_volume_options
from mood_detector.training.verdict import MARGIN, BestTracker, verdict
from mood_detector.models.fpi.detector import FPIOptions

TINY = dict(kind="brain", size=32, width=0.125, batch_size=8, device="cpu", max_batches_per_pair=1)


def test_verdict_words():
    assert verdict(0.05, 0.17, 0.18).word == "ready"
    # the measured boundary: 0.6 of the baseline (the 480-step runs that barely found outliers) is not ready
    assert verdict(0.6 * 0.17, 0.17, 0.18).word == "under-trained"
    assert verdict(0.46 * 0.17, 0.17, 0.18).word == "ready"
    assert verdict(0.15, 0.17, 0.18).word == "under-trained"
    assert "train longer or add scans" in verdict(0.15, 0.17, 0.18).text
    assert verdict(0.2, 0.17, 0.18).word == "not learned"


def test_tracker_waits_patience_steps_and_three_epochs():
    t = BestTracker(patience=10)
    assert t.update(1.0, 1, 8, 2.0, 2.0) and not t.stop
    for epoch in (2, 3):
        t.update(1.5, epoch, 8, 2.0, 2.0)
    assert t.since_steps == 16 and not t.stop  # 16 steps but only two epochs
    t.update(1.5, 4, 8, 2.0, 2.0)
    assert t.stop and t.best_epoch == 1
    assert not BestTracker(patience=0, since_steps=99, since_epochs=9).stop


def test_an_under_trained_run_says_so_and_the_card_records_it(volume_dir, tmp_path):
    out = train_detector(volume_dir, tmp_path / "w" / "fpi.safetensors",
                         TrainConfig(**TINY, options={"steps": "1"}))
    extra = json.loads(out.with_suffix(".json").read_text())["extra"]
    assert extra["verdict"].startswith(("under-trained", "did not learn"))
    assert extra["probe_loss_best"] > (1 - MARGIN) * min(extra["probe_const_loss"], extra["probe_prior_loss"])
    assert extra["probe_best_epoch"] == 1 and extra["probe_held_out"] is False
    assert (tmp_path / "w" / "fpi_run" / BEST).is_file()


def test_patience_stops_a_run_whose_probe_gets_worse(volume_dir, tmp_path, monkeypatch):
    real = diagnostic.diagnose
    losses = iter([0.1, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1])

    def worse(*args, **kwargs):  # the real baselines, a probe loss that only gets worse after epoch 1
        d = real(*args, **kwargs)
        d.loss = next(losses) * d.const_loss
        return d

    monkeypatch.setattr(diagnostic, "diagnose", worse)
    out = train_detector(volume_dir, tmp_path / "w" / "fpi.safetensors",
                         TrainConfig(**TINY, epochs=8, options={"patience": "1"}))
    assert len(LossLog(tmp_path / "w" / "fpi_run").rows()) == 4  # best at 1, then three epochs without progress
    extra = json.loads(out.with_suffix(".json").read_text())["extra"]
    assert extra["epochs_trained"] == 4 and extra["probe_best_epoch"] == 1
    assert extra["verdict"].startswith("ready")


def test_small_data_sets_slice_along_all_axes_unless_told_otherwise():
    assert few_volume_options(4, FPIOptions, {"steps": "10"})["train_axes"] == "all"
    assert few_volume_options(4, FPIOptions, {"steps": "10", "train_axes": "model"})["train_axes"] == "model"
    assert "train_axes" not in few_volume_options(FEW_VOLUMES, FPIOptions, {"steps": "10"})
    assert "train_axes" not in few_volume_options(4, FPIOptions, {})  # a budget in epochs: as it always was


def test_train_prints_its_plan_and_verdict(volume_dir, tmp_path):
    out = tmp_path / "w" / "nsa.safetensors"
    res = CliRunner().invoke(main, ["train", "-i", str(volume_dir), "-o", str(out), "--detector", "nsa",
                                    "--size", "32", "--width", "0.125", "--batch-size", "8", "--device", "cpu",
                                    "--max-batches-per-pair", "1", "--steps", "3"])
    assert res.exit_code == 0, res.output
    assert "small data set (4 volumes" in res.output
    assert "3 steps in 2 epochs" in res.output and "timed steps" in res.output
    assert "verdict: " in res.output
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["extra"]["train_axes"] == "all" and "verdict" in card["extra"]


@pytest.mark.parametrize("flag", ["--steps", "--patience"])
def test_detectors_without_the_probe_reject_the_flags(volume_dir, tmp_path, flag):
    res = CliRunner().invoke(main, ["train", "-i", str(volume_dir), "-o", str(tmp_path / "ae.safetensors"),
                                    "--detector", "ae", flag, "5"])
    assert res.exit_code == 2 and flag in res.output


def test_a_detector_without_the_probe_says_it_gives_no_verdict(volume_dir, tmp_path):
    res = CliRunner().invoke(main, ["train", "-i", str(volume_dir), "-o", str(tmp_path / "ae.safetensors"),
                                    "--detector", "ae", "--size", "32", "--width", "0.125", "--epochs", "1",
                                    "--batch-size", "8", "--device", "cpu", "--max-batches-per-pair", "1",
                                    "--opt", "latent=4"])
    assert res.exit_code == 0, res.output
    assert "no verdict: this detector has no held-out task diagnostic" in res.output
