"""Library entry point of ``mood-detector predict``: find weights, build the predictor, run a folder."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Mapping

from mood_detector import distributed
from mood_detector.detector import DEFAULT_DETECTOR, Detector, check_device, load_detector
from mood_detector.errors import OptionError, WeightsError
from mood_detector.inference.predictor import PredictConfig, Predictor, PredictReport
from mood_detector.kinds import KINDS

log = logging.getLogger(__name__)


def default_weights_dir() -> Path:
    """``$MOOD_WEIGHTS_DIR`` if set, else the ``weights/`` folder beside the package (source checkout or
    container layout)."""
    env = os.environ.get("MOOD_WEIGHTS_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "weights"


def find_weights(weights: str | Path | None, kind: str, detector: str = DEFAULT_DETECTOR) -> dict[str, Path]:
    """Weights to use, per kind. A ``.safetensors`` file is used for every volume (key ``*``); a folder is
    searched for ``<kind>/<detector>.safetensors`` for ``kind`` (or every kind for ``auto``)."""
    if weights is not None and Path(weights).is_file():
        return {"*": Path(weights)}
    root = Path(weights) if weights is not None else default_weights_dir()
    kinds = list(KINDS) if kind == "auto" else [kind]
    found = {k: root / k / f"{detector}.safetensors" for k in kinds if (root / k / f"{detector}.safetensors").is_file()}
    if not found:
        raise WeightsError(f"no {detector} weights for kind {kind!r} under {root} "
                           f"(expected {root}/<kind>/{detector}.safetensors); pass --weights")
    if kind != "auto":
        return {"*": found[kind]}
    return found


def load_detectors(paths: Mapping[str, Path], device: str = "cpu") -> dict[str, Detector]:
    """Load each weights file once."""
    return {k: load_detector(p, "cpu") for k, p in paths.items()}


def predict_folder(input_dir: str | Path, output_dir: str | Path, cfg: PredictConfig,
                   weights: str | Path | None = None, kind: str = "auto",
                   detector: str | None = None) -> PredictReport:
    """Score every volume in ``input_dir`` into ``output_dir`` with the chosen weights. Under ``torchrun`` the
    files are sharded across the ranks and the report combines all ranks (``inference.sharded``).

    ``detector``: whose weights to look up in a folder (``None``: :data:`DEFAULT_DETECTOR`); a weights file must
    hold that detector (any with ``None``), and with ``kind`` other than ``auto`` be for that kind
    (:class:`OptionError`)."""
    check_device(cfg.device)
    paths = find_weights(weights, kind, detector or DEFAULT_DETECTOR)
    for k, p in paths.items():
        log.info("weights for %s: %s", "all volumes" if k == "*" else k, p)
    dets = load_detectors(paths)
    for det, path in ((d, paths[k]) for k, d in dets.items()):
        if detector is not None and det.card.detector != detector:
            raise OptionError("--detector", f"{detector}: the weights {path} are {det.card.detector} weights")
        if kind != "auto" and det.card.kind != kind:
            raise OptionError("--kind", f"{kind}: the weights {path} are for {det.card.kind} volumes; use --kind "
                                        f"{det.card.kind} or auto, or other weights")
    if distributed.current().enabled:
        from mood_detector.inference.sharded import predict_folder_sharded

        return predict_folder_sharded(dets["*"] if "*" in dets else dets, input_dir, output_dir, cfg)
    predictor = Predictor(dets["*"] if "*" in dets else dets, cfg)
    return predictor.predict_folder(input_dir, output_dir)
