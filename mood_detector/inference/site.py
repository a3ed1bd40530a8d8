"""Adapt a model once to a site's normal scans and keep the result (``mood-detector adapt``).

The test-time fine-tune (:mod:`mood_detector.inference.adapt`) trains the detector's own self-supervised task on
the folder being scored, every time it is scored. :func:`adapt_to_site` runs the same fine-tune once, on a
folder of a site's normal scans, and leaves the adapted detector, whose weights are then saved with a model card
that says what it was adapted on; ``predict -w`` scores with them like with any other weights.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from mood_detector.detector import Detector
from mood_detector.errors import InputError, MoodError
from mood_detector.inference.adapt import FinetuneConfig, FinetuneOutcome, finetune_stacks, pick_slices
from mood_detector.io.nifti import ReadLimits, read_volume

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SiteConfig:
    """How :func:`adapt_to_site` adapts.

    Attributes:
        finetune: the fine-tune (steps, learning rate, seed, robust rule, guard); its ``batch_size`` also sets
            the slices taken from each scan (4 batches' worth, as the test-time fine-tune takes).
        max_slices: at most this many candidate slices over all scans (fewer per scan for large folders), so
            that memory stays bounded.
        device: where the fine-tune runs (``auto``: a GPU if visible).
        limits: what the reader accepts (sizes, non-finite values).
    """

    finetune: FinetuneConfig = FinetuneConfig()
    max_slices: int = 2048
    device: str = "auto"
    limits: ReadLimits = field(default_factory=ReadLimits)


@dataclass
class SiteResult:
    """What :func:`adapt_to_site` did: the scans used, those that failed (path, one-line reason), the
    fine-tune's outcome."""

    used: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    outcome: FinetuneOutcome = field(default_factory=FinetuneOutcome)


def adapt_to_site(files: Sequence[Path], det: Detector, cfg: SiteConfig = SiteConfig(),
                  base_name: str = "", folder_name: str = "") -> SiteResult:
    """Fine-tune ``det`` in place on slices of the normal scans ``files`` (each prepared as ``predict`` prepares
    it: the card's intensity scheme, resampled to the network size) with its own self-supervised task, and record
    it in ``det``'s card (:func:`record_adaptation`; ``base_name`` names the weights it started from,
    ``folder_name`` the scans' folder).

    A scan that cannot be read is reported in the result (one line each) and left out. Raises
    :class:`MoodError` for a detector without a self-supervised task, when no scan could be used, and when the
    fine-tune did not change the model (no non-empty slices, or the guard restored the weights as trained)."""
    from mood_detector.detector import resolve_device
    from mood_detector.inference.predictor import PredictConfig, Predictor

    if not det.supports_finetune:
        raise MoodError(f"the {det.name} detector has no self-supervised task to fine-tune; adapt takes fpi and "
                        f"nsa weights")
    device = resolve_device(cfg.device)
    # the predictor prepares each scan exactly as it does when scoring, and picks the slicing axes
    scorer = Predictor(det, PredictConfig(device=str(device), progress=False, limits=cfg.limits))
    axes = scorer.axes_for(det)
    per_volume = max(4, min(4 * cfg.finetune.batch_size, cfg.max_slices // max(1, len(files))))
    result = SiteResult()
    stacks = []
    for path in files:
        try:
            net = scorer.network_volume(det, read_volume(path, cfg.limits).data, inplace=True)[0]
        except InputError as exc:
            result.failed.append((Path(path), exc.reason))
            continue
        except Exception as exc:  # noqa: BLE001 - one bad scan must not stop the others
            result.failed.append((Path(path), f"could not be read ({type(exc).__name__}: {exc})"))
            continue
        stack = pick_slices(net, axes, per_volume=per_volume)
        del net
        if not len(stack):
            result.failed.append((Path(path), "no non-empty slice at the network size"))
            continue
        stacks.append(stack)
        result.used.append(Path(path))
    for path, reason in result.failed:
        log.error("%s: %s", path, reason)
    if not stacks:
        raise MoodError(f"no usable scan among the {len(files)} inputs; nothing to adapt on")
    log.info("adapting the %s %s model on %d slices of %d scans (%d steps)", det.card.kind, det.name,
             sum(len(s) for s in stacks), len(stacks), cfg.finetune.steps)
    with torch.enable_grad():
        result.outcome = finetune_stacks(det, stacks, cfg.finetune, device)
    det.to("cpu").eval()
    if result.outcome.reverted:
        raise MoodError(f"the fine-tune raised the task loss on held-out slices ({result.outcome.loss_before:.4f} "
                        f"-> {result.outcome.loss_after:.4f}); nothing written: the weights as trained fit these "
                        f"scans better (try fewer --steps)")
    if not result.outcome.changed:
        raise MoodError("the fine-tune did not run (no slices to train on); nothing written")
    record_adaptation(det, result, cfg.finetune, base_name, folder_name)
    return result


def record_adaptation(det: Detector, result: SiteResult, cfg: FinetuneConfig, base_name: str,
                      folder_name: str) -> None:
    """Write into ``det``'s card that it was adapted: ``extra.site_adaptation`` (what on, how, from which
    weights), the ``training_data`` text extended, ``commit`` the code that adapted it, and ``extra.adapt``
    ``none`` (predict does not adapt it again unless ``--adapt`` says so)."""
    from mood_detector.weights import git_commit

    card = det.card
    out = result.outcome
    info = {
        "scans": len(result.used),
        "folder": folder_name,
        "steps": out.steps,
        "seed": cfg.seed,
        "lr": cfg.lr,
        "batch_size": cfg.batch_size,
        "slices": out.slices,
        "outlier_k": cfg.outlier_k,
        "slices_left_out": out.dropped,
        "guard_slices": out.held_out,
        "guard_loss": [out.loss_before, out.loss_after],
        "base": {"name": base_name, "detector": card.detector, "kind": card.kind, "commit": card.commit,
                 "adapt": card.extra.get("adapt", "none")},
    }
    card.extra["site_adaptation"] = info
    card.extra["adapt"] = "none"
    text = (f"adapted to {len(result.used)} normal scans of the folder {folder_name!r} by a self-supervised "
            f"fine-tune of its synthetic-anomaly task ({out.steps} steps, seed {cfg.seed}, mood-detector adapt) "
            f"from {base_name or 'its base weights'}")
    det.card = replace(card, training_data=f"{card.training_data}; then {text}" if card.training_data else text,
                       commit=git_commit() or card.commit)
