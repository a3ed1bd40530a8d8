"""``mood-detector make-testset``: a MOOD-style toy test set with synthetic outliers."""

from __future__ import annotations

from pathlib import Path

import click

from mood_detector.evaluation.outliers import OUTLIER_TYPES, OutlierConfig
from mood_detector.evaluation.testset import TestsetConfig, make_testset
from mood_detector.io.folders import check_output_dir


@click.command("make-testset")
@click.option("--kind", type=click.Choice(["brain", "abdom"]), default="brain", show_default=True,
              help="Dataset kind (recorded in the manifest).")
@click.option("-i", "--input", "input_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              required=True, help="Folder of normal volumes (e.g. from 'make-data ... --start 100'); values outside "
                                  "[0, 1] are min-max scaled to [0, 1] first.")
@click.option("-o", "--output", "output_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Test set folder: toy/, toy_label/pixel/, toy_label/sample/, manifest.json.")
@click.option("--anomalous-fraction", type=click.FloatRange(0.0, 1.0), default=0.5, show_default=True,
              help="Fraction of cases that get one synthetic outlier.")
@click.option("--types", default=",".join(OUTLIER_TYPES), show_default=True,
              help="Comma-separated outlier types to use (e.g. one type for a validation set).")
@click.option("--radius", type=(float, float), default=OutlierConfig.radius_frac, show_default=True,
              help="Sphere radius range as a fraction of the smallest edge length.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Random seed (the test set depends only on it "
                                                                      "and the inputs).")
def make_testset_cmd(input_dir: Path, output_dir: Path, kind: str, anomalous_fraction: float, types: str,
                     radius: tuple[float, float], seed: int) -> None:
    """Make a test set from the normal volumes in INPUT: a random sphere inside the foreground of some cases is
    altered by one of the FPI paper's five outlier types (Sec. 3.1); labels mark the changed voxels."""
    chosen = tuple(t.strip() for t in types.split(",") if t.strip())
    bad = [t for t in chosen if t not in OUTLIER_TYPES]
    if bad or not chosen:
        raise click.BadParameter(f"unknown outlier type(s) {bad}; choose from {', '.join(OUTLIER_TYPES)}",
                                 param_hint="--types")
    if not 0 < radius[0] <= radius[1] < 0.5:
        raise click.BadParameter("need 0 < MIN <= MAX < 0.5", param_hint="--radius")
    check_output_dir(output_dir, "--output")
    cfg = TestsetConfig(kind=kind, anomalous_fraction=anomalous_fraction, types=chosen, seed=seed,
                        outliers=OutlierConfig(radius_frac=radius))
    try:
        manifest = make_testset(input_dir, output_dir, cfg)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(f"wrote {manifest['n_cases']} cases ({manifest['n_anomalous']} anomalous) to {output_dir}")
