"""``mood-detector demo``: the main job on freshly generated cases (no download, no MOOD data)."""

from __future__ import annotations

from pathlib import Path

import click

from mood_detector.cli.benchmark import _csv
from mood_detector.detector import DEFAULT_DETECTOR


@click.command("demo")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("demo"), show_default=True,
              help="Folder for everything the demo makes (replaced if it exists).")
@click.option("--kinds", default="brain,abdom", show_default=True,
              help="Comma-separated kinds to run; a kind without bundled weights is skipped.")
@click.option("--n-cases", type=click.IntRange(min=1), default=8, show_default=True, help="Test cases per kind.")
@click.option("--anomalous-fraction", type=click.FloatRange(0.0, 1.0), default=0.625, show_default=True,
              help="Fraction of the cases that get one synthetic outlier (rounded to whole cases: the defaults "
                   "give 5 of 8, one per outlier type, and 3 normal cases).")
@click.option("--size", type=click.IntRange(min=16), default=None,
              help="Edge of the generated cubes [default: 256 for both kinds (MOOD's abdomen is 512: 8x the voxels "
                   "to make, score and evaluate on a CPU); --train-size with --train].")
@click.option("--detector", type=click.Choice(["fpi", "nsa"]), default=DEFAULT_DETECTOR, show_default=True,
              help="Whose bundled weights to use (<kind>/<detector>.safetensors), or which to train with --train.")
@click.option("--weights-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Folder with <kind>/<detector>.safetensors [default: the bundled weights/ ($MOOD_WEIGHTS_DIR)].")
@click.option("--train/--no-train", default=False, show_default=True,
              help="Train a small brain model first (the whole job from scratch) instead of using the "
                   "bundled weights.")
@click.option("--n-train", type=click.IntRange(min=2), default=6, show_default=True,
              help="With --train: training subjects.")
@click.option("--train-size", type=click.IntRange(min=16), default=64, show_default=True,
              help="With --train: edge of the training cubes and of the model's slices.")
@click.option("--width", type=click.FloatRange(min=0.01), default=0.25, show_default=True,
              help="With --train: channel multiplier of the network.")
@click.option("--epochs", type=click.IntRange(min=1), default=8, show_default=True,
              help="With --train: training epochs.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Random seed.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
def demo(out: Path, kinds: str, **kw) -> None:
    """Score freshly generated cases with the bundled weights: make a few normal subjects per kind, plant
    synthetic outliers, predict both tasks, print the evaluation and write the visual report."""
    from mood_detector.pipelines.demo import DemoConfig, run_demo
    from mood_detector.errors import MoodError

    try:
        outputs = run_demo(DemoConfig(out=out, kinds=_csv(kinds), **kw))
    except MoodError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo("demo outputs:")
    for name, path in outputs.items():
        click.echo(f"  {name:20s} {path}")
    for name, path in outputs.items():
        if name.endswith("evaluation"):
            click.echo(f"\n{name} (synthetic outliers in generated data, not MOOD results):\n")
            click.echo(Path(path).read_text(encoding="utf-8"))
