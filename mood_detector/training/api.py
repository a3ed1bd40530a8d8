"""Library entry point of ``mood-detector train``."""

from __future__ import annotations

import logging
from pathlib import Path

from mood_detector import distributed
from mood_detector.detector import TrainConfig, check_train_config, detector_class
from mood_detector.errors import OptionError
from mood_detector.io.folders import check_output_dir
from mood_detector.io.nifti import list_volumes

log = logging.getLogger(__name__)


def default_run_dir(output: Path) -> Path:
    """``weights/brain.safetensors`` -> ``weights/brain_run``."""
    return output.with_suffix("").parent / (output.with_suffix("").name + "_run")


def train_detector(input_dir: str | Path, output: str | Path, cfg: TrainConfig,
                   run_dir: str | Path | None = None) -> Path:
    """Train ``cfg.detector`` on every volume in ``input_dir``; save weights + card to ``output``.

    Under ``torchrun`` every rank calls this; the detector trains with DDP and rank 0 writes the weights."""
    input_dir, output = Path(input_dir), Path(output)
    files = list_volumes(input_dir)
    if not files:
        raise OptionError("--input", f"{input_dir}: no .nii/.nii.gz training volumes")
    if not cfg.training_data:
        cfg.training_data = f"{len(files)} volumes from {input_dir}"
    run = Path(run_dir) if run_dir else default_run_dir(output)
    cls = detector_class(cfg.detector)
    if distributed.current().enabled and not getattr(cls, "supports_distributed", False):
        raise ValueError(f"detector {cfg.detector!r} does not support torchrun (multi-process) training yet; "
                         "train it in a single process")
    # every option value before any work: a usage error naming the option, not a crash minutes later
    check_train_config(cfg)
    if distributed.is_main():  # the rank that writes the weights and the run folder
        if output.is_dir():
            raise OptionError("--output", f"{output} is a folder; give the weights file to write, e.g. "
                                          f"{output / 'model.safetensors'}")
        check_output_dir(output.parent, "--output")  # so that the run does not end at a folder it cannot write
        check_output_dir(run, "--run-dir")
    log.info("training %s on %d volumes from %s (run folder %s)", cfg.detector, len(files), input_dir, run)
    with distributed.session(cfg.device):  # under torchrun: one process group for fit and save
        det = cls.fit(files, cfg, run)
        path = None
        if distributed.is_main():  # one writer; the others learn the path once it is written
            path = det.save(output)
            log.info("wrote %s and its card", path)
        path = distributed.broadcast_object(path)
    return Path(path)
