"""The detector contract as ``train`` shows it: each detector's options in ``--help``, flags a detector does not
read refused by name, no concrete detector imported by the command modules."""

from __future__ import annotations

import ast
import dataclasses
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
