"""The same input and weights give bit-identical outputs on CPU across separate processes
(including the gzip bytes of the pixel outputs, written with mtime=0), whatever the CPU thread count."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import blob_volume, save_nifti
from tests.reliability.helpers import predict_args, run_cli


def test_outputs_bit_identical_across_processes(tmp_path: Path, tiny_fpi: Path):
    inp = tmp_path / "in"
    inp.mkdir()
    save_nifti(inp / "a.nii.gz", blob_volume((16, 16, 16), seed=1))
    save_nifti(inp / "b.nii", blob_volume((20, 12, 9), seed=2) * 900 - 100)
    out_child, out_here = tmp_path / "child", tmp_path / "here"
    # another process, one CPU thread, a different hash seed
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED="123")
    child = subprocess.run([sys.executable, "-m", "mood_detector", *map(str, predict_args("both", inp, out_child,
                                                                                         tiny_fpi))],
                           env=env, capture_output=True, text=True, timeout=300,
                           cwd=Path(__file__).resolve().parents[2])
    assert child.returncode == 0, child.stderr
    res = run_cli(*predict_args("both", inp, out_here, tiny_fpi))  # this process (pytest's thread count)
    assert res.exit_code == 0, res.stderr
    names = sorted(p.name for p in out_child.iterdir())
    assert names == ["a.nii.gz", "a.nii.gz.txt", "b.nii", "b.nii.txt"]
    assert names == sorted(p.name for p in out_here.iterdir())
    for n in names:
        assert (out_child / n).read_bytes() == (out_here / n).read_bytes(), n
