"""``mood-detector export``: weights from a training run's checkpoint, or weights in another precision."""

from __future__ import annotations

from pathlib import Path

import click

from mood_detector.cli import mirror_option, slice_rule_option


@click.command("export")
@click.option("-i", "--input", "source", type=click.Path(exists=True, path_type=Path), required=True,
              help="A weights file (.safetensors with its .json card) or an FPI or NSA training run folder "
                   "(checkpoint.pt: the last finished epoch).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Weights file to write (.safetensors; the card is written beside it).")
@click.option("--dtype", type=click.Choice(["float32", "float16"]), default="float32", show_default=True,
              help="Precision of the stored floating-point tensors (loading always computes in float32).")
@click.option("--slice-score", default=None, callback=slice_rule_option,
              help="Set the card's slice score rule: 'mean' or 'top:Q' (mean of the highest fraction Q of a "
                   "slice's pixel scores) [default: keep the source's].")
@click.option("--mirror", default=None, metavar="none|AXES", callback=mirror_option,
              help="Set the card's tta_mirror, the test-time mirroring predict uses by default: 'none' or a comma "
                   "list of volume axes (see predict --mirror) [default: keep the source's].")
@click.option("--axes", "score_axes", type=click.Choice(["model", "all"]), default=None,
              help="Set the card's score_axes, the slicing axes predict uses by default (it overrides the card's "
                   "train_axes there): 'model' (the model's slice axis only) or 'all' [default: keep the source's].")
@click.option("--adapt", type=click.Choice(["none", "bn", "finetune", "auto"]), default=None,
              help="Set the card's adapt, the test-time adaptation predict uses by default (see predict --adapt) "
                   "[default: keep the source's].")
@click.option("--bn-data", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="FPI, NSA and SQUID: recompute the BatchNorm statistics as an average over --bn-batches training "
                   "batches from the volumes in this folder (the training data) instead of keeping the running "
                   "statistics (SQUID also refills its memory queue and recomputes its score statistics from them).")
@click.option("--bn-batches", type=click.IntRange(min=1), default=64, show_default=True,
              help="Batches for --bn-data (FPI and NSA: one per volume pair, as many pairs as there are; SQUID: "
                   "batches of slices mixed from all the volumes).")
@click.option("--force", is_flag=True, default=False,
              help="Allow OUTPUT to be a bundled model (a file tracked in weights/); without it export refuses.")
def export(source: Path, output: Path, dtype: str, slice_score: str | None, mirror: str | None,
           score_axes: str | None, adapt: str | None, bn_data: Path | None, bn_batches: int, force: bool) -> None:
    """Write SOURCE's model to OUTPUT: to score an unfinished run, or to store weights in float16."""
    from mood_detector.bundled import refuse_bundled

    if (why := refuse_bundled(output, force)) is not None:
        raise click.ClickException(why)
    import torch

    from mood_detector.detector import load_detector
    from mood_detector.errors import MoodError

    try:
        if source.is_dir():
            from mood_detector.training.api import detector_from_checkpoint

            det = detector_from_checkpoint(source)
        else:
            det = load_detector(source)
        if bn_data is not None:
            det.recompute_bn(_bn_volumes(bn_data), bn_batches)
        det.card.extra["stored_dtype"] = dtype
        if slice_score is not None:
            det.card.extra["slice_score"] = slice_score
        if mirror is not None:
            det.card.extra["tta_mirror"] = mirror.strip()
        if score_axes is not None:
            det.card.extra["score_axes"] = score_axes
        if adapt is not None:
            det.card.extra["adapt"] = adapt
        path = det.save(output, dtype=getattr(torch, dtype))
    except (ValueError, MoodError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"weights: {path}")


def _bn_volumes(folder: Path) -> list[Path]:
    """The volumes in the ``--bn-data`` folder; a ``ValueError`` where there are none."""
    from mood_detector.io.nifti import list_volumes

    files = list_volumes(folder)
    if not files:
        raise ValueError(f"--bn-data {folder}: no .nii or .nii.gz volumes in it to recompute BatchNorm from")
    return files
