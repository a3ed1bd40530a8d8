"""``train`` and ``export`` refuse to write over a bundled model unless ``--force`` is given."""

import subprocess
from pathlib import Path

from click.testing import CliRunner

from mood_detector.bundled import bundled_target, bundled_weights_dir, is_bundled
from mood_detector.cli import main

BUNDLED = bundled_weights_dir() / "brain" / "nsa.safetensors"


def test_the_bundled_models_are_recognised():
    assert is_bundled(BUNDLED) and is_bundled(BUNDLED.with_suffix(".json"))
    assert bundled_target(BUNDLED.with_suffix("")) == BUNDLED  # the suffix train adds is checked too
    assert bundled_target(bundled_weights_dir() / "brain" / "new.safetensors") is None


def test_train_into_a_bundled_model_fails_cleanly_before_any_work(volume_dir):
    before = BUNDLED.read_bytes()
    res = CliRunner().invoke(main, ["train", "-i", str(volume_dir), "-o", str(BUNDLED), "--detector", "nsa",
                                    "--size", "32", "--epochs", "1", "--device", "cpu"])
    assert res.exit_code == 1, res.output
    line = res.output.strip()
    assert "\n" not in line and "bundled model" in line and "--force" in line and "nsa.safetensors" in line
    assert BUNDLED.read_bytes() == before


def test_export_into_a_bundled_model_fails_cleanly(tiny_fpi):
    res = CliRunner().invoke(main, ["export", "-i", str(tiny_fpi), "-o", str(BUNDLED.with_suffix(".json"))])
    assert res.exit_code == 1 and "bundled model" in res.output and "--force" in res.output


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def test_a_file_tracked_under_weights_in_another_checkout_is_protected(tmp_path, tiny_fpi):
    """Outside the package's folder too (another clone): git decides; --force writes."""
    repo = tmp_path / "clone"
    (repo / "weights" / "brain").mkdir(parents=True)
    target = repo / "weights" / "brain" / "fpi.safetensors"
    target.write_bytes(b"x")
    target.with_suffix(".json").write_text("{}")
    untracked = repo / "weights" / "brain" / "mine.safetensors"
    untracked.write_bytes(b"y")
    _git(repo, "init", "-q")
    _git(repo, "add", "weights/brain/fpi.safetensors", "weights/brain/fpi.json")
    assert bundled_target(target) == target
    assert bundled_target(untracked) is None  # not tracked: an ordinary file
    res = CliRunner().invoke(main, ["export", "-i", str(tiny_fpi), "-o", str(target)])
    assert res.exit_code == 1 and "bundled model" in res.output
    res = CliRunner().invoke(main, ["export", "-i", str(tiny_fpi), "-o", str(target), "--force"])
    assert res.exit_code == 0, res.output
    assert target.read_bytes() != b"x"
