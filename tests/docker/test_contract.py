"""The MOOD calling contract, executed: the organisers' harness call
``docker run ... --read-only <image> sh /workspace/run_<task>_<kind>.sh /mnt/data /mnt/pred`` is replayed as the
image would run it (the Dockerfile's ENTRYPOINT receiving ``sh run_*.sh IN OUT``), with POSIX ``/bin/sh``, the
environment docker/install.sh prepared, and only the output folder writable (tests/docker/sandbox.py). Outputs are
checked against the contract and against the library's own prediction with the same weights."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from mood_detector.detector import load_detector
from mood_detector.inference.predictor import PredictConfig, Predictor
from mood_detector.io.nifti import list_volumes, read_volume
from tests.docker.helpers import DOCKER, ImageEnv, check_pixel_output, check_sample_output, entrypoint_cmd, script_env
from tests.docker.sandbox import Sandbox, listing, read_only

CASES = [(t, k) for t in ("pixel", "sample") for k in ("brain", "abdom")]


@functools.lru_cache(maxsize=None)
def _predictor(weights: str, task: str) -> Predictor:
    return Predictor(load_detector(weights), PredictConfig(device="cpu", tasks=(task,), progress=False))


def reference(weights: Path, inp: Path, task: str):
    """The library's scores for ``inp`` with ``weights`` (what the container must reproduce)."""
    return _predictor(str(weights), task).score_volume(read_volume(inp).data, need_pixel=task == "pixel")


def expected_names(inputs: Path, task: str) -> list[str]:
    return sorted(p.name if task == "pixel" else f"{p.name}.txt" for p in list_volumes(inputs))


def assert_one_line_error(stderr: str, *parts: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"expected a one-line error, got:\n{stderr}"
    assert lines[0].startswith("mood-detector: error: ")
    for part in parts:
        assert part in lines[0]


@pytest.mark.parametrize("task,kind", CASES)
def test_harness_call(task: str, kind: str, image_env: ImageEnv, ro_dirs, contract_weights: Path,
                      contract_inputs: Path, sandbox: Sandbox, tmp_path: Path) -> None:
    out = tmp_path / "mnt_pred"
    out.mkdir()
    watched = {p: listing(p) for p in (*ro_dirs, contract_inputs, contract_weights, image_env.venv, DOCKER)}
    cmd = [*entrypoint_cmd(), "sh", f"{DOCKER}/run_{task}_{kind}.sh", str(contract_inputs), str(out)]
    res = sandbox.run(cmd, writable=[out], env=script_env(image_env, ro_dirs, contract_weights), cwd=DOCKER)
    assert res.returncode == 0, f"rc {res.returncode}\n{res.stdout}\n{res.stderr}"
    # exactly the results: no caches, no temporary files, nothing for notes.txt
    assert sorted(os.listdir(out)) == expected_names(contract_inputs, task)
    for folder, before in watched.items():
        assert listing(folder) == before, f"{folder} changed"
    if not torch.cuda.is_available():
        assert "no GPU visible: running on CPU" in res.stderr
    weights = contract_weights / kind / "fpi.safetensors"
    other = contract_weights / ("abdom" if kind == "brain" else "brain") / "fpi.safetensors"
    for inp in list_volumes(contract_inputs):
        ref = reference(weights, inp, task)
        if task == "pixel":
            got = check_pixel_output(inp, out / inp.name)
            np.testing.assert_allclose(got, ref.pixel, atol=1e-4)
            assert np.abs(got - reference(other, inp, task).pixel).max() > 1e-3, "the other kind's weights were used"
        else:
            got = check_sample_output(inp, out / f"{inp.name}.txt")
            assert got == pytest.approx(ref.sample, abs=1e-6)


def test_entrypoint_env_folders_default_kind_and_passthrough(image_env: ImageEnv, ro_dirs, contract_weights: Path,
                                                              contract_inputs: Path, sandbox: Sandbox,
                                                              tmp_path: Path) -> None:
    """``detector sample --skip-existing --batch-size 4`` with MOOD_INPUT_DIR / MOOD_OUTPUT_DIR: kind auto picks
    brain for these shapes, the extra options reach ``mood-detector predict`` (an existing result is kept)."""
    out = tmp_path / "pred"
    out.mkdir()
    (out / "toy_0.nii.gz.txt").write_text("0.5\n", encoding="utf-8")
    env = script_env(image_env, ro_dirs, contract_weights, MOOD_INPUT_DIR=str(contract_inputs),
                     MOOD_OUTPUT_DIR=str(out), MOOD_DEVICE="cpu")
    res = sandbox.run([*entrypoint_cmd(), "sample", "--skip-existing", "--batch-size", "4"], writable=[out], env=env,
                      cwd=DOCKER)
    assert res.returncode == 0, f"{res.stdout}\n{res.stderr}"
    assert "scored 1, skipped 1, failed 0" in res.stdout
    assert sorted(os.listdir(out)) == ["toy_0.nii.gz.txt", "toy_1.nii.txt"]
    assert (out / "toy_0.nii.gz.txt").read_text(encoding="utf-8") == "0.5\n"
    inp = contract_inputs / "toy_1.nii"
    got = check_sample_output(inp, out / "toy_1.nii.txt")
    assert got == pytest.approx(reference(contract_weights / "brain" / "fpi.safetensors", inp, "sample").sample,
                                abs=1e-6)


# --- failures: one clear line, exit code 2, nothing written (no python is started) --------------------------------

def test_missing_weights_for_the_kind(image_env: ImageEnv, ro_dirs, contract_inputs: Path, sandbox: Sandbox,
                                      tmp_path: Path, tiny_fpi: Path) -> None:
    weights, out = tmp_path / "weights", tmp_path / "pred"
    (weights / "brain").mkdir(parents=True)
    out.mkdir()
    for suffix in (".safetensors", ".json"):
        (weights / "brain" / f"fpi{suffix}").write_bytes(tiny_fpi.with_suffix(suffix).read_bytes())
    env = script_env(image_env, ro_dirs, weights)
    res = sandbox.run(["sh", f"{DOCKER}/run_pixel_abdom.sh", str(contract_inputs), str(out)], writable=[out],
                      env=env, cwd=DOCKER, timeout=60)
    assert res.returncode == 2
    assert_one_line_error(res.stderr, "no fpi weights for kind abdom", f"{weights}/abdom/fpi.safetensors")
    assert os.listdir(out) == []


def test_no_bundled_weights_at_all(image_env: ImageEnv, ro_dirs, contract_inputs: Path, sandbox: Sandbox,
                                   tmp_path: Path) -> None:
    weights, out = tmp_path / "weights", tmp_path / "pred"
    weights.mkdir()
    out.mkdir()
    env = script_env(image_env, ro_dirs, weights, MOOD_INPUT_DIR=str(contract_inputs), MOOD_OUTPUT_DIR=str(out))
    res = sandbox.run([*entrypoint_cmd(), "pixel"], writable=[out], env=env, cwd=DOCKER, timeout=60)
    assert res.returncode == 2
    assert_one_line_error(res.stderr, "no fpi weights for any kind", str(weights))
    assert os.listdir(out) == []


def test_default_detector_is_nsa(image_env: ImageEnv, ro_dirs, contract_weights: Path, contract_inputs: Path,
                                 sandbox: Sandbox, tmp_path: Path) -> None:
    """Without MOOD_DETECTOR the entry point looks for the nsa weights (the FPI ones alone do not do)."""
    out = tmp_path / "pred"
    out.mkdir()
    env = script_env(image_env, ro_dirs, contract_weights, MOOD_INPUT_DIR=str(contract_inputs),
                     MOOD_OUTPUT_DIR=str(out), MOOD_DETECTOR="")
    res = sandbox.run([*entrypoint_cmd(), "pixel"], writable=[out], env=env, cwd=DOCKER, timeout=60)
    assert res.returncode == 2
    assert_one_line_error(res.stderr, "no nsa weights for any kind", str(contract_weights))
    assert os.listdir(out) == []


def test_missing_input_and_unwritable_output(image_env: ImageEnv, ro_dirs, contract_weights: Path,
                                             contract_inputs: Path, sandbox: Sandbox, tmp_path: Path) -> None:
    out = tmp_path / "pred"
    out.mkdir()
    env = script_env(image_env, ro_dirs, contract_weights)
    res = sandbox.run(["sh", f"{DOCKER}/run_sample_brain.sh", str(tmp_path / "nope"), str(out)], writable=[out],
                      env=env, cwd=DOCKER, timeout=60)
    assert res.returncode == 2
    assert_one_line_error(res.stderr, f"input folder {tmp_path / 'nope'} does not exist")
    with read_only(out):
        res = sandbox.run(["sh", f"{DOCKER}/run_sample_brain.sh", str(contract_inputs), str(out)], writable=[],
                          env=env, cwd=DOCKER, timeout=60)
    assert res.returncode == 2
    assert_one_line_error(res.stderr, f"output folder {out} is not writable")


def test_usage_without_a_task(image_env: ImageEnv, ro_dirs, contract_weights: Path, sandbox: Sandbox) -> None:
    res = sandbox.run(entrypoint_cmd(), writable=[], env=script_env(image_env, ro_dirs, contract_weights),
                      cwd=DOCKER, timeout=60)
    assert res.returncode == 2
    assert res.stderr.startswith("usage: detector pixel|sample [brain|abdom|auto]")


def test_sandbox_really_blocks_writes(sandbox: Sandbox, ro_dirs, tmp_path: Path) -> None:
    """The confinement the tests rely on: HOME, TMPDIR and a folder not given as writable refuse writes."""
    home, tmp = ro_dirs
    rw, other = tmp_path / "rw", tmp_path / "other"
    rw.mkdir()
    other.mkdir()
    script = f'touch "{rw}/ok" && ! touch "{home}/x" 2>/dev/null && ! mkdir "{tmp}/x" 2>/dev/null'
    if sandbox.mode == "namespace":  # everything else is read-only too
        script += f' && ! touch "{other}/x" 2>/dev/null && ! touch /tmp/mood-sandbox-probe 2>/dev/null'
    res = sandbox.run(["/bin/sh", "-c", script], writable=[rw], env={"PATH": "/usr/bin:/bin"}, cwd=rw, timeout=60)
    assert res.returncode == 0, res.stderr
    assert (rw / "ok").exists() and not (home / "x").exists() and not (tmp / "x").exists()
