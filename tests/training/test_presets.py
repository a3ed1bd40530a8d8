import pytest
from click.testing import CliRunner

from mood_detector.cli import main
from mood_detector.training.presets import PRESETS, apply_preset


def test_preset_fills_only_what_the_command_line_left_default():
    values = {"size": None, "width": 1.0, "epochs": 7, "kind": "brain"}
    opts = apply_preset("cpu", values, given={"epochs"}, options={"contrast": "0"})
    assert opts["equal_tol"] == "0.2"
    assert apply_preset("cpu", {"kind": "abdom"}, set(), {})["equal_tol"] == "0.05"
    assert values["size"] == PRESETS["cpu"]["size"] and values["width"] == PRESETS["cpu"]["width"]
    assert values["epochs"] == 7                       # given on the command line: kept
    assert opts["contrast"] == "0" and opts["skips"] == "1"   # the user's --opt wins over the preset's


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown preset"):
        apply_preset("gpu9000", {}, set(), {})


def test_cli_preset_trains_with_its_settings(volume_dir, tmp_path):
    out = tmp_path / "w" / "fpi.safetensors"
    res = CliRunner().invoke(main, ["train", "-i", str(volume_dir), "-o", str(out), "--preset", "cpu",
                                    "--size", "32", "--width", "0.125", "--epochs", "1", "--batch-size", "8",
                                    "--device", "cpu", "--max-batches-per-pair", "1"])
    assert res.exit_code == 0, res.output
    import json

    card = json.loads(out.with_suffix(".json").read_text())
    assert card["size"] == 32 and card["extra"]["skips"] is True and card["extra"]["lr_schedule"] == "cosine"
