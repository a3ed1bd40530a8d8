"""``mood-detector predict`` under torchrun: the input files sharded across ranks, one combined report.

Every rank lists the input folder (sorted by name, so all ranks see the same list; checked), takes the files
``i`` with ``i % world_size == rank`` and scores them on its own device (``cuda:LOCAL_RANK``, or the CPU) with
the ordinary :class:`~mood_detector.inference.predictor.Predictor`. Each file is therefore scored exactly once,
by the same code as in a single process, so the outputs are identical to a single-process run. The ranks'
reports are gathered (``all_gather_object``) and merged in input order on every rank, so every rank returns
the same report and exits with the same code; only rank 0 shows a progress bar (and, in the CLI, prints).
With ``--strict``, a failure stops its own rank's shard; the other ranks finish theirs, then every rank raises.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Sequence

from mood_detector import distributed
from mood_detector.detector import Detector
from mood_detector.errors import MoodError, StrictFailure
from mood_detector.inference.predictor import PredictConfig, Predictor, PredictReport
from mood_detector.io.folders import log_ignored, scan_inputs

log = logging.getLogger(__name__)


def merge_reports(files: Sequence[Path], reports: Sequence[PredictReport]) -> PredictReport:
    """One report from the ranks' reports, each list in the order of ``files`` (duplicates are kept, so a file
    scored twice would show up twice)."""
    order = {Path(f): i for i, f in enumerate(files)}
    key = lambda p: order.get(Path(p), len(order))  # noqa: E731
    out = PredictReport()
    for rep in reports:
        out.scored.extend(rep.scored)
        out.skipped.extend(rep.skipped)
        out.failed.extend(rep.failed)
        out.samples.update(rep.samples)
    out.scored.sort(key=key)
    out.skipped.sort(key=key)
    out.failed.sort(key=lambda item: key(item[0]))
    out.samples = {Path(f).name: out.samples[Path(f).name] for f in files if Path(f).name in out.samples}
    return out


def predict_folder_sharded(detectors: Detector | dict[str, Detector], input_dir: str | Path,
                           output_dir: str | Path, cfg: PredictConfig) -> PredictReport:
    """Score ``input_dir`` into ``output_dir``, this rank's share of the files; returns the combined report of
    all ranks (the same on every rank). Creates the process group under torchrun if none exists."""
    with distributed.session(cfg.device) as (env, device):
        in_dir = Path(input_dir)
        scan = scan_inputs(in_dir)  # MoodError (usage error) if it is not a folder
        if env.is_main:
            log_ignored(scan)
        files = scan.volumes
        distributed.check_same([f.name for f in files], "the input files")
        if not files:  # the same usage error as a single-process run (exit 2)
            raise MoodError(f"{in_dir}: no .nii or .nii.gz files to score in the input folder")
        mine = distributed.shard(files)
        log.info("rank %d of %d: scoring %d of %d inputs on %s", env.rank, env.world_size, len(mine), len(files),
                 device)
        rank_cfg = dataclasses.replace(cfg, device=str(device), progress=cfg.progress and env.is_main)
        error = ""
        try:
            report = Predictor(detectors, rank_cfg).predict_files(mine, output_dir)
        except StrictFailure as exc:
            report, error = PredictReport(), str(exc)
        gathered = distributed.all_gather_object((report, error))
    errors = [e for _, e in gathered if e]
    if errors:
        raise StrictFailure(errors[0])
    return merge_reports(files, [rep for rep, _ in gathered])
