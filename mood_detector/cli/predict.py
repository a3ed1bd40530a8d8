"""``mood-detector predict``: score a folder of volumes (MOOD pixel / sample tasks)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from mood_detector.errors import MoodError, StrictFailure
from mood_detector.inference.api import predict_folder
from mood_detector.inference.predictor import PredictConfig

log = logging.getLogger(__name__)


@click.command("predict")
@click.argument("task", type=click.Choice(["pixel", "sample", "both"]))
@click.option("-i", "--input", "input_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder of volumes to score (every *.nii / *.nii.gz directly in it).")
@click.option("-o", "--output", "output_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Output folder (created if missing). pixel: <name>; sample: <name>.txt.")
@click.option("-w", "--weights", type=click.Path(exists=True, path_type=Path), default=None,
              help="A .safetensors file, or a folder holding <kind>/<detector>.safetensors "
                   "[default: $MOOD_WEIGHTS_DIR or the bundled weights/].")
@click.option("--kind", type=click.Choice(["auto", "brain", "abdom"]), default="auto", show_default=True,
              help="Which weights to use when --weights is a folder; auto picks by volume shape.")
@click.option("--detector", default="fpi", show_default=True, help="Detector whose weights to look up.")
@click.option("--device", default="auto", show_default=True, help="auto (GPU if visible), cpu, cuda or cuda:N.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True,
              help="Slices per network call (halved automatically on CUDA out-of-memory).")
@click.option("--amp/--no-amp", default=True, show_default=True, help="bf16 autocast on CUDA.")
@click.option("--skip-existing", is_flag=True, default=False, show_default=True,
              help="Skip inputs whose outputs already exist (resume an interrupted run).")
@click.option("--strict", is_flag=True, default=False, show_default=True,
              help="Stop at the first input that fails instead of going on with the others.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
def predict(task: str, input_dir: Path, output_dir: Path, weights: Path | None, kind: str, detector: str,
            device: str, batch_size: int, amp: bool, skip_existing: bool, strict: bool, progress: bool) -> None:
    """Score every volume in INPUT for TASK (pixel, sample or both) and write the results to OUTPUT.

    Exit codes: 0 all inputs scored; 1 some inputs failed (listed at the end, all other outputs written);
    2 usage error (bad option, missing input folder, no weights).
    """
    tasks = ("pixel", "sample") if task == "both" else (task,)
    cfg = PredictConfig(tasks=tasks, device=device, batch_size=batch_size, amp=amp, skip_existing=skip_existing,
                        strict=strict, progress=progress)
    try:
        report = predict_folder(input_dir, output_dir, cfg, weights, kind, detector)
    except StrictFailure as exc:
        click.echo(f"error (--strict): {exc}", err=True)
        sys.exit(1)
    except MoodError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(f"scored {len(report.scored)}, skipped {len(report.skipped)}, failed {len(report.failed)}; "
               f"outputs in {output_dir}")
    if report.failed:
        click.echo("failed inputs:", err=True)
        for path, reason in report.failed:
            click.echo(f"  {path}: {reason}", err=True)
    sys.exit(report.exit_code)
