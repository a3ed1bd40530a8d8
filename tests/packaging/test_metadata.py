"""Installing the package prints no warning caused by our own metadata (pyproject.toml).

The metadata is built the way ``pip install --no-build-isolation [-e] .`` builds it (setuptools' PEP 517
metadata hooks for a wheel and an editable install, in a fresh interpreter with every warning shown), from a
copy of the sources in a temporary folder, offline; a few seconds.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

BUILD = """
import sys
from pathlib import Path
import setuptools.build_meta as backend
out = Path(sys.argv[1])
for hook in ("wheel", "editable"):
    (out / hook).mkdir()
    name = getattr(backend, "prepare_metadata_for_build_" + hook)(str(out / hook))
    print("METADATA", hook, name)
"""


def _needed_setuptools() -> tuple[int, ...]:
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]["requires"]
    spec = next(r for r in requires if r.startswith("setuptools"))
    m = re.search(r">=\s*([\d.]+)", spec)
    return tuple(int(p) for p in m.group(1).split(".")) if m else (0,)


def _have_setuptools() -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version("setuptools"))[:2])


def build_warnings(src: Path, work: Path) -> tuple[list[str], str]:
    """Build the package metadata from ``src`` (copied into ``work``); return (warning lines, backend output)."""
    copy = work / "src"
    copy.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(src / name, copy / name)
    shutil.copytree(src / "mood_detector", copy / "mood_detector",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = work / "dist"
    out.mkdir()
    proc = subprocess.run([sys.executable, "-W", "default", "-c", BUILD, str(out)], cwd=copy,
                          capture_output=True, text=True, timeout=300)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text
    assert sum(line.startswith("METADATA ") for line in proc.stdout.splitlines()) == 2, text
    return [line for line in text.splitlines() if "warning" in line.lower()], text


def test_build_prints_no_metadata_warning(tmp_path: Path):
    if _have_setuptools() < _needed_setuptools():
        pytest.skip(f"setuptools {version('setuptools')} is older than pyproject.toml's build requirement")
    warnings, text = build_warnings(REPO, tmp_path)
    assert not warnings, text
    meta = next((tmp_path / "dist" / "wheel").glob("*.dist-info")) / "METADATA"
    assert "License-Expression: MIT" in meta.read_text()


def test_check_reports_a_deprecated_license_table(tmp_path: Path):
    """The check can fail: the old ``license = { text = ... }`` table makes setuptools warn."""
    if _have_setuptools() < (77,):
        pytest.skip("setuptools < 77 does not deprecate the license table")
    src = tmp_path / "old"
    src.mkdir()
    pyproject = (REPO / "pyproject.toml").read_text()
    assert 'license = "MIT"' in pyproject
    (src / "pyproject.toml").write_text(pyproject.replace('license = "MIT"', 'license = { text = "MIT" }'))
    shutil.copy2(REPO / "README.md", src / "README.md")
    shutil.copytree(REPO / "mood_detector", src / "mood_detector", ignore=shutil.ignore_patterns("__pycache__"))
    warnings, _ = build_warnings(src, tmp_path / "work")
    assert any("project.license" in w for w in warnings)
