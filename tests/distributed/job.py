"""The 2-process job of the distributed tests, launched by ``torchrun`` (see ``test_torchrun.py``).

Usage: ``torchrun --standalone --nproc_per_node 2 tests/distributed/job.py SPEC.json``. Every rank: creates the
process group from torchrun's variables (``distributed.session``), checks the cross-rank BatchNorm, runs the
training jobs of SPEC (``train_detector`` in SPEC's ``dtype``; every checkpoint write is logged with the rank
that made it), then runs ``mood-detector predict`` (the click command, in process) and records its exit code and
stdout.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path
from typing import Any

import torch

from mood_detector import distributed
from mood_detector.cli import main as cli
from mood_detector.detector import TrainConfig
from mood_detector.training import engine as training_engine
from mood_detector.training.api import train_detector


def bn_case(seed: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.nn.BatchNorm2d]:
    """Input, upstream gradient and an affine BatchNorm2d for the cross-rank BatchNorm check."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(6, 3, 5, 4, generator=g) * 2.0 + 1.5
    dy = torch.randn(6, 3, 5, 4, generator=g)
    bn = torch.nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.weight.copy_(torch.rand(3, generator=g) + 0.5)
        bn.bias.copy_(torch.randn(3, generator=g))
    return x, dy, bn


def run(spec: dict[str, Any]) -> None:
    torch.set_num_threads(1)
    out = Path(spec["out"])
    with distributed.session("cpu") as (env, _):
        rank = env.rank
        assert env.world_size == 2 and distributed.is_distributed()
        real_save = training_engine.save_checkpoint

        def spy(run_dir: Path, state: dict[str, Any]) -> Path:
            with (out / f"checkpoint_writes_rank{rank}.txt").open("a") as fh:
                fh.write(f"{Path(run_dir).name} {state['epoch']}\n")
            return real_save(run_dir, state)

        training_engine.save_checkpoint = spy
        # cross-rank BatchNorm on this rank's half of the batch: output, gradients, running statistics
        x, dy, bn = bn_case()
        dbn = distributed.convert_sync_bn(bn, torch.device("cpu"))
        xr = x[rank * 3:rank * 3 + 3].clone().requires_grad_(True)
        y = dbn(xr)
        y.backward(dy[rank * 3:rank * 3 + 3])
        torch.save({"y": y.detach(), "grad": xr.grad, "weight_grad": dbn.weight.grad, "bias_grad": dbn.bias.grad,
                    "running_mean": dbn.running_mean.clone(), "running_var": dbn.running_var.clone(),
                    "type": type(dbn).__name__}, out / f"bn_rank{rank}.pt")
        # training in torch's default dtype from SPEC (float64: see test_torchrun.RTOL), prediction in float32
        dtype = torch.get_default_dtype()
        torch.set_default_dtype(getattr(torch, spec.get("dtype", "float32")))
        try:
            for job in spec["train"]:
                train_detector(job["input"], job["output"], TrainConfig(**job["cfg"]), job["run_dir"])
        finally:
            torch.set_default_dtype(dtype)
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            try:
                cli.main(spec["predict"], prog_name="mood-detector", standalone_mode=False)
                code = 0
            except SystemExit as exc:
                code = int(exc.code or 0)
        (out / f"predict_rank{rank}.json").write_text(json.dumps({"exit": code, "stdout": buf.getvalue()}))


if __name__ == "__main__":
    run(json.loads(Path(sys.argv[1]).read_text()))
    distributed.end_process(0)  # as the mood-detector command ends under torchrun
