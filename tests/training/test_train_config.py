"""TrainConfig holds the settings every detector reads; FPI's schedule settings are FPI options."""

from __future__ import annotations

import json

import pytest

from mood_detector.detector import TrainConfig, check_train_config
from mood_detector.errors import OptionError


def test_a_saved_configuration_with_the_former_fpi_fields_loads_them_as_options():
    text = json.dumps({"detector": "fpi", "epochs": 3, "swa_epochs": 2, "batches_per_step": 0, "disk_cache": True,
                       "lr": 1e-3, "options": {"skips": "1"}})
    cfg = TrainConfig.from_json(text)
    assert cfg.epochs == 3 and cfg.options == {"skips": "1", "swa_epochs": "2", "disk_cache": "on"}


def test_fpi_flags_are_refused_by_name_for_other_detectors():
    with pytest.raises(OptionError, match="--swa-epochs"):
        check_train_config(TrainConfig(detector="ae", options={"swa_epochs": "1"}))
    check_train_config(TrainConfig(detector="nsa", size=32, options={"swa_epochs": "1"}))


def test_a_saved_configuration_with_the_former_mode_field_loads_it_as_an_option():
    from mood_detector.models.fpi.detector import FPIDetector
    from mood_detector.models.nsa.detector import NSADetector

    old = {"detector": "fpi", "size": 32, "epochs": 3, "mode": "continuous", "options": {"skips": "1"}}
    cfg = TrainConfig.from_json(json.dumps(old))
    assert cfg.options == {"skips": "1", "mode": "continuous"} and not hasattr(cfg, "mode")
    card = FPIDetector.card_for(cfg, 4)
    assert (card.mode, card.extra["classes"]) == ("continuous", 1) and "mode" not in card.extra
    # discrete was every configuration's default, and is the option's
    cfg = TrainConfig.from_json(json.dumps({**old, "mode": "discrete"}))
    assert cfg.options == {"skips": "1"} and FPIDetector.options(cfg).mode == "discrete"
    assert (FPIDetector.card_for(cfg, 4).mode, FPIDetector.card_for(cfg, 4).extra["classes"]) == ("discrete", 5)
    # an option already there wins over the former field
    cfg = TrainConfig.from_json(json.dumps({**old, "options": {"mode": "discrete"}}))
    assert cfg.options == {"mode": "discrete"}
    # nsa never read it: an old nsa configuration (mode discrete, the default) is still a valid one
    cfg = TrainConfig.from_json(json.dumps({**old, "detector": "nsa", "mode": "discrete"}))
    check_train_config(cfg)
    assert NSADetector.card_for(cfg, 4).mode == "continuous"


@pytest.mark.parametrize("detector", ["ae", "dpa", "ddad", "squid"])
def test_mode_is_refused_by_name_for_detectors_without_it(detector):
    with pytest.raises(OptionError, match=f"--mode.*the {detector} detector does not use it"):
        check_train_config(TrainConfig(detector=detector, size=64, options={"mode": "continuous"}))


def test_mode_values_are_checked_by_name():
    check_train_config(TrainConfig(detector="fpi", size=32, options={"mode": "continuous"}))
    with pytest.raises(OptionError, match="--mode.*'sideways' is not an fpi mode"):
        check_train_config(TrainConfig(detector="fpi", size=32, options={"mode": "sideways"}))
    check_train_config(TrainConfig(detector="nsa", size=32, options={"mode": "continuous"}))
    with pytest.raises(OptionError, match="--mode.*always one continuous channel"):
        check_train_config(TrainConfig(detector="nsa", size=32, options={"mode": "discrete"}))


def test_a_run_folder_saved_with_mode_as_a_field_exports_in_its_mode(volume_dir, tmp_path):
    from click.testing import CliRunner

    from mood_detector.cli import main
    from mood_detector.detector import load_detector
    from mood_detector.training.api import train_detector
    from mood_detector.training.loop import load_checkpoint, save_checkpoint

    run = tmp_path / "run"
    cfg = TrainConfig(kind="brain", size=32, width=0.125, epochs=1, batch_size=8, device="cpu", max_batches_per_pair=1,
                      options={"mode": "continuous", "probe_volumes": "0"})
    train_detector(volume_dir, tmp_path / "w.safetensors", cfg, run)
    ckpt = load_checkpoint(run)
    old = json.loads(ckpt["config"])
    old["mode"] = old["options"].pop("mode")  # the checkpoint as a configuration with the field saved it
    save_checkpoint(run, {**ckpt, "config": json.dumps(old, sort_keys=True)})
    res = CliRunner().invoke(main, ["export", "-i", str(run), "-o", str(tmp_path / "ck.safetensors")])
    assert res.exit_code == 0, res.output
    card = load_detector(tmp_path / "ck.safetensors").card
    assert (card.mode, card.extra["classes"]) == ("continuous", 1) and "mode" not in card.extra
