"""``mood-detector benchmark``: generate data, train, build a test set, predict, evaluate, one table."""

from __future__ import annotations

from pathlib import Path

import click

from mood_detector.errors import OptionError
from mood_detector.evaluation.outliers import OUTLIER_TYPES


def _csv(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


@click.command("benchmark")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("benchmark"),
              show_default=True, help="Output folder (its data/, testset/, weights/, pred/, eval/ are replaced); "
                                      "benchmark.md and benchmark.json are written into it.")
@click.option("--detectors", default="fpi,ae", show_default=True,
              help="Comma-separated registered detector names (table order).")
@click.option("--kinds", default="brain", show_default=True, help="Comma-separated kinds: brain, abdom.")
@click.option("--n-train", type=click.IntRange(min=2), default=8, show_default=True,
              help="Generated normal training subjects per kind.")
@click.option("--n-test", type=click.IntRange(min=2), default=8, show_default=True,
              help="Generated held-out subjects per kind (the test set's cases).")
@click.option("--size", type=click.IntRange(min=16), default=64, show_default=True,
              help="Edge length of the generated test cubes (and training cubes unless --train-size).")
@click.option("--train-size", type=click.IntRange(min=16), default=None,
              help="Edge length of the generated training cubes and the training resolution [default: --size].")
@click.option("--templates", default="default", show_default=True,
              help="brain: source images of the training subjects (see make-data --templates); the test "
                   "subjects always come from the default template.")
@click.option("--zscore/--no-zscore", default=False, show_default=True,
              help="Add a no-learning row: each voxel's z-score against the training subjects.")
@click.option("--reuse-data/--no-reuse-data", default=False, show_default=True,
              help="Keep OUT/data and OUT/testset from an earlier run with the same data settings (kinds, "
                   "counts, sizes, templates, seed, outlier types) instead of generating them again.")
@click.option("--width", type=click.FloatRange(min=0.01), default=0.25, show_default=True,
              help="Channel multiplier of every detector's network.")
@click.option("--epochs", type=click.IntRange(min=1), default=5, show_default=True, help="Training epochs.")
@click.option("--batch-size", type=click.IntRange(min=2), default=16, show_default=True, help="Slices per batch.")
@click.option("--lr", type=float, default=None, help="Learning rate [default: each detector's, 1e-3; squid 1e-4].")
@click.option("--max-batches-per-pair", type=click.IntRange(min=0), default=0, show_default=True,
              help="Cap on batches per volume (pair) and epoch (0 = all).")
@click.option("--anomalous-fraction", type=click.FloatRange(0.0, 1.0), default=0.5, show_default=True,
              help="Fraction of test cases with a synthetic outlier.")
@click.option("--types", default=",".join(OUTLIER_TYPES), show_default=True, help="Outlier types to use.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of data, test set and training.")
@click.option("--bootstrap", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Bootstrap replicates for the 95% intervals beside every metric (test cases resampled with "
                   "replacement); 0 = no intervals.")
@click.option("--bootstrap-seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the bootstrap resampling (same seed, same intervals).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--weights", "weights", multiple=True, metavar="DETECTOR=PATH",
              help="Use these weights instead of training DETECTOR (a .safetensors file, or a folder holding "
                   "<kind>/<detector>.safetensors); repeatable.")
@click.option("--opt", "opts", multiple=True, metavar="DETECTOR:KEY=VALUE",
              help="Detector-specific training option, e.g. --opt ae:latent=8; repeatable.")
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
              help="torch CPU threads (0 = torch's default).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show progress bars.")
def benchmark(out: Path, detectors: str, kinds: str, types: str, weights: tuple[str, ...], opts: tuple[str, ...],
              threads: int, progress: bool, **kw) -> None:
    """Make N normal training subjects and M held-out subjects per kind, train each detector (or use
    --weights), build a synthetic-outlier test set, predict both tasks, evaluate, and print one table
    (detector x kind x task: AP, AUROC, DICE, each with its bootstrap 95% interval over test cases) with the
    command lines of every step."""
    from mood_detector.pipelines.benchmark import (BenchmarkConfig, check_config, parse_detector_options,
                                                    parse_weights, run_benchmark)

    if threads:
        import torch

        torch.set_num_threads(threads)
    try:
        cfg = BenchmarkConfig(out=out, detectors=_csv(detectors), kinds=_csv(kinds), types=_csv(types),
                              weights=parse_weights(weights), options=parse_detector_options(opts), **kw)
        check_config(cfg)
    except OptionError:
        raise  # a bad option value: the group reports it as a usage error naming the option
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    result = run_benchmark(cfg, progress=progress)
    click.echo(result.table())
    click.echo("\ncommands:")
    for line in result.commands:
        click.echo(f"  {line}")
    if result.failed_predictions:
        click.echo(f"{len(result.failed_predictions)} failed prediction(s), counted as zeros:", err=True)
        for f in result.failed_predictions:
            click.echo(f"  {f}", err=True)
    click.echo(f"\ntable: {result.markdown}\njson:  {result.json}")
