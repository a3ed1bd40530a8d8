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
