"""Fixtures for the container tests: the read-only sandbox, an environment prepared by docker/install.sh exactly
as the images are, contract weights and inputs.

No Docker engine runs on the project's machines, so the images' steps are run here directly: the sources the
Dockerfile copies are copied to a temporary folder, ``docker/install.sh`` installs them (MOOD_SKIP_TORCH=1 as in
the images) into a fresh virtual environment, and the entry point and the four MOOD scripts run from the
repository's ``docker/`` folder (``MOOD_WORKSPACE``) with that environment's python (``MOOD_PYTHON``).

Stand-in for the base image (no network, and no time to download torch in a test): the fresh venv has no
packages of its own; a ``.pth`` file exposes a folder of symlinks to exactly the distributions of
requirements.txt, pip and the build backend, with their dependency closure, from the project's ``.venv``
(:func:`tests.docker.helpers.base_image_standin`), the way the CUDA base image comes with torch and pip
preinstalled. Nothing else (pytest, matplotlib, nilearn, ...) is visible, so an import the image could not
satisfy fails here too. ``PIP_NO_INDEX=1``: pip downloads nothing, so every pin must resolve against that
environment at exactly its version (these pins are "already satisfied" here, installed in the image); the
package itself is really built from the copied sources and installed (not editable). The install runs in the
sandbox with only the venv, the source copy and a scratch folder writable, so it cannot touch ``.venv``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import blob_volume, save_nifti
from tests.docker import dockerfile
from tests.docker.helpers import REPO, ImageEnv, abdom_copy, base_env, base_image_standin, requirement_names
from tests.docker.sandbox import Sandbox, _set_write, read_only

SRC_PREFIX = "/opt/mood/src/"


@pytest.fixture(scope="session")
def sandbox() -> Sandbox:
    """The strongest available write confinement (see tests/docker/sandbox.py)."""
    box = Sandbox()
    if box.mode == "unavailable":
        pytest.skip("cannot confine writes: running as root without setpriv")
    return box


@pytest.fixture(scope="session")
def ro_dirs(tmp_path_factory):
    """An empty HOME and TMPDIR, both read-only for the commands run in the sandbox."""
    root = tmp_path_factory.mktemp("ro")
    home, tmp = root / "home", root / "tmp"
    home.mkdir()
    tmp.mkdir()
    with read_only(home, tmp):
        yield home, tmp


def copy_dockerfile_sources(dest_root: Path) -> None:
    """Copy what the Dockerfile COPYs into /opt/mood/src/ to ``dest_root`` (same relative layout)."""
    for sources, dest in dockerfile.copies(dockerfile.parse(REPO / "Dockerfile")):
        if not dest.startswith(SRC_PREFIX):
            continue
        for s in sources:
            target = dest_root / dest[len(SRC_PREFIX):]
            if dest.endswith("/") and (REPO / s).is_file():
                target = target / Path(s).name
            target.parent.mkdir(parents=True, exist_ok=True)
            if (REPO / s).is_dir():
                shutil.copytree(REPO / s, target, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
            else:
                shutil.copy2(REPO / s, target)


@pytest.fixture(scope="session")
def image_env(tmp_path_factory, sandbox: Sandbox, ro_dirs) -> ImageEnv:
    """The Dockerfile's install step (docker/install.sh) run on a copy of the Dockerfile's sources into a fresh
    venv (see the module docstring). The venv is read-only afterwards (the read-only container's package folder);
    like in the image, the source copy is deleted by the RUN line."""
    root = tmp_path_factory.mktemp("image")
    work, venv = root / "work", root / "venv"  # work: the build's writable area (the RUN line deletes src)
    src, scratch = work / "src", work / "scratch"
    scratch.mkdir(parents=True)
    copy_dockerfile_sources(src)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True, timeout=60).stdout.strip()
    standin = root / "base-image-site-packages"
    base_image_standin(standin, [*requirement_names(REPO / "requirements.txt"), "pip", "setuptools"])
    Path(purelib, "_base_image_env.pth").write_text(f"{standin}\n", encoding="utf-8")
    # The Dockerfile's own install RUN line, executed as Docker would (/bin/sh -c, the ENV set before it), with
    # /opt/mood/src mapped to the copy and the venv's python3 first on PATH.
    instructions = dockerfile.parse(REPO / "Dockerfile")
    at = next(i for i, ins in enumerate(instructions) if ins.keyword == "RUN" and "docker/install.sh" in ins.args)
    env = base_env(ro_dirs[0], scratch, venv)
    env.update(dockerfile.env(instructions[:at]))
    env["PIP_NO_INDEX"] = "1"
    run_line = instructions[at].args.replace(SRC_PREFIX.rstrip("/"), str(src))
    res = sandbox.run(["/bin/sh", "-c", run_line], writable=[venv, work], env=env, cwd=scratch, timeout=500)
    if res.returncode != 0:
        pytest.fail(f"docker/install.sh failed (rc {res.returncode}):\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}")
    _set_write(venv, False)
    yield ImageEnv(python=py, venv=venv, src=src, result=res)
    _set_write(venv, True)


@pytest.fixture(scope="session")
def contract_weights(tmp_path_factory, tiny_fpi: Path) -> Path:
    """A read-only weights folder in the image's layout: brain/fpi.* (the tiny test model) and abdom/fpi.* (see
    :func:`tests.docker.helpers.abdom_copy`)."""
    root = tmp_path_factory.mktemp("weights")
    (root / "brain").mkdir()
    shutil.copy2(tiny_fpi, root / "brain" / "fpi.safetensors")
    shutil.copy2(tiny_fpi.with_suffix(".json"), root / "brain" / "fpi.json")
    abdom_copy(tiny_fpi, root / "abdom")
    with read_only(root):
        yield root


@pytest.fixture(scope="session")
def contract_inputs(tmp_path_factory) -> Path:
    """Read-only input folder: toy_0.nii.gz (32^3 float32) and toy_1.nii (30x34x28 int16), non-trivial affines;
    plus a file that is not a volume (it must be ignored)."""
    d = tmp_path_factory.mktemp("mnt_data")
    save_nifti(d / "toy_0.nii.gz", blob_volume((32, 32, 32), seed=3))
    aff = np.array([[0.0, -1.1, 0, 30.0], [0.9, 0, 0, -12.0], [0, 0, 1.3, 7.5], [0, 0, 0, 1]])
    save_nifti(d / "toy_1.nii", (blob_volume((30, 34, 28), seed=4) * 1000).astype(np.int16), affine=aff)
    (d / "notes.txt").write_text("not a volume\n", encoding="utf-8")
    with read_only(d):
        yield d
