"""The demo (README command 1): bundled-weights path and its error without weights."""

import shutil

import pytest

from mood_detector.pipelines.demo import DemoConfig, run_demo
from mood_detector.errors import MoodError


def test_demo_scores_fresh_cases_with_given_weights(tmp_path, tiny_fpi):
    wdir = tmp_path / "weights" / "brain"
    wdir.mkdir(parents=True)
    shutil.copy(tiny_fpi, wdir / "fpi.safetensors")
    shutil.copy(tiny_fpi.with_suffix(".json"), wdir / "fpi.json")
    out = run_demo(DemoConfig(out=tmp_path / "demo", kinds=("brain", "abdom"), n_cases=2, size=32,
                              weights_dir=tmp_path / "weights", device="cpu", detector="fpi"))
    assert "abdom evaluation" not in out                      # no abdominal weights there: skipped
    table = out["brain evaluation"].read_text()
    assert "pixel" in table and "sample" in table
    assert len(list((tmp_path / "demo" / "brain" / "pred").glob("*.nii.gz"))) == 2


def test_demo_without_weights_says_what_to_do(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(MoodError, match="--train"):
        run_demo(DemoConfig(out=tmp_path / "demo", kinds=("brain",), weights_dir=tmp_path / "empty", size=32))
