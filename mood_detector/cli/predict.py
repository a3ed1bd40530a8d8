"""``mood-detector predict``: score a folder of volumes (MOOD pixel / sample tasks)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from mood_detector import distributed
from mood_detector.cli import mirror_option
from mood_detector.detector import DEFAULT_DETECTOR, REGISTRY
from mood_detector.errors import MoodError, StrictFailure, WeightsError
from mood_detector.inference.api import predict_folder
from mood_detector.inference.predictor import PredictConfig
from mood_detector.io.nifti import ReadLimits

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
              help="Which weights to use when --weights is a folder; auto picks per volume: 256^3 brain, 512^3 abdom, "
                   "any other shape guessed (with a warning) from the intensities (CT in Hounsfield units: abdom), "
                   "else the nearest size.")
@click.option("--detector", type=click.Choice(sorted(REGISTRY)), default=None,
              help=f"Detector whose weights to look up in a --weights folder [default: {DEFAULT_DETECTOR}]; with a "
                   "weights file, the file must hold this detector.")
@click.option("--device", default="auto", show_default=True, help="auto (GPU if visible), cpu, cuda or cuda:N.")
@click.option("--batch-size", type=click.IntRange(min=0), default=0, show_default=True,
              help="Slices per network call; 0 = automatic (8 on the CPU, from free memory on CUDA). Halved "
                   "automatically on CUDA out-of-memory.")
@click.option("--amp/--no-amp", default=True, show_default=True, help="bf16 autocast on CUDA.")
@click.option("--skip-existing", is_flag=True, default=False, show_default=True,
              help="Skip inputs whose outputs already exist (resume an interrupted run).")
@click.option("--strict", is_flag=True, default=False, show_default=True,
              help="Stop at the first input that fails instead of going on with the others.")
@click.option("--nonfinite", type=click.Choice(["zero", "error"]), default="zero", show_default=True,
              help="NaN/Inf voxels: replace them by 0 with a warning and score the volume, or fail that input.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
              help="torch CPU threads on the CPU (0 = all available cores).")
@click.option("--exact", is_flag=True, default=False, show_default=True,
              help="Run every slice at full field of view (no empty-slice skip, no foreground crop on the CPU).")
@click.option("--axes", type=click.Choice(["model", "all"]), default=None,
              help="Slice along the model's slice axis only, or along all three axes and average the maps "
                   "(three times the network time) [default: the axes the model was trained on (its card's train_axes), else model].")
@click.option("--mirror", default=None, metavar="none|AXES", callback=mirror_option,
              help="Test-time mirroring: also score the volume mirrored along each listed axis (e.g. 0, or 0,1) and "
                   "average the maps and sample scores; each axis repeats the network passes (one per slicing axis) "
                   "[default: the model card's tta_mirror, else none].")
@click.option("--adapt", type=click.Choice(["none", "bn", "finetune", "auto"]), default=None,
              help="Test-time adaptation on slices of up to 4 of the inputs (evenly spread; no labels) before "
                   "scoring: 'bn' recomputes the network's BatchNorm statistics (seconds); 'finetune' trains the "
                   "fpi or nsa model's own synthetic task on them (--adapt-steps; minutes on a CPU, seconds on a GPU); "
                   "'auto' fine-tunes only where that costs at most --adapt-budget of the estimated scoring time on "
                   "this machine (timed on the first input it reads; never for fewer than 1/--adapt-budget inputs), "
                   "else scores as trained; 'none' scores as trained [default: the model card's 'adapt', else none].")
@click.option("--adapt-steps", type=click.IntRange(min=1), default=600, show_default=True,
              help="Optimiser steps of --adapt finetune (16 slices each; 600 chosen on a validation source, "
                   "docs/generalisation.md).")
@click.option("--adapt-budget", type=click.FloatRange(min=0, max=1, min_open=True), default=0.2, show_default=True,
              help="--adapt auto: the largest share of the estimated scoring time spent on adapting.")
@click.option("--compile/--no-compile", "compile_", default=False, show_default=True,
              help="torch.compile the network (GPU); ignored with a warning where its cache cannot be written.")
def predict(task: str, input_dir: Path, output_dir: Path, weights: Path | None, kind: str, detector: str | None,
            device: str, batch_size: int, amp: bool, skip_existing: bool, strict: bool, nonfinite: str,
            progress: bool, threads: int, exact: bool, axes: str | None, mirror: str | None, adapt: str | None,
            adapt_steps: int, adapt_budget: float, compile_: bool) -> None:
    """Score every volume in INPUT for TASK (pixel, sample or both) and write the results to OUTPUT.

    An input that cannot be scored (not NIfTI, corrupt or truncated, not 3D, over the size caps, ...) fails
    with a one-line error naming the file and the reason; the other inputs are still scored. Sub-folders and
    files not named *.nii / *.nii.gz are ignored (one log line). Outputs are written atomically.

    \b
    Exit codes:
      0  every input scored (or skipped by --skip-existing)
      1  some inputs failed: listed at the end, every other output written
         (with --strict: stopped at the first failure)
      2  usage error: bad option, missing or empty input folder, output
         folder not creatable / not writable / equal to the input folder,
         missing or invalid weights
    """
    tasks = ("pixel", "sample") if task == "both" else (task,)
    cfg = PredictConfig(tasks=tasks, device=device, batch_size=batch_size, amp=amp, skip_existing=skip_existing,
                        strict=strict, progress=progress, limits=ReadLimits(nonfinite=nonfinite), threads=threads,
                        compile=compile_, axes=axes, mirror=mirror, adapt=adapt, adapt_steps=adapt_steps,
                        adapt_budget=adapt_budget,
                        **(dict(skip_empty=False, crop=False) if exact else {}))
    try:
        report = predict_folder(input_dir, output_dir, cfg, weights, kind, detector)
    except StrictFailure as exc:
        if not distributed.is_main():  # under torchrun every rank raises; rank 0 reports it
            sys.exit(0)
        click.echo(f"error (--strict): {exc}", err=True)
        sys.exit(1)
    except WeightsError as exc:
        raise click.BadParameter(str(exc), param_hint="'-w' / '--weights'") from None
    except MoodError as exc:
        raise click.UsageError(str(exc)) from None
    if not distributed.is_main():
        # under torchrun the report combines all ranks: rank 0 prints it and exits with its code (then torchrun
        # exits non-zero too); the others exit 0 so that torchrun does not stop rank 0 before it has reported
        sys.exit(0)
    click.echo(f"scored {len(report.scored)}, skipped {len(report.skipped)}, failed {len(report.failed)}; "
               f"outputs in {output_dir}")
    if report.failed:
        click.echo("failed inputs:", err=True)
        for path, reason in report.failed:
            click.echo(f"  {path}: {reason}", err=True)
    sys.exit(report.exit_code)
