"""docker/install.sh, the images' only install step, run here on a fresh venv (fixture ``image_env``; how the
base image is stood in for is explained in tests/docker/conftest.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.docker.helpers import DOCKER, REPO, ImageEnv, base_env
from tests.docker.sandbox import Sandbox


def test_install_runs_every_step(image_env: ImageEnv) -> None:
    out = image_env.result.stdout
    for step in range(1, 7):
        assert f"install.sh: {step}/6 " in out
    assert "install.sh: done" in out
    assert "torch kept from the base environment" in out
    # requirements.txt's torch pin (a CPU wheel) is not handed to pip in the image mode
    assert "torch==" not in out
    assert "Successfully installed mood-detector" in out


def test_package_installed_into_the_env_with_bytecode(image_env: ImageEnv) -> None:
    res = subprocess.run([str(image_env.python), "-P", "-c",
                          "import mood_detector, pathlib; print(pathlib.Path(mood_detector.__file__).parent)"],
                         capture_output=True, text=True, timeout=60, cwd=image_env.venv)
    pkg = Path(res.stdout.strip())
    assert res.returncode == 0 and pkg.is_relative_to(image_env.venv), f"imports from {pkg}"
    assert not pkg.is_relative_to(image_env.src)
    sources = sorted(pkg.rglob("*.py"))
    assert len(sources) > 10
    missing = [p for p in sources
               if not list((p.parent / "__pycache__").glob(f"{p.stem}.cpython-*.pyc"))]
    assert not missing, f"no compiled byte-code for {missing[:5]}"


def test_image_env_holds_only_the_runtime(image_env: ImageEnv) -> None:
    """The images carry requirements.txt only: no nilearn (data generation), matplotlib or test tools; the
    environment the tests install into sees the same set, so a missing runtime pin would fail install.sh."""
    code = ("import importlib.util as u; import sys; "
            "sys.exit(sum(u.find_spec(m) is not None for m in ('nilearn', 'matplotlib', 'pytest', 'sklearn')))")
    res = subprocess.run([str(image_env.python), "-P", "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=image_env.venv)
    assert res.returncode == 0, f"{res.returncode} extra packages visible"
    assert "nilearn" not in (REPO / "requirements.txt").read_text(encoding="utf-8")


def test_install_refuses_a_folder_without_sources(tmp_path: Path, sandbox: Sandbox, ro_dirs) -> None:
    res = sandbox.run(["/bin/sh", str(DOCKER / "install.sh"), str(tmp_path)], writable=[tmp_path],
                      env=base_env(*ro_dirs), cwd=tmp_path, timeout=60)
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == [f"install.sh: error: {tmp_path} is not a mood-detector source "
                                               "folder (no pyproject.toml)"]
