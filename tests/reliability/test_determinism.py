"""The same input and weights give bit-identical outputs on CPU across separate runs at the same torch
thread count (including the gzip bytes of the pixel outputs, written with mtime=0); across thread counts they
agree to float rounding (ATen runs 1x1 convolutions of small batches through another kernel on one thread)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.conftest import blob_volume, save_nifti
from tests.reliability.helpers import predict_args, run_cli

NAMES = ["a.nii.gz", "a.nii.gz.txt", "b.nii", "b.nii.txt"]


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    inp = tmp_path / "in"
    inp.mkdir()
    save_nifti(inp / "a.nii.gz", blob_volume((16, 16, 16), seed=1))
    save_nifti(inp / "b.nii", blob_volume((20, 12, 9), seed=2) * 900 - 100)
    return inp


def predict_in_child(inp: Path, out: Path, weights: Path, threads: int, **env: str) -> None:
    """``predict`` in a fresh process (as users run it), with ``env`` added to this one's environment."""
    args = predict_args("both", inp, out, weights, "--threads", str(threads))
    child = subprocess.run([sys.executable, "-m", "mood_detector", *map(str, args)], env=dict(os.environ, **env),
                           capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[2])
    assert child.returncode == 0, child.stderr


def max_diff(a: Path, b: Path) -> float:
    """Largest absolute difference of two outputs (score volumes or sample-score files)."""
    if a.suffix == ".txt":
        return abs(float(a.read_text()) - float(b.read_text()))
    return float(np.abs(np.asarray(nib.load(a).dataobj, np.float64) - np.asarray(nib.load(b).dataobj)).max())


def test_outputs_bit_identical_across_processes(tmp_path: Path, inputs: Path, tiny_fpi: Path):
    out_a, out_b = tmp_path / "a", tmp_path / "b"
    # two processes: one started with one OpenMP thread and another hash seed; both run 2 torch threads
    predict_in_child(inputs, out_a, tiny_fpi, threads=2, OMP_NUM_THREADS="1", PYTHONHASHSEED="123")
    predict_in_child(inputs, out_b, tiny_fpi, threads=2)
    assert sorted(p.name for p in out_a.iterdir()) == NAMES
    assert sorted(p.name for p in out_b.iterdir()) == NAMES
    for n in NAMES:
        a, b = out_a / n, out_b / n
        assert a.read_bytes() == b.read_bytes(), f"{n} differs (largest difference {max_diff(a, b):.3g})"


def test_outputs_across_thread_counts_agree_to_rounding(tmp_path: Path, inputs: Path, tiny_fpi: Path):
    out_one, out_two = tmp_path / "one", tmp_path / "two"
    predict_in_child(inputs, out_one, tiny_fpi, threads=1)
    res = run_cli(*predict_args("both", inputs, out_two, tiny_fpi, "--threads", "2"))  # and in this process
    assert res.exit_code == 0, res.stderr
    for n in NAMES:
        assert max_diff(out_one / n, out_two / n) <= 1e-5, n
