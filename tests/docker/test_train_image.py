"""The training image's entry point (docker/train-entrypoint.sh), replayed like
``docker run -v data:/mnt/train -v weights:/mnt/weights detector-train brain [options]`` with POSIX sh, the
environment docker/install.sh prepared, and only the weights folder writable."""

from __future__ import annotations

import json
import os
from pathlib import Path

from mood_detector.detector import load_detector
from tests.conftest import blob_volume, save_nifti
from tests.docker.helpers import DOCKER, REPO, ImageEnv, base_env, entrypoint_cmd
from tests.docker.sandbox import Sandbox, listing, read_only

TRAIN_DOCKERFILE = DOCKER / "train.Dockerfile"


def train_env(image: ImageEnv, ro_dirs, data: Path, weights: Path, cache: Path) -> dict[str, str]:
    env = base_env(*ro_dirs, venv=image.venv)
    env.update(MOOD_PYTHON=str(image.python), MOOD_TRAIN_DIR=str(data), MOOD_WEIGHTS_OUT=str(weights),
               MOOD_CACHE_DIR=str(cache))
    return env


def test_train_writes_weights_and_card(image_env: ImageEnv, ro_dirs, sandbox: Sandbox, tmp_path: Path) -> None:
    data, weights, cache = tmp_path / "mnt_train", tmp_path / "mnt_weights", tmp_path / "cache"
    for d in (data, weights, cache):
        d.mkdir()
    for i in range(2):
        save_nifti(data / f"{i:05d}.nii.gz", blob_volume(seed=20 + i))
    options = ["--size", "32", "--width", "0.125", "--epochs", "1", "--batch-size", "8",
               "--max-batches-per-pair", "1", "--device", "cpu", "--seed", "3"]
    with read_only(data):
        before = listing(data)
        # writable: the weights mount and the cache folder (torch makes its compile-cache folder there when
        # the optimizer is built); everything else is read-only
        res = sandbox.run([*entrypoint_cmd(TRAIN_DOCKERFILE), "brain", *options], writable=[weights, cache],
                          env=train_env(image_env, ro_dirs, data, weights, cache), cwd=REPO, timeout=400)
        assert listing(data) == before
    assert res.returncode == 0, f"{res.stdout}\n{res.stderr}"
    assert sorted(os.listdir(weights)) == ["brain"]  # only the results in the weights mount
    out = weights / "brain" / "nsa.safetensors"  # the default detector: nsa
    assert sorted(os.listdir(weights / "brain")) == ["nsa.json", "nsa.safetensors", "nsa_run"]
    card = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    # the passed-through options reached `mood-detector train`
    assert (card["detector"], card["kind"], card["size"], card["width"], card["epochs"], card["seed"]) == \
        ("nsa", "brain", 32, 0.125, 1, 3)
    assert card["training_data"] == f"2 volumes from {data}"
    det = load_detector(out)
    assert det.size == 32 and det.card.kind == "brain"


def test_train_refuses_an_empty_folder(image_env: ImageEnv, ro_dirs, sandbox: Sandbox, tmp_path: Path) -> None:
    data, weights = tmp_path / "mnt_train", tmp_path / "mnt_weights"
    data.mkdir()
    weights.mkdir()
    res = sandbox.run([*entrypoint_cmd(TRAIN_DOCKERFILE), "abdom"], writable=[weights],
                      env=train_env(image_env, ro_dirs, data, weights, tmp_path / "cache"), cwd=REPO, timeout=60)
    assert res.returncode == 2
    assert res.stderr.strip() == f"mood-detector-train: error: no .nii or .nii.gz volumes in {data}"
    assert os.listdir(weights) == []
