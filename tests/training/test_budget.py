"""A budget in optimiser steps: the same amount of training whatever the number of volumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mood_detector.detector import TrainConfig
from mood_detector.training.api import train_detector
from mood_detector.training.budget import announce, duration, echo_to, plan_steps, summary
from mood_detector.training.loop import LossLog
from mood_detector.training.presets import CPU_STEPS, PRESETS, apply_preset
from tests.conftest import blob_volume, save_nifti


def _data(root: Path, n: int) -> Path:
    root.mkdir(parents=True)
    for i in range(n):
        save_nifti(root / f"{i:05d}.nii.gz", blob_volume(shape=(24, 24, 24), seed=200 + i))
    return root


def test_plan_cuts_the_last_epoch_to_the_budget():
    plan = plan_steps(10, lambda epoch: 4)
    assert plan.per_epoch == (4, 4, 2) and plan.epochs == 3
    assert plan.limit(0) is None and plan.limit(2) == 2
    assert plan_steps(3, lambda epoch: 8).per_epoch == (3,)
    with pytest.raises(ValueError, match="no training batches"):
        plan_steps(5, lambda epoch: 0)


def test_summary_and_duration_words():
    line = summary("nsa", 4, 2, False, 1440, 180, 4.5, 2)
    assert "4 training volumes" in line and "1440 steps in 180 epochs" in line and "1 h 48 min" in line
    assert "time not estimated" in summary("nsa", 30, 2, True, 1440, 24, None, 0)
    assert duration(40) == "40 s" and duration(600) == "10 min"


def test_announce_echoes_only_inside_echo_to():
    seen: list[str] = []
    with echo_to(seen.append):
        announce("one")
    announce("two")
    assert seen == ["one"]


def test_cpu_preset_sets_steps_unless_epochs_are_given():
    values: dict = {"kind": "brain"}
    apply_preset("cpu", values, set(), {})
    assert values["steps"] == CPU_STEPS == 24 * 15 * 4 and "epochs" not in PRESETS["cpu"]
    values = {"kind": "brain", "epochs": 3}
    apply_preset("cpu", values, {"epochs"}, {})
    assert "steps" not in values and values["epochs"] == 3


@pytest.mark.parametrize("n_volumes", [4, 8])
def test_step_count_does_not_depend_on_the_number_of_volumes(tmp_path, n_volumes):
    data = _data(tmp_path / "train", n_volumes)
    cfg = TrainConfig(kind="brain", size=32, width=0.125, batch_size=8, device="cpu", max_batches_per_pair=1,
                      epochs=50, options={"steps": "5", "probe_volumes": "0"})
    out = train_detector(data, tmp_path / "w" / "fpi.safetensors", cfg)
    rows = LossLog(tmp_path / "w" / "fpi_run").rows()
    assert sum(int(r["batches"]) for r in rows) == 5  # 4 volumes: 2 pairs, 3 epochs; 8: 4 pairs, 2 epochs
    assert len(rows) == -(-5 // (n_volumes // 2))
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["epochs"] == len(rows) and card["extra"]["steps"] == 5
