"""Helpers shared by the container tests: paths, container-like environments, the ENTRYPOINT, weights copies and
the MOOD output contract."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import nibabel as nib
import numpy as np
from packaging.requirements import Requirement

from tests.docker import dockerfile

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"


@dataclass
class ImageEnv:
    """A python environment prepared by docker/install.sh the way the images are."""

    python: Path
    venv: Path
    src: Path
    result: subprocess.CompletedProcess


def _dist_key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def base_image_standin(dest: Path, roots: list[str]) -> list[str]:
    """Symlink into ``dest`` the installed distributions ``roots`` and everything they require (markers
    evaluated, no extras), taken from this interpreter's environment; returns their names.

    Exposed to a fresh venv through a ``.pth`` file, this stands in for the CUDA base image with torch and pip
    preinstalled: only these distributions are visible, so a package imported by mood-detector but missing from
    requirements.txt fails the install check here as it would in the image."""
    dest.mkdir(parents=True, exist_ok=True)
    seen: dict[str, metadata.Distribution] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        if _dist_key(name) in seen:
            continue
        dist = metadata.distribution(name)
        seen[_dist_key(name)] = dist
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    for key, dist in seen.items():
        if dist.files is None:
            raise RuntimeError(f"{key}: installed without a RECORD, cannot tell its files")
        site = Path(str(dist.locate_file("")))
        for top in {str(f).split("/")[0] for f in dist.files if not str(f).startswith("..")}:
            if top == "__pycache__" or top.endswith(".pth") or (dest / top).exists():
                continue
            (dest / top).symlink_to(site / top)
    return sorted(seen)


def requirement_names(path: Path) -> list[str]:
    """Distribution names pinned in a requirements file."""
    names = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            names.append(Requirement(line).name)
    return names


def base_env(home: Path, tmp: Path, venv: Path | None = None) -> dict[str, str]:
    """A minimal environment like a container's: PATH, HOME, TMPDIR and LANG only (plus the venv on PATH)."""
    path = "/usr/local/bin:/usr/bin:/bin"
    if venv is not None:
        path = f"{venv}/bin:{path}"
    return {"PATH": path, "HOME": str(home), "TMPDIR": str(tmp), "LANG": "C.UTF-8"}


def script_env(image: ImageEnv, ro_dirs: tuple[Path, Path], weights: Path, **extra: str) -> dict[str, str]:
    """Environment for the entry point / run scripts run from the repository: the image's python, the repo's
    docker/ folder as the workspace, the given weights; HOME and TMPDIR are the read-only ``ro_dirs``."""
    home, tmp = ro_dirs
    env = base_env(home, tmp, image.venv)
    # the contract tests run the tiny FPI test model; the default detector (nsa) has its own test
    env.update(MOOD_WORKSPACE=str(DOCKER), MOOD_PYTHON=str(image.python), MOOD_WEIGHTS_DIR=str(weights),
               MOOD_DETECTOR="fpi")
    env.update(extra)
    return env


def entrypoint_cmd(path: Path = REPO / "Dockerfile") -> list[str]:
    """The Dockerfile's ENTRYPOINT with /workspace/ mapped to the repository's docker/ folder."""
    ep = dockerfile.last(dockerfile.parse(path), "ENTRYPOINT")
    assert ep is not None, f"{path}: no ENTRYPOINT"
    return [w.replace("/workspace/", f"{DOCKER}/") for w in ep.words()]


def abdom_copy(weights: Path, dest: Path) -> Path:
    """Copy ``weights`` (+ card) into ``dest``/fpi.* with a card claiming kind ``abdom`` (slice axis 1, network
    size halved): the same network sliced the other way at another resolution, so outputs show which kind's
    weights a script used (the slicing alone changes little inside a near-symmetric blob, and outside the object
    every map is 0)."""
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / "fpi.safetensors"
    shutil.copy2(weights, out)
    card = json.loads(weights.with_suffix(".json").read_text(encoding="utf-8"))
    card.update(kind="abdom", slice_axis=1, size=card["size"] // 2)
    out.with_suffix(".json").write_text(json.dumps(card), encoding="utf-8")
    return out


def check_pixel_output(inp: Path, out: Path) -> np.ndarray:
    """Assert the pixel-task contract for one input: same file name, same shape and affine, float32 on disk,
    finite values in [0, 1], readable the evaluator's way (``get_fdata(dtype=float16)``). Returns the scores."""
    assert out.name == inp.name
    src, res = nib.load(str(inp)), nib.load(str(out))
    assert res.shape == src.shape, f"{out.name}: shape {res.shape} != input {src.shape}"
    np.testing.assert_allclose(res.affine, src.affine, atol=1e-5, err_msg=f"{out.name}: affine differs")
    assert res.get_data_dtype() == np.float32, f"{out.name}: stored as {res.get_data_dtype()}"
    data = np.asarray(res.get_fdata(dtype=np.float32))
    assert np.isfinite(data).all()
    assert data.min() >= 0.0 and data.max() <= 1.0, f"{out.name}: range [{data.min()}, {data.max()}]"
    assert np.isfinite(res.get_fdata(dtype=np.float16)).all()
    return data


def check_sample_output(inp: Path, out: Path) -> float:
    """Assert the sample-task contract: ``<input name>.txt`` holding exactly one float in [0, 1]."""
    assert out.name == f"{inp.name}.txt"
    words = out.read_text(encoding="utf-8").split()
    assert len(words) == 1, f"{out.name}: expected one float, got {words!r}"
    value = float(words[0])
    assert 0.0 <= value <= 1.0, f"{out.name}: {value} outside [0, 1]"
    return value
