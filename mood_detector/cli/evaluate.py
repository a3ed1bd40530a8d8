"""``mood-detector evaluate``: AP / AUROC / DICE of predictions against a MOOD-style label folder."""

from __future__ import annotations

from pathlib import Path

import click

from mood_detector.errors import MoodError


@click.command("evaluate")
@click.option("--pred", "pred_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="Prediction folder (pixel: <name>.nii.gz; sample: <name>.nii.gz.txt), as 'predict' writes it.")
@click.option("--labels", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="TESTDIR/toy_label (or its pixel/ or sample/ sub-folder).")
@click.option("--task", type=click.Choice(["pixel", "sample"]), required=True, help="Which task to evaluate.")
@click.option("--manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Test set manifest giving each case's outlier type [default: TESTDIR/manifest.json if present].")
@click.option("--json", "out_json", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the metrics, per-case notes and problems to this JSON file "
                   "[default: PRED/evaluation_<task>.json].")
@click.option("--bootstrap", "replicates", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Bootstrap replicates for the 95% intervals printed beside every metric (cases resampled "
                   "with replacement); 0 = no intervals.")
@click.option("--bootstrap-seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the bootstrap resampling (same seed, same intervals).")
@click.option("--split-sign/--no-split-sign", default=False, show_default=True,
              help="Also report added intensity (uniform_addition) by the sign of its offset: rows "
                   "uniform_addition+ (brighter) and uniform_addition- (darker), each with all normal cases.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
def evaluate_cmd(pred_dir: Path, labels: Path, task: str, manifest: Path | None, out_json: Path | None,
                 replicates: int, bootstrap_seed: int, split_sign: bool, progress: bool) -> None:
    """Evaluate PRED against LABELS like the MOOD challenge's evaluator (float16 predictions clipped to [0, 1];
    missing or mis-shaped predictions count as zeros; AP over all voxels / cases), plus AUROC and, for the pixel
    task, the greedy-threshold DICE. Prints a table per outlier type and overall, each metric with its bootstrap
    95% interval over cases."""
    from mood_detector.evaluation.bootstrap import BootstrapConfig
    from mood_detector.evaluation.evaluate import evaluate

    from mood_detector.io.folders import check_output_dir

    out_json = out_json or pred_dir / f"evaluation_{task}.json"
    if out_json.is_dir():
        raise click.BadParameter(f"{out_json} is a folder; give the JSON file to write", param_hint="'--json'")
    check_output_dir(out_json.parent, "--json")
    try:
        result = evaluate(pred_dir, labels, task, manifest=manifest, out_json=out_json, progress=progress,
                          bootstrap=BootstrapConfig(replicates=replicates, seed=bootstrap_seed) if replicates else None,
                          split_sign=split_sign)
    except MoodError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(f"{task} task, {len(result.cases)} cases:")
    click.echo(result.table())
    if result.problems:
        click.echo(f"{len(result.problems)} prediction(s) missing or unusable (counted as zeros); see {out_json}",
                   err=True)
    click.echo(f"metrics written to {out_json}")
