"""Training and prediction under torchrun: ONE 2-process CPU (gloo) job against single-process runs.

The module fixture runs the single-process references, then ``torchrun --standalone --nproc_per_node 2
tests/distributed/job.py``; the tests check its results.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import torch

from mood_detector.detector import TrainConfig
from mood_detector.inference.api import predict_folder
from mood_detector.inference.predictor import PredictConfig
from mood_detector.training.api import train_detector
from mood_detector.training.loop import LossLog, load_checkpoint
from mood_detector.weights import load_weights
from tests.conftest import blob_volume, float64, save_nifti
from tests.distributed.job import bn_case

REPO = Path(__file__).resolve().parents[2]
# 4 volumes = 2 pairs; 2 batches per step (one pair each: one per rank at N=2); each pair gives batches of 12 and
# 8-12 slices, so the ranks' local batches differ in size (the loss weighting matters); 2 steps per epoch
BASE = dict(kind="brain", size=32, width=0.125, batch_size=24, max_batches_per_pair=0, device="cpu", seed=7)
# 2 Adam epochs + 1 SWA epoch (+ BN statistics recomputed); the first epoch only: then resume to FULL
FULL = dict(BASE, epochs=2, options={"batches_per_step": "2", "swa_epochs": "1"})
FIRST = dict(BASE, epochs=1, options={"batches_per_step": "2", "swa_epochs": "0"})
# The training runs compared here (N=1 and N=2, here and in job.py) run in FLOAT64 (torch's default dtype; the
# FPI network is built in it and its batches follow). Why: N=2 computes the same sums as N=1 in another order
# (BatchNorm statistics and gradients: per-rank partial sums + all-reduce instead of one sum over the step's
# batch), so the two differ by rounding, and this training amplifies rounding without bound:
# 1. Adam's update lr * m / (sqrt(v) + eps) is scale-invariant: in the first steps a gradient component that is
#    rounding noise (~1e-8 absolute in float32, as large as eps = 1e-8) moves by O(lr) in a random direction.
# 2. ReLU kinks: a pre-activation near 0 that the perturbed weights push to the other side drops (or adds) its
#    element's whole gradient, a jump, not a small change.
# Measured in float32 (4 steps; N=1 vs N=2; ATEN_CPU_CAPABILITY=avx2 / =default on this AMD EPYC): step 1, same
# weights: gradients differ by 3e-5 (relative; rounding only, no kink crossed); after Adam: weights by 3e-6;
# step 2: the first ReLU flips (avx2: one nearest-upsampled element in decoder.3.bn2, -7.7e-5 vs +7.8e-5) and the
# gradients differ by 1.1e-3 / 3.6e-2; step 4: hundreds of flips, 7e-2 / 0.56. Final weights: 7.7e-4 / 5.7e-3
# (4.7e-3 on an AVX-512 CPU). How far it goes depends on each CPU's kernels: no float32 tolerance both holds
# everywhere and tells a correct distributed step from a wrong one (another step schedule: 0.09).
# In float64 the rounding noise is ~1e-17 absolute, far below eps (Adam's gain on it is at most lr / eps = 1e5:
# ~1e-12), so the weights stay within ~1e-13 and no kink is crossed (a pre-activation would have to lie within
# ~1e-13 of 0). Measured ||n2 - n1|| / ||n1|| = 1.3e-13 (first epoch at N=2) and 5.7e-14 (first epoch at N=1,
# the rest at N=2), the same to 2 digits with ATEN_CPU_CAPABILITY=default and avx2 and with 1 or 2 threads per
# process. RTOL = 1e-10 leaves a factor 700 for other CPUs and is 1e8 below the effect of a real change
# (another step schedule, batches_per_step=1: 0.085 after one epoch).
RTOL = 1e-10
# the loss log rounds to 6 decimals
LOSS_ATOL = 1.5e-6


def torchrun(job_script: str, spec: Path, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``tests/distributed/<job_script> <spec>`` under ``torchrun --standalone`` with 2 CPU processes of one
    thread each, in an environment without a surrounding run's rank variables."""
    return torchrun_args([str(REPO / "tests" / "distributed" / job_script), str(spec)], cwd)


def torchrun_args(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node 2 ARGS`` (2 CPU processes of one thread each)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=cwd)


#: what a rank printed when it aborted in C++ after its work was done (SIGABRT at interpreter exit; about one run in
#: ten of these two-process jobs on the 2-core development machine at one time). The jobs, like the
#: mood-detector command under torchrun, now end with distributed.end_process, which skips that shutdown; the
#: rerun stays as a guard for the fixtures that every distributed test shares
ABORT_AT_EXIT = "terminate called without an active exception"


def torchrun_job(job_script: str, spec: Path, cwd: Path, reset: Callable[[], None]) -> subprocess.CompletedProcess:
    """:func:`torchrun`, run once more from scratch (after ``reset`` removes what the first run wrote) if a rank
    aborted at exit; a second failure of any kind is returned with both runs' output in ``stderr``."""
    res = torchrun(job_script, spec, cwd)
    if res.returncode != 0 and ABORT_AT_EXIT in res.stderr:
        first = res.stderr[-3000:]
        reset()
        res = torchrun(job_script, spec, cwd)
        res.stderr = f"FIRST RUN (aborted at exit):\n{first}\nSECOND RUN:\n{res.stderr}"
    return res


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """1 torch thread inside (as each torchrun rank has here), restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def rel_diff(a: Path, b: Path) -> float:
    ta, tb = load_weights(a)[0], load_weights(b)[0]
    assert ta.keys() == tb.keys()
    keys = [k for k in ta if ta[k].is_floating_point()]
    va = torch.cat([ta[k].double().flatten() for k in keys])
    vb = torch.cat([tb[k].double().flatten() for k in keys])
    return float((va - vb).norm() / vb.norm())


@pytest.fixture(scope="module")
def job(tmp_path_factory, tiny_fpi: Path) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("dist")
    data, w = root / "train", root / "w"
    data.mkdir()
    for i in range(4):
        save_nifti(data / f"{i:05d}.nii.gz", blob_volume(seed=200 + i))
    with float64():
        # single process (no process group): the reference, a first epoch for N=2 to resume, and a control
        # (another step schedule, 1 epoch) compared with that first epoch
        ref = train_detector(data, w / "n1.safetensors", TrainConfig(**FULL))
        first = train_detector(data, w / "from1.safetensors", TrainConfig(**FIRST))
        one_per_step = TrainConfig(**dict(FIRST, options={"batches_per_step": "1"}))
        control = rel_diff(train_detector(data, w / "p1.safetensors", one_per_step), first)
    inp = root / "in"
    inp.mkdir()
    for i in range(4):  # 5 inputs: the ranks take 3 and 2 of them; one is broken
        save_nifti(inp / (f"v{i}.nii.gz" if i % 2 else f"v{i}.nii"), blob_volume(seed=30 + i) * (i + 1))
    (inp / "broken.nii.gz").write_bytes(b"not a nifti")
    # Prediction (float32) is per file, with no cross-rank sums: CPU results are bit-identical for the same number
    # of torch threads per process; each torchrun rank gets cores // LOCAL_WORLD_SIZE threads (1 here; and
    # --threads 1), so the reference runs with 1 thread too.
    with one_thread():
        one = predict_folder(inp, root / "one", PredictConfig(tasks=("pixel", "sample"), device="cpu", threads=1,
                                                              progress=False), weights=tiny_fpi)
    spec = {"out": str(root), "dtype": "float64", "train": [
        dict(input=str(data), output=str(w / "n2.safetensors"), run_dir=str(w / "n2_run"), cfg=FULL),
        # resume under N=2 what N=1 started ... (and below: N=1 resumes what N=2 started)
        dict(input=str(data), output=str(w / "from1.safetensors"), run_dir=str(w / "from1_run"),
             cfg=dict(FULL, resume=True)),
        dict(input=str(data), output=str(w / "from2.safetensors"), run_dir=str(w / "from2_run"), cfg=FIRST)],
        "predict": ["predict", "both", "-i", str(inp), "-o", str(root / "two"), "-w", str(tiny_fpi),
                    "--device", "cpu", "--threads", "1", "--no-progress"]}
    (root / "spec.json").write_text(json.dumps(spec))
    shutil.copytree(w / "from1_run", root / "from1_run.before")  # what the job resumes, kept for a rerun

    def reset() -> None:  # the job's outputs gone, the run it resumes as it was
        for sub in ("w/n2_run", "w/from1_run", "w/from2_run", "two"):
            shutil.rmtree(root / sub, ignore_errors=True)
        for log_file in root.glob("checkpoint_writes_rank*.txt"):  # appended to by every run
            log_file.unlink()
        shutil.copytree(root / "from1_run.before", w / "from1_run")

    res = torchrun_job("job.py", root / "spec.json", root, reset)
    assert res.returncode == 0, res.stdout + res.stderr
    with float64():  # N=1 finishes what N=2 started
        resumed = train_detector(data, w / "from2.safetensors", TrainConfig(**dict(FULL, resume=True)))
    return dict(root=root, w=w, ref=ref, control=control, resumed=resumed, one=one, log=res.stdout + res.stderr)


def test_cross_rank_batchnorm_equals_full_batch(job):
    x, dy, bn = bn_case()
    xf = x.clone().requires_grad_(True)
    y = bn(xf)
    y.backward(dy)
    parts = [torch.load(job["root"] / f"bn_rank{r}.pt", weights_only=True) for r in range(2)]
    assert all(p["type"] == "DistBatchNorm" for p in parts)
    torch.testing.assert_close(torch.cat([p["y"] for p in parts]), y.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.cat([p["grad"] for p in parts]), xf.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(parts[0]["weight_grad"] + parts[1]["weight_grad"], bn.weight.grad)
    torch.testing.assert_close(parts[0]["bias_grad"] + parts[1]["bias_grad"], bn.bias.grad)
    for p in parts:
        torch.testing.assert_close(p["running_mean"], bn.running_mean)
        torch.testing.assert_close(p["running_var"], bn.running_var)


def test_two_processes_train_like_one(job):
    w = job["w"]
    # N=2 == N=1 up to floating-point order, SWA and the recomputed BN statistics included (float64: see RTOL) ...
    assert load_weights(job["ref"])[0]["net.stem.weight"].dtype == torch.float64
    assert rel_diff(w / "n2.safetensors", job["ref"]) < RTOL
    # ... while another step schedule is far outside that tolerance after one epoch already
    assert job["control"] > 100 * RTOL
    # the same global losses, logged once per epoch by rank 0
    rows, ref_rows = LossLog(w / "n2_run").rows(), LossLog(w / "n1_run").rows()
    assert [r["phase"] for r in rows] == ["train", "train", "swa"]
    for r, q in zip(rows, ref_rows):
        assert r["batches"] == q["batches"] == "2"
        assert abs(float(r["loss"]) - float(q["loss"])) <= LOSS_ATOL


def test_checkpoints_by_rank0_only_without_rank_state(job):
    root, w = job["root"], job["w"]
    assert not (root / "checkpoint_writes_rank1.txt").exists()
    writes = (root / "checkpoint_writes_rank0.txt").read_text().split("\n")[:-1]
    # from2 trains without SWA: its final BatchNorm recompute is saved once more as the last checkpoint
    assert writes == ["n2_run 1", "n2_run 2", "n2_run 3", "from1_run 2", "from1_run 3", "from2_run 1", "from2_run 1"]
    ckpt = load_checkpoint(w / "n2_run")
    assert ckpt is not None and not any(k.startswith("module.") for k in ckpt["net"])
    assert ckpt["net"].keys() == load_checkpoint(w / "n1_run")["net"].keys()


def test_resume_under_another_world_size(job):
    w = job["w"]
    assert rel_diff(w / "from1.safetensors", job["ref"]) < RTOL  # started with N=1, finished with N=2
    assert rel_diff(job["resumed"], job["ref"]) < RTOL  # started with N=2, finished with N=1


def test_predict_shards_files_and_matches_single_process(job):
    root = job["root"]
    results = [json.loads((root / f"predict_rank{r}.json").read_text()) for r in range(2)]
    # one combined report: rank 0 prints it and exits 1 (one input failed); rank 1 is silent and exits 0
    assert results[0]["exit"] == 1 and results[1]["exit"] == 0
    assert results[0]["stdout"].startswith("scored 4, skipped 0, failed 1;") and results[1]["stdout"] == ""
    # every input scored once: rank 0 took 3 of the 5 inputs, rank 1 the other 2
    assert "rank 0 of 2: scoring 3 of 5 inputs on cpu" in job["log"]
    assert "rank 1 of 2: scoring 2 of 5 inputs on cpu" in job["log"]
    # outputs byte-for-byte those of the single-process run
    one, two = root / "one", root / "two"
    names = sorted(p.name for p in one.iterdir())
    assert names == sorted(p.name for p in two.iterdir()) and len(names) == 8
    for name in names:
        assert (one / name).read_bytes() == (two / name).read_bytes(), name
    assert job["one"].exit_code == 1 and len(job["one"].scored) == 4


def test_the_console_command_under_torchrun_exits_with_its_status(tmp_path: Path, tiny_fpi: Path):
    """``python -m mood_detector`` in torchrun workers ends through distributed.end_process: exit 0 with every
    output written when all went well; 1 (rank 0's combined report) when an input failed, its outputs kept."""
    inp = tmp_path / "in"
    inp.mkdir()
    for i in range(3):
        save_nifti(inp / f"v{i}.nii.gz", blob_volume(seed=60 + i))
    base = ["-m", "mood_detector", "predict", "both", "-i", str(inp), "-w", str(tiny_fpi), "--device", "cpu"]
    ok = torchrun_args([*base, "-o", str(tmp_path / "ok")], tmp_path)
    assert ok.returncode == 0, ok.stderr[-4000:]
    assert ABORT_AT_EXIT not in ok.stderr
    assert sorted(p.name for p in (tmp_path / "ok").iterdir()) == sorted(
        [f"v{i}.nii.gz" for i in range(3)] + [f"v{i}.nii.gz.txt" for i in range(3)])
    (inp / "bad.nii.gz").write_bytes(b"not a volume")
    bad = torchrun_args([*base, "-o", str(tmp_path / "bad")], tmp_path)
    assert bad.returncode != 0 and "bad.nii.gz" in bad.stderr
    assert len(list((tmp_path / "bad").glob("v*.nii.gz"))) == 3
