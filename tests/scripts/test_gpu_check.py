"""scripts/gpu_check.sh: its dry run (every step on the CPU at tiny sizes) passes, and a failing step shows in the
table and the exit code. This is how CI, which has no GPU, runs the GPU check's steps."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[2] / "scripts" / "gpu_check.sh"
STEPS = ["env", "a", "data", "b", "c", "d", "e"]


def run_check(tmp_path: Path, *args: str, **env: str) -> tuple[subprocess.CompletedProcess, dict[str, list[str]]]:
    """Run the script with a private TMPDIR (its scratch folder goes there); returns the process and the table
    rows of its --out file by step: [what, result / time, pass/fail]."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    out = tmp_path / "table.md"
    res = subprocess.run(["bash", str(SCRIPT), *args, "--out", str(out)], capture_output=True, text=True,
                         timeout=600, env={**os.environ, "PYTHON": sys.executable, "TMPDIR": str(scratch), **env})
    assert list(scratch.iterdir()) == [], "the scratch folder was left behind"
    rows = {}
    for line in out.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if line.startswith("| ") and cells[0] not in ("step", "---"):
            rows[cells[0]] = cells[1:]
    assert res.stdout.count("| step | what | result / time | pass/fail |") == 1
    return res, rows


def test_dry_run_passes_every_step(tmp_path: Path):
    res, rows = run_check(tmp_path, "--dry-run")
    assert res.returncode == 0, f"{res.stdout}\n{res.stderr[-3000:]}"
    assert list(rows) == STEPS
    status = {step: row[-1] for step, row in rows.items()}
    assert status == {**{s: "pass" for s in STEPS}, "a": "skip"}, res.stdout
    assert "skipped" in rows["a"][1]  # collected and skipped: no GPU
    assert "gloo on cpu" in rows["c"][1] and "I/O floor" in rows["d"][1]
    assert "--adapt finetune: fine-tune 2 steps" in rows["e"][1] and "--adapt auto: auto:" in rows["e"][1]
    assert "gpu_check: all steps passed" in res.stdout


def test_a_failing_step_is_in_the_table_and_the_exit_code(tmp_path: Path):
    res, rows = run_check(tmp_path, "--dry-run", "--only", "a", GPU_CHECK_FAIL="a")
    assert res.returncode == 1, res.stdout
    assert list(rows) == ["env", "a"] and rows["env"][-1] == "pass" and rows["a"][-1] == "FAIL"
    assert "failure injected by GPU_CHECK_FAIL" in rows["a"][1]
    assert "gpu_check: FAILED: a" in res.stdout


def test_help_and_a_bad_option(tmp_path: Path):
    res = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "--dry-run" in res.stdout and "Usage:" in res.stdout
    res = subprocess.run(["bash", str(SCRIPT), "--only", "z"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "unknown step 'z'" in res.stderr
