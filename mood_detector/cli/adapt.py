"""``mood-detector adapt``: fine-tune a model once on a site's normal scans and write the adapted weights."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from mood_detector.detector import DEFAULT_DETECTOR, REGISTRY

log = logging.getLogger(__name__)


@click.command("adapt")
@click.option("-i", "--input", "input_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder of the site's NORMAL scans (every *.nii / *.nii.gz directly in it); a scan that cannot "
                   "be read is reported in one line and left out.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Weights file to write (.safetensors; the model card is written beside it as .json); never a "
                   "bundled model.")
@click.option("-w", "--weights", type=click.Path(exists=True, path_type=Path), default=None,
              help="The base model: a .safetensors file, or a folder holding <kind>/<detector>.safetensors "
                   "[default: $MOOD_WEIGHTS_DIR or the bundled weights/, as predict resolves them].")
@click.option("--kind", type=click.Choice(["auto", "brain", "abdom"]), default="auto", show_default=True,
              help="Which base weights to use when --weights is a folder; auto guesses from the first readable scan "
                   "as predict does (256^3 brain, 512^3 abdom, other shapes from the intensities).")
@click.option("--detector", type=click.Choice(sorted(REGISTRY)), default=None,
              help=f"Detector whose weights to look up in a --weights folder [default: {DEFAULT_DETECTOR}]; with a "
                   "weights file, the file must hold this detector. Only fpi and nsa models can be adapted.")
@click.option("--device", default="auto", show_default=True, help="auto (GPU if visible), cpu, cuda or cuda:N.")
@click.option("--steps", type=click.IntRange(min=1), default=600, show_default=True,
              help="Optimiser steps of the fine-tune (16 slices each; as predict's --adapt-steps).")
@click.option("--seed", type=click.IntRange(min=0, max=2**32 - 1), default=0, show_default=True,
              help="Seed of the fine-tune (slices and the task's draws): the same scans and seed give the same "
                   "weights on the same machine.")
def adapt(input_dir: Path, output: Path, weights: Path | None, kind: str, detector: str | None, device: str,
          steps: int, seed: int) -> None:
    """Fine-tune a model on a folder of a site's NORMAL scans and write the adapted weights to OUTPUT.

    The fine-tune is predict's --adapt finetune, run once: the detector's own self-supervised task on slices of
    the scans (docs/generalisation.md), with its robust rule (slices the model already scores as outliers are
    left out) and its guard (nothing is written when the fine-tune makes the task worse on held-out slices).
    The card says what the model was adapted on; score with `predict -w OUTPUT`.

    \b
    Exit codes:
      0  adapted on every scan; weights written
      1  some scans failed (listed; the weights were adapted on the others), or nothing could be adapted
      2  usage error: bad option, missing or empty input folder, missing or invalid weights
    """
    from mood_detector.bundled import refuse_bundled

    if (why := refuse_bundled(output, force=False)) is not None:
        raise click.UsageError(why)
    from mood_detector.detector import check_device
    from mood_detector.errors import MoodError, WeightsError
    from mood_detector.inference.adapt import FinetuneConfig
    from mood_detector.inference.site import SiteConfig, adapt_to_site
    from mood_detector.io.folders import log_ignored, scan_inputs

    try:
        check_device(device)
        scan = scan_inputs(input_dir)
    except MoodError as exc:
        raise click.UsageError(str(exc)) from None
    log_ignored(scan)
    if not scan.volumes:
        raise click.UsageError(f"{input_dir}: no .nii or .nii.gz scans in it to adapt on")
    try:
        det, base = _base_detector(weights, kind, detector, scan.volumes)
    except WeightsError as exc:
        raise click.BadParameter(str(exc), param_hint="'-w' / '--weights'") from None
    except MoodError as exc:
        raise click.UsageError(str(exc)) from None
    cfg = SiteConfig(finetune=FinetuneConfig(steps=steps, seed=seed), device=device)
    try:
        result = adapt_to_site(scan.volumes, det, cfg, base_name=base.name, folder_name=input_dir.resolve().name)
    except MoodError as exc:  # the scans that failed are logged, one line each
        raise click.ClickException(str(exc)) from None
    try:
        path = det.save(output)
    except OSError as exc:
        raise click.ClickException(f"{output}: could not write the weights ({exc})") from None
    click.echo(f"adapted on {len(result.used)} scans ({result.outcome.dropped} of {result.outcome.slices} slices "
               f"left out as outliers); weights: {path}")
    if result.failed:
        click.echo("failed scans:", err=True)
        for p, reason in result.failed:
            click.echo(f"  {p}: {reason}", err=True)
        sys.exit(1)


def _base_detector(weights: Path | None, kind: str, detector: str | None, scans: list[Path]):
    """The base detector and its weights file: ``weights`` as predict finds them
    (:func:`~mood_detector.inference.api.find_weights`); with ``kind`` auto and weights for several kinds, the
    kind guessed from the first readable scan. Checks ``--kind`` and ``--detector`` against the file's card."""
    from mood_detector.detector import load_detector
    from mood_detector.errors import MoodError, OptionError
    from mood_detector.inference.api import find_weights
    from mood_detector.io.nifti import read_volume
    from mood_detector.kinds import guess_kind

    paths = find_weights(weights, kind, detector or DEFAULT_DETECTOR)
    if "*" in paths:
        path = paths["*"]
    else:
        for scan in scans:
            try:
                data = read_volume(scan).data
            except MoodError:
                continue
            guessed, reason = guess_kind(data.shape, data)
            if reason is not None:
                log.warning("%s: kind guessed as %r (%s); pass --kind to choose", scan, guessed.name, reason)
            if guessed.name not in paths:
                raise MoodError(f"no {detector or DEFAULT_DETECTOR} weights for kind {guessed.name!r} (guessed "
                                f"from {scan.name}); pass --weights or --kind")
            path = paths[guessed.name]
            break
        else:
            raise MoodError("no readable scan to guess the kind from; pass --kind")
    det = load_detector(path)
    if detector is not None and det.card.detector != detector:
        raise OptionError("--detector", f"{detector}: the weights {path} are {det.card.detector} weights")
    if kind != "auto" and det.card.kind != kind:
        raise OptionError("--kind", f"{kind}: the weights {path} are for {det.card.kind} volumes; use --kind "
                                    f"{det.card.kind} or auto, or other weights")
    return det, path
