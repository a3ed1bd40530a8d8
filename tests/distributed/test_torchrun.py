"""Training and prediction under torchrun: ONE 2-process CPU (gloo) job against single-process runs.

The module fixture runs the single-process references, then ``torchrun --standalone --nproc_per_node 2
tests/distributed/job.py``; the tests check its results.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from mood_detector.detector import TrainConfig
from mood_detector.inference.api import predict_folder
from mood_detector.inference.predictor import PredictConfig
from mood_detector.training.api import train_detector
from mood_detector.training.loop import LossLog, load_checkpoint
from mood_detector.weights import load_weights
from tests.conftest import blob_volume, save_nifti
from tests.distributed.job import bn_case

REPO = Path(__file__).resolve().parents[2]
# 4 volumes = 2 pairs; 2 batches per step (one pair each: one per rank at N=2); each pair gives batches of 12 and
# 8-12 slices, so the ranks' local batches differ in size (the loss weighting matters); 2 steps per epoch
BASE = dict(kind="brain", size=32, width=0.125, batch_size=24, max_batches_per_pair=0, device="cpu",
            batches_per_step=2, seed=7)
FULL = dict(BASE, epochs=2, swa_epochs=1)   # 2 Adam epochs + 1 SWA epoch (+ BN statistics recomputed)
FIRST = dict(BASE, epochs=1, swa_epochs=0)  # the first epoch only: then resume to FULL
# ||a - b|| / ||b|| over all weights and BN statistics. Measured: N=2 vs N=1 5e-6; N=1 with its batch merely
# permuted (the same sums in another order) 8e-6; another step schedule (batches_per_step=1) ~0.1. Adam turns
# float-order noise in near-zero gradient components into larger weight differences, growing with the steps.
RTOL = 1e-4


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
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        # single process (no process group): the reference, a first epoch for N=2 to resume, and a control
        # (another step schedule, 1 epoch) compared with that first epoch
        ref = train_detector(data, w / "n1.safetensors", TrainConfig(**FULL))
        first = train_detector(data, w / "from1.safetensors", TrainConfig(**FIRST))
        control = rel_diff(train_detector(data, w / "p1.safetensors", TrainConfig(**dict(FIRST, batches_per_step=1))),
                           first)
        inp = root / "in"
        inp.mkdir()
        for i in range(4):  # 5 inputs: the ranks take 3 and 2 of them; one is broken
            save_nifti(inp / (f"v{i}.nii.gz" if i % 2 else f"v{i}.nii"), blob_volume(seed=30 + i) * (i + 1))
        (inp / "broken.nii.gz").write_bytes(b"not a nifti")
        # CPU results are bit-identical for the same number of torch threads per process: each torchrun rank
        # gets cores // LOCAL_WORLD_SIZE threads (1 here), so the reference runs with 1 thread too.
        one = predict_folder(inp, root / "one", PredictConfig(tasks=("pixel", "sample"), device="cpu", threads=1,
                                                              progress=False), weights=tiny_fpi)
    finally:
        torch.set_num_threads(threads)
    spec = {"out": str(root), "train": [
        dict(input=str(data), output=str(w / "n2.safetensors"), run_dir=str(w / "n2_run"), cfg=FULL),
        # resume under N=2 what N=1 started ... (and below: N=1 resumes what N=2 started)
        dict(input=str(data), output=str(w / "from1.safetensors"), run_dir=str(w / "from1_run"),
             cfg=dict(FULL, resume=True)),
        dict(input=str(data), output=str(w / "from2.safetensors"), run_dir=str(w / "from2_run"), cfg=FIRST)],
        "predict": ["predict", "both", "-i", str(inp), "-o", str(root / "two"), "-w", str(tiny_fpi),
                    "--device", "cpu", "--threads", "1", "--no-progress"]}
    (root / "spec.json").write_text(json.dumps(spec))
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(REPO / "tests" / "distributed" / "job.py"), str(root / "spec.json")],
                         capture_output=True, text=True, env=env, timeout=600, cwd=root)
    assert res.returncode == 0, res.stdout + res.stderr
    torch.set_num_threads(1)
    try:  # N=1 finishes what N=2 started
        resumed = train_detector(data, w / "from2.safetensors", TrainConfig(**dict(FULL, resume=True)))
    finally:
        torch.set_num_threads(threads)
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
    # N=2 == N=1 up to floating-point order, SWA and the recomputed BN statistics included ...
    assert rel_diff(w / "n2.safetensors", job["ref"]) < RTOL
    # ... while another step schedule is far outside that tolerance after one epoch already
    assert job["control"] > 100 * RTOL
    # the same global losses, logged once per epoch by rank 0
    rows, ref_rows = LossLog(w / "n2_run").rows(), LossLog(w / "n1_run").rows()
    assert [r["phase"] for r in rows] == ["train", "train", "swa"]
    for r, q in zip(rows, ref_rows):
        assert r["batches"] == q["batches"] == "2"
        assert abs(float(r["loss"]) - float(q["loss"])) < 1e-4


def test_checkpoints_by_rank0_only_without_rank_state(job):
    root, w = job["root"], job["w"]
    assert not (root / "checkpoint_writes_rank1.txt").exists()
    writes = (root / "checkpoint_writes_rank0.txt").read_text().split("\n")[:-1]
    assert writes == ["n2_run 1", "n2_run 2", "n2_run 3", "from1_run 2", "from1_run 3", "from2_run 1"]
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
