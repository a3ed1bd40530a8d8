"""Helpers for the reliability tests: run the real CLI in-process without leaking its logging set-up."""

from __future__ import annotations

import logging
from pathlib import Path

from click.testing import CliRunner, Result

from mood_detector.cli import main


def run_cli(*args: str | Path) -> Result:
    """Invoke ``mood-detector ARGS`` in-process; returns click's result (exit_code, stdout, stderr).

    The CLI installs its own root log handler on the (captured) stderr; the previous logging state is restored
    afterwards so later tests are unaffected.
    """
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        return CliRunner(catch_exceptions=False).invoke(main, [str(a) for a in args])
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def predict_args(task: str, inp: Path, out: Path, weights: Path, *extra: str) -> list[str | Path]:
    """Arguments of a CPU ``predict`` run without progress bar."""
    return ["predict", task, "-i", inp, "-o", out, "-w", weights, "--device", "cpu", "--no-progress", *extra]
