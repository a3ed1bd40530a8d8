"""The detector contract as ``train`` shows it: each detector's options in ``--help``, flags a detector does not
read refused by name, no concrete detector imported by the command modules."""

from __future__ import annotations

import ast
import dataclasses
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from mood_detector.cli import main
from mood_detector.detector import REGISTRY, Detector, Flag, detector_class, registered_flags
from mood_detector.weights import ModelCard


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
    assert (card["mode"], card["extra"]["classes"]) == ("continuous", 1) and "mode" not in card["extra"]


def _flag_section(output: str, title: str) -> str:
    """The lines of the ``--help`` section whose heading starts with ``title``."""
    lines = output.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(title))
    end = next((i for i in range(start + 1, len(lines)) if lines[i] and not lines[i].startswith(" ")), len(lines))
    return "\n".join(lines[start:end])


def test_every_declared_flag_is_an_option_of_its_detector_and_listed_with_its_readers():
    flags = registered_flags()  # raises where detectors declare one flag differently
    assert {"--mode", "--steps", "--patience", "--swa-epochs", "--batches-per-step", "--unlabeled",
            "--feature-weights"} <= set(flags)
    res = CliRunner().invoke(main, ["train", "--help"], terminal_width=200)
    section = _flag_section(res.output, "Detector flags")
    for name, readers in flags.items():
        for detector, flag in readers:
            assert flag.option in {f.name for f in dataclasses.fields(detector_class(detector).options_cls)}
        lines = section.splitlines()
        start = next(i for i, ln in enumerate(lines) if ln.strip().startswith(name + " "))
        end = next((i for i in range(start + 1, len(lines)) if lines[i].strip().startswith("-")), len(lines))
        text = " ".join(ln.strip() for ln in lines[start:end])
        assert all(re.search(rf"\b{d}[,:]", text) for d, _ in readers), text
        assert "[default: " in text and f"(option '{readers[0][1].option}')" in text, text


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_help_with_a_detector_lists_its_flags(name: str):
    res = CliRunner().invoke(main, ["train", "--help", "--detector", name], terminal_width=200)
    flags = detector_class(name).flags
    if not flags:
        assert f"Flags of the {name} detector" not in res.output
        return
    section = _flag_section(res.output, f"Flags of the {name} detector")
    for flag in flags:
        assert f"  {flag.name}  " in section and f"(option '{flag.option}')" in section


def test_a_flag_is_refused_by_name_for_each_detector_that_does_not_declare_it(tmp_path):
    for name, readers in registered_flags().items():
        for detector in sorted(set(REGISTRY) - {d for d, _ in readers}):
            flag = readers[0][1]
            value = str(tmp_path) if flag.path == "dir" else (flag.choices or ("1",))[0]
            if flag.path == "file":
                value = str(tmp_path / "f.bin")
                Path(value).write_bytes(b"")
            res = CliRunner().invoke(main, ["train", "-i", str(tmp_path), "-o", str(tmp_path / "w.safetensors"),
                                            "--detector", detector, name, value])
            assert res.exit_code == 2, (name, detector, res.output)
            assert f"'{name}': the {detector} detector does not use it" in res.output, res.output


@dataclasses.dataclass
class _StandInOptions:
    """Attributes:
    knob: the stand-in's knob.
    """

    knob: int = 3


class _StandIn(Detector):
    """A registered detector that the harness does not know: its flag appears in ``train`` from its declaration
    (never built: the tests only read its class)."""

    name = "standin"
    options_cls = _StandInOptions
    flags = (Flag("--standin-knob", "knob", "Turns the stand-in's knob.", minimum=0),)


def test_a_new_detectors_flag_needs_no_change_to_the_command(monkeypatch, tmp_path):
    monkeypatch.setitem(REGISTRY, "standin", f"{__name__}:_StandIn")
    res = CliRunner().invoke(main, ["train", "--help"], terminal_width=200)
    assert "--standin-knob" in res.output and "standin: Turns the stand-in's knob." in res.output
    assert "[default: 3]" in _flag_section(res.output, "Detector flags").split("--standin-knob", 1)[1]
    res = CliRunner().invoke(main, ["train", "-i", str(tmp_path), "-o", str(tmp_path / "w.safetensors"),
                                    "--standin-knob", "5"])
    assert res.exit_code == 2 and "'--standin-knob': the fpi detector does not use it" in res.output, res.output


def test_a_card_from_an_earlier_version_reads_its_former_fields_into_extra():
    old = {"detector": "fpi", "arch": "brain", "width": 0.25, "kind": "brain", "slice_axis": 2, "size": 128,
           "mode": "discrete", "classes": 5, "extra": {"skips": True}}
    card = ModelCard.from_dict(old)
    assert card.mode == "discrete" and card.extra == {"skips": True, "classes": 5}
    assert "classes" not in json.loads(card.to_json())
    assert ModelCard.from_dict({**old, "extra": {"classes": 1}}).extra == {"classes": 1}  # extra's own wins
