"""Library entry point of ``mood-detector train``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from mood_detector import distributed
from mood_detector.detector import REGISTRY, Detector, TrainConfig, check_train_config, detector_class
from mood_detector.errors import InputError, OptionError
from mood_detector.io.folders import check_output_dir
from mood_detector.io.nifti import list_volumes, read_shape
from mood_detector.kinds import get_kind
from mood_detector.provenance import read_data_command
from mood_detector.training.budget import announce
from mood_detector.training.loop import load_checkpoint
from mood_detector.training.recipe import ExportSteps
from mood_detector.training.small_data import few_volume_options

log = logging.getLogger(__name__)


def default_run_dir(output: Path) -> Path:
    """``weights/brain.safetensors`` -> ``weights/brain_run``."""
    return output.with_suffix("").parent / (output.with_suffix("").name + "_run")


def warn_if_smaller_than_scored(files: list[Path], kind: str) -> int:
    """Log one warning when training volumes are smaller than the size ``kind``'s inputs are scored at
    (MOOD's: brain 256³, abdomen 512³); returns how many are. Only headers are read, through the package's
    checked reader (:func:`~mood_detector.io.nifti.read_shape`: capped extensions, regular files only).

    The network sees every volume resampled to its own size, but a volume *made* at 128³ is not the same image
    as one made at 256³ and resampled: measured on generated data, a model trained on 128³ volumes scores the
    normal tissue of 256³ (brain) or 512³ (abdomen) inputs markedly higher (docs/nsa.md)."""
    size = get_kind(kind).size
    small = 0
    for f in files:
        try:
            shape = read_shape(f)
        except InputError:  # reported by the loader itself, with its reason
            continue
        small += len(shape) >= 3 and max(shape[:3]) < size
    if small:
        log.warning("%d of %d training volumes are smaller than %d^3, the size %s inputs are scored at: the model "
                    "learns images made at a lower resolution than the resampled ones it will score; train on "
                    "volumes at the size you will score if you can (see docs/nsa.md)", small, len(files), size, kind)
    return small


def detector_from_checkpoint(run_dir: str | Path) -> Detector:
    """The model of a training run's last checkpoint (``export`` from a run folder), by the detector that the
    checkpoint's configuration names."""
    ckpt = load_checkpoint(Path(run_dir))
    if ckpt is None or "config" not in ckpt:
        raise ValueError(f"{run_dir}: no training checkpoint (checkpoint.pt) there")
    name = json.loads(ckpt["config"]).get("detector", "")
    if name not in REGISTRY:
        raise ValueError(f"{run_dir}: the checkpoint is not of a known detector ({name!r})")
    return detector_class(name).from_checkpoint(Path(run_dir))


def train_detector(input_dir: str | Path, output: str | Path, cfg: TrainConfig,
                   run_dir: str | Path | None = None, data_command: str | None = None,
                   export: ExportSteps | None = None) -> Path:
    """Train ``cfg.detector`` on every volume in ``input_dir``; save weights + card to ``output``.

    ``data_command``: the command that made the data, for the card (``None``: what ``make-data`` recorded in
    ``input_dir``, if anything). ``export``: steps to apply before saving (a recipe's float16 storage,
    test-time mirroring, ...). Under ``torchrun`` every rank calls this; the detector trains on the training
    engine's distributed path (docs/distributed.md) and rank 0 writes the weights."""
    input_dir, output = Path(input_dir), Path(output)
    files = list_volumes(input_dir)
    if not files:
        raise OptionError("--input", f"{input_dir}: no .nii/.nii.gz training volumes")
    if not cfg.training_data:
        cfg.training_data = f"{len(files)} volumes from {input_dir}"
    run = Path(run_dir) if run_dir else default_run_dir(output)
    if distributed.is_main():
        warn_if_smaller_than_scored(files, cfg.kind)
    cls = detector_class(cfg.detector)
    if distributed.current().enabled and not cls.supports_distributed:
        raise ValueError(f"detector {cfg.detector!r} does not support torchrun (multi-process) training yet; "
                         "train it in a single process")
    # a small data set: the options that vary its examples, where none were given (the same on every rank)
    cfg.options = few_volume_options(len(files), cls.options_cls, cfg.options, say=distributed.is_main())
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
            det.card.data_command = read_data_command(input_dir) if data_command is None else data_command
            if not cls.gives_verdict:
                announce("no verdict: this detector has no held-out task diagnostic")
            path = det.save(output, dtype=export.apply(det) if export is not None else None)
            log.info("wrote %s and its card", path)
        path = distributed.broadcast_object(path)
    return Path(path)
