"""``mood-detector visibility``: per outlier type, the share of labelled voxels changed visibly."""

from __future__ import annotations

from pathlib import Path

import click

from mood_detector.cli import checked_option


@click.command("visibility")
@click.option("-t", "--testset", "testdir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              required=True, help="Test set folder made by 'make-testset' (toy/, toy_label/pixel/, manifest.json).")
@click.option("--normals", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Folder of the normal volumes the test set was made from, found by file name [default: the "
                   "manifest's source paths].")
@click.option("--thresholds", default="0.02,0.05", show_default=True,
              callback=checked_option("mood_detector.evaluation.visibility:parse_thresholds"),
              help="Comma-separated changes of intensity, in the [0, 1] range of the test volumes: the share of "
                   "labelled voxels changed by more than each is reported.")
@click.option("--json", "out_json", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the rows and per-case counts to this JSON file.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
def visibility_cmd(testdir: Path, normals: Path | None, thresholds: str, out_json: Path | None,
                   progress: bool) -> None:
    """What any detector could see of each outlier type in TESTSET: the share of labelled voxels whose
    intensity the outlier changed by more than each threshold (the test volume against its normal source,
    scaled as make-testset scaled it). Added intensity (uniform_addition) is also split by the sign of its
    change: uniform_addition+ brightens, uniform_addition- darkens."""
    from mood_detector.errors import MoodError
    from mood_detector.evaluation.visibility import parse_thresholds, visibility
    from mood_detector.io.folders import check_output_dir

    from mood_detector.evaluation.testset import MANIFEST

    if not (testdir / MANIFEST).is_file():
        raise click.BadParameter(f"{testdir}: no {MANIFEST}; give a folder made by 'mood-detector make-testset'",
                                 param_hint="'-t' / '--testset'")
    if out_json is not None:
        if out_json.is_dir():
            raise click.BadParameter(f"{out_json} is a folder; give the JSON file to write", param_hint="'--json'")
        check_output_dir(out_json.parent, "--json")
    try:
        result = visibility(testdir, parse_thresholds(thresholds), normals=normals, out_json=out_json,
                            progress=progress)
    except MoodError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(f"{result.rows['all'].cases} anomalous cases of {testdir}:")
    click.echo(result.table())
    if out_json is not None:
        click.echo(f"written to {out_json}")
