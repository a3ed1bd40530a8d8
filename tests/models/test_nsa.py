"""The NSA detector: FPI's network and training loop on the natural-synthetic-anomaly task."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from mood_detector.cli import main
from mood_detector.detector import REGISTRY, TrainConfig, check_train_config, detector_class, load_detector
from mood_detector.errors import OptionError
from mood_detector.io.nifti import list_volumes
from mood_detector.models.nsa.detector import LABEL_DEFAULTS, NSADetector, NSAOptions


def _cfg(**kw) -> TrainConfig:
    base = dict(detector="nsa", kind="brain", size=32, width=0.125, epochs=1, batch_size=8, device="cpu",
                max_batches_per_pair=1, options={"probe_volumes": "0"})
    base.update(kw)
    return TrainConfig(**base)


def test_fit_card_save_load_and_repeat(volume_dir, tmp_path):
    assert detector_class("nsa") is NSADetector and "nsa" in REGISTRY
    files = list_volumes(volume_dir)
    det = NSADetector.fit(files, _cfg(options={"probe_volumes": "0", "p_texture": "0.6"}), tmp_path / "run")
    card = det.card
    # one continuous output whatever --mode says; the task's parameters are on the card
    assert card.detector == "nsa" and card.mode == "continuous" and card.extra["classes"] == 1
    assert card.extra["skips"] is True and card.extra["p_texture"] == 0.6 and card.extra["slice_score"] == "top:0.01"
    task = NSADetector.task_config(card)
    assert task.p_texture == 0.6 and (task.label_x0, task.label_k) == LABEL_DEFAULTS["brain"]
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        s = det.score_slices(x).pixel
    assert s.shape == (2, 32, 32) and 0 <= float(s.min()) and float(s.max()) <= 1
    again = load_detector(det.save(tmp_path / "nsa.safetensors"))
    assert isinstance(again, NSADetector)
    with torch.no_grad():
        torch.testing.assert_close(again.score_slices(x).pixel, s)
    # an unfinished run exports from its checkpoint as an nsa model (not as fpi)
    r = CliRunner().invoke(main, ["export", "-i", str(tmp_path / "run"), "-o", str(tmp_path / "ck.safetensors")])
    assert r.exit_code == 0, r.output
    exported = load_detector(tmp_path / "ck.safetensors")
    assert isinstance(exported, NSADetector) and exported.card.mode == "continuous"
    with torch.no_grad():
        torch.testing.assert_close(exported.score_slices(x).pixel, s)
    det2 = NSADetector.fit(files, _cfg(options={"probe_volumes": "0", "p_texture": "0.6"}), tmp_path / "run2")
    for a, b in zip(det.net.state_dict().values(), det2.net.state_dict().values()):
        torch.testing.assert_close(a, b)  # the task is seeded by (seed, epoch, step, stream): repeatable


def test_probe_diagnostic_uses_the_nsa_task(volume_dir, tmp_path):
    """The per-epoch probe measures the NSA task (continuous labels), not FPI's patches."""
    NSADetector.fit(list_volumes(volume_dir), _cfg(options={"probe_volumes": "2", "final_bn": "0"},
                                                   max_batches_per_pair=1), tmp_path / "run")
    rows = list(csv.DictReader((tmp_path / "run" / "diagnostic.csv").open()))
    assert len(rows) == 1
    assert float(rows[0]["loss"]) > 0 and float(rows[0]["const_loss"]) > 0


def test_options_are_checked():
    with pytest.raises(OptionError, match="--opt"):
        check_train_config(_cfg(options={"p_poisson": "2"}))
    with pytest.raises(OptionError, match="--opt"):
        check_train_config(_cfg(options={"no_such": "1"}))
    # the output is always one continuous channel: --mode continuous is what nsa does, discrete is refused by name
    check_train_config(_cfg(options={"probe_volumes": "0", "mode": "continuous"}))
    with pytest.raises(OptionError, match="--mode"):
        check_train_config(_cfg(options={"probe_volumes": "0", "mode": "discrete"}))
    assert NSAOptions(label_x0=0.1).task("abdom").label_x0 == 0.1
    assert NSAOptions().task("abdom").label_x0 == LABEL_DEFAULTS["abdom"][0]


def test_train_cli_preset_applies_to_nsa_not_ae(volume_dir, tmp_path):
    r = CliRunner().invoke(main, ["train", "-i", str(volume_dir), "-o", str(tmp_path / "x.safetensors"),
                                  "--detector", "ae", "--preset", "cpu"])
    assert r.exit_code == 2 and "fpi and nsa" in r.output
    r = CliRunner().invoke(main, ["train", "-i", str(volume_dir), "-o", str(tmp_path / "n.safetensors"),
                                  "--detector", "nsa", "--preset", "cpu", "--size", "32", "--width", "0.125",
                                  "--epochs", "1", "--max-batches-per-pair", "1", "--device", "cpu",
                                  "--opt", "probe_volumes=0"])
    assert r.exit_code == 0, r.output
    card = load_detector(tmp_path / "n.safetensors").card
    assert card.extra["contrast"] == 0.5 and card.extra["lr_schedule"] == "cosine" and card.mode == "continuous"
    assert not np.isnan(card.width) and card.width == 0.125
