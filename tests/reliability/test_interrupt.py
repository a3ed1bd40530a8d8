"""predict killed with SIGKILL mid-run leaves no partial file under an output name, and
``--skip-existing`` resumes without redoing finished inputs (their outputs keep their mtimes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from tests.conftest import blob_volume, save_nifti
from tests.reliability.helpers import predict_args, run_cli

# The real CLI, with every rename of a finished temp file to its output name slowed down, so that the kill
# reliably lands while temp files exist (no hook in the library: the test patches os.replace in the child).
CHILD = """
import os, sys, time
def slowed(real):
    def slow(src, dst, *args, **kwargs):
        time.sleep(float(os.environ["SLOW_PUBLISH_S"]))
        return real(src, dst, *args, **kwargs)
    return slow
os.replace, os.rename = slowed(os.replace), slowed(os.rename)
from mood_detector.cli import main
main(sys.argv[1:], prog_name="mood-detector")
"""
N = 6


def _visible(out: Path) -> list[Path]:
    return sorted(p for p in out.iterdir() if not p.name.startswith("."))


def _temps(out: Path) -> list[Path]:
    return sorted(p for p in out.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp"))


def _assert_complete(p: Path, shape: tuple[int, ...]) -> None:
    if p.name.endswith(".txt"):
        assert 0.0 <= float(p.read_text()) <= 1.0
    else:
        img = nib.load(str(p))
        data = np.asarray(img.dataobj)  # reads (and for gzip CRC-checks) the whole file
        assert img.shape == shape and np.isfinite(data).all()


def test_sigkill_mid_run_then_resume(tmp_path: Path, tiny_fpi: Path):
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    for i in range(N):
        save_nifti(inp / f"vol_{i:02d}.nii.gz", blob_volume((16, 16, 16), seed=i))
    env = dict(os.environ, SLOW_PUBLISH_S="0.4", OMP_NUM_THREADS="1")
    args = [str(a) for a in predict_args("both", inp, out, tiny_fpi)]
    child = subprocess.Popen([sys.executable, "-c", CHILD, *args], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, cwd=Path(__file__).resolve().parents[2])
    deadline = time.monotonic() + 240
    try:
        while True:
            assert child.poll() is None, f"predict ended before it could be killed: {child.stderr.read()!r}"
            assert time.monotonic() < deadline, "predict made no progress"
            if out.is_dir() and len(_visible(out)) >= 2 and _temps(out):
                break
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL

    visible, temps = _visible(out), _temps(out)
    assert temps, "the kill did not land during a write; the test proved nothing"
    assert len(visible) < 2 * N
    for p in visible:  # every file under an output name is complete
        _assert_complete(p, (16, 16, 16))
    done = [f"vol_{i:02d}.nii.gz" for i in range(N)
            if (out / f"vol_{i:02d}.nii.gz").exists() and (out / f"vol_{i:02d}.nii.gz.txt").exists()]
    stamps = {p.name: p.stat().st_mtime_ns for p in visible}

    res = run_cli(*predict_args("both", inp, out, tiny_fpi, "--skip-existing"))
    assert res.exit_code == 0, res.stderr
    assert f"skipped {len(done)}," in res.stdout and f"scored {N - len(done)}," in res.stdout
    assert "temporary files left by an interrupted run" in res.stderr
    assert _temps(out) == []  # the stale temp files of the killed run were removed
    assert len(_visible(out)) == 2 * N
    for p in _visible(out):
        _assert_complete(p, (16, 16, 16))
    for name in done:  # finished inputs were not redone
        for o in (name, f"{name}.txt"):
            assert (out / o).stat().st_mtime_ns == stamps[o]
