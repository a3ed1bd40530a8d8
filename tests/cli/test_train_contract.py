"""The detector contract as ``train`` shows it: each detector's options in ``--help``, flags a detector does not
read refused by name, no concrete detector imported by the command modules."""

from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from mood_detector.cli import main
from mood_detector.detector import REGISTRY, detector_class


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_help_lists_the_detectors_options_with_their_text(name: str):
    res = CliRunner().invoke(main, ["train", "--help", "--detector", name], terminal_width=200)
    assert res.exit_code == 0, res.output
    assert f"Options of the {name} detector" in res.output
    for f in dataclasses.fields(detector_class(name).options_cls):
        line = next((ln for ln in res.output.splitlines() if ln.strip().startswith(f"{f.name}=")), "")
        assert line.split("=", 1)[1].split(None, 1)[1:], f"{name} option {f.name} has no help text"


def test_cli_modules_import_no_concrete_detector():
    cli = Path(__file__).parents[2] / "mood_detector" / "cli"
    for path in cli.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert not (node.module or "").startswith("mood_detector.models"), (path.name, node.module)


def test_help_explains_mode_with_its_default():
    res = CliRunner().invoke(main, ["train", "--help"], terminal_width=200)
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.strip().startswith("--mode "))
    end = next(i for i in range(start + 1, len(lines)) if lines[i].strip().startswith("-"))
    text = " ".join(ln.strip() for ln in lines[start:end])
    assert "discrete|continuous" in text and "[default: discrete]" in text and "'mode'" in text


def test_mode_flag_is_the_fpi_option(volume_dir, tmp_path):
    out = tmp_path / "fpi.safetensors"
    res = CliRunner().invoke(main, ["train", "-i", str(volume_dir), "-o", str(out), "--mode", "continuous",
                                    "--size", "32", "--width", "0.125", "--epochs", "1", "--batch-size", "8",
                                    "--max-batches-per-pair", "1", "--device", "cpu", "--opt", "probe_volumes=0"])
    assert res.exit_code == 0, res.output
    card = json.loads(out.with_suffix(".json").read_text())
    assert (card["mode"], card["classes"]) == ("continuous", 1) and "mode" not in card["extra"]
