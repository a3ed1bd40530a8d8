"""``mood-detector demo``: the whole job on embedded default data (no download, no MOOD data)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("demo")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("demo"), show_default=True,
              help="Folder for everything the demo makes (replaced if it exists).")
@click.option("--n-train", type=click.IntRange(min=2), default=6, show_default=True, help="Training subjects.")
@click.option("--n-test", type=click.IntRange(min=1), default=4, show_default=True, help="Held-out subjects.")
@click.option("--size", type=click.IntRange(min=16), default=64, show_default=True,
              help="Edge of the generated cubes (256 = MOOD brain size; small keeps the CPU demo fast).")
@click.option("--width", type=click.FloatRange(min=0.01), default=0.25, show_default=True,
              help="FPI channel multiplier.")
@click.option("--epochs", type=click.IntRange(min=1), default=8, show_default=True, help="Training epochs.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
def demo(out: Path, **kw) -> None:
    """Generate brain pseudo-subjects, train a small FPI model, score held-out subjects, print the outputs."""
    from mood_detector.demo import DemoConfig, run_demo

    outputs = run_demo(DemoConfig(out=out, **kw))
    click.echo("demo outputs:")
    for name, path in outputs.items():
        click.echo(f"  {name:14s} {path}")
    if "evaluation" in outputs:  # synthetic-outlier test set of the held-out subjects (generated data)
        click.echo("\nevaluation on the demo's synthetic-outlier test set (generated data, not MOOD results):\n")
        click.echo(Path(outputs["evaluation"]).read_text(encoding="utf-8"))
