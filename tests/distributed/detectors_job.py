"""The 2-process job of ``test_detectors.py``, launched by ``torchrun``: trains detectors with ``train_detector``.

Usage: ``torchrun --standalone --nproc_per_node 2 tests/distributed/detectors_job.py SPEC.json``. For each
training of SPEC, every rank runs ``train_detector`` in SPEC's ``dtype`` and saves the tensors of the detector
it trained to ``OUT/<name>_rank<R>.pt`` (rank 1 writes no weights of its own), so the test can compare the
ranks.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

from mood_detector import distributed
from mood_detector.detector import TrainConfig, detector_class
from mood_detector.training.api import train_detector


def run(spec: dict[str, Any]) -> None:
    torch.set_num_threads(1)
    out = Path(spec["out"])
    with distributed.session("cpu") as (env, _):
        assert env.world_size == 2 and distributed.is_distributed()
        for job in spec["train"]:
            cls = detector_class(job["cfg"]["detector"])
            fit = cls.fit

            def spy(files, cfg, run_dir, fit=fit, name=job["name"]):  # type: ignore[no-untyped-def]
                det = fit(files, cfg, run_dir)
                torch.save({k: v.detach().cpu().clone() for k, v in det.state_tensors().items()},
                           out / f"{name}_rank{env.rank}.pt")
                return det

            cls.fit = spy  # type: ignore[method-assign]
            dtype = torch.get_default_dtype()
            torch.set_default_dtype(getattr(torch, job.get("dtype", "float32")))
            try:
                train_detector(job["input"], job["output"], TrainConfig(**job["cfg"]), job["run_dir"],
                               data_command="")
            finally:
                torch.set_default_dtype(dtype)
                cls.fit = fit  # type: ignore[method-assign]


if __name__ == "__main__":
    run(json.loads(Path(sys.argv[1]).read_text()))
    distributed.end_process(0)  # as the mood-detector command ends under torchrun
