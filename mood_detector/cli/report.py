"""``mood-detector report``: a visual report of scores, overlays and curves (needs the ``[report]`` extra)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from mood_detector.cli import slice_rule_option
from mood_detector.errors import MoodError


@click.command("report")
@click.option("-i", "--inputs", "inputs", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder of the input volumes (*.nii / *.nii.gz).")
@click.option("-p", "--predictions", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder of predictions: pixel scores <name> and/or sample scores <name>.txt.")
@click.option("-l", "--labels", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Optional MOOD toy_label folder (pixel/<name>, sample/<name>.txt): adds label contours, "
                   "shaded anomalous slices, ROC / PR curves and the metric table.")
@click.option("-o", "--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Report folder (created; index.html, volumes/*.png, roc.png, pr.png).")
@click.option("--dpi", type=click.IntRange(min=20), default=80, show_default=True,
              help="Resolution of the per-volume PNGs (12 x 7 inches).")
@click.option("--thumbnails/--no-thumbnails", default=True, show_default=True,
              help="Write a small thumbnail per volume for index.html.")
@click.option("--slice-score", default="mean", show_default=True, callback=slice_rule_option,
              help="How the per-slice curve is made from the pixel map: 'mean' (mean voxel score) or 'top:Q' "
                   "(mean of each slice's highest fraction Q of scores); use the model card's slice_score. Also "
                   "used for sample scores computed from the pixel map (no <name>.txt).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
def report(inputs: Path, predictions: Path, labels: Path | None, out: Path, dpi: int, thumbnails: bool,
           slice_score: str, progress: bool) -> None:
    """Draw one PNG per volume (orthogonal slices with the score heat map and the slice-wise score curve) and
    an index.html listing all volumes by sample score, with ROC / PR curves and metrics when LABELS are given.

    Exit codes: 0 every volume reported; 1 some volumes failed (listed); 2 usage error (missing folder,
    matplotlib not installed).
    """
    from mood_detector.io.folders import check_output_dir
    from mood_detector.report import RenderConfig, ReportConfig, build_report

    check_output_dir(out, "--out")

    cfg = ReportConfig(inputs=inputs, predictions=predictions, out=out, labels=labels,
                       render=RenderConfig(dpi=dpi), thumbnails=thumbnails, progress=progress,
                       slice_score=slice_score)
    try:
        result = build_report(cfg)
    except MoodError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(f"report of {len(result.volumes)} volumes ({len(result.failed)} failed): {result.index}")
    if result.failed:
        click.echo("failed volumes:", err=True)
        for path, reason in result.failed:
            click.echo(f"  {path}: {reason}", err=True)
    sys.exit(result.exit_code)
