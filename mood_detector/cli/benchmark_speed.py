"""``mood-detector benchmark-speed``: inference speed against the I/O floor, as one table."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("benchmark-speed")
@click.option("--kind", type=click.Choice(["brain", "abdom"]), default="brain", show_default=True,
              help="Volume kind (generated volumes, random model's network plan).")
@click.option("-i", "--input", "input_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="Folder of volumes (the first N are used) [default: generate N volumes of KIND].")
@click.option("-n", "--n-volumes", type=click.IntRange(min=1), default=4, show_default=True,
              help="Number of volumes.")
@click.option("--size", type=click.IntRange(min=16), default=None,
              help="Edge of generated volumes and slice size of the random model; smaller for a quick run "
                   "[default: the kind's size, 256 brain / 512 abdom].")
@click.option("--width", type=click.FloatRange(min=0.01), default=1.0, show_default=True,
              help="Random model's channel multiplier (1 = the full reference model).")
@click.option("--mode", type=click.Choice(["discrete", "continuous"]), default="discrete", show_default=True,
              help="Random model's FPI mode.")
@click.option("-w", "--weights", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Trained .safetensors to use instead of a randomly initialised FPI model.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--batch-size", type=click.IntRange(min=0), default=0, show_default=True,
              help="Slices per network call (0 = automatic).")
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
              help="torch CPU threads (0 = all available cores).")
@click.option("--naive-volumes", type=click.IntRange(min=0), default=0, show_default=True,
              help="Run the naive forward on the first K volumes only (0 = all).")
@click.option("--gzip/--no-gzip", default=True, show_default=True, help="Compare the gzip writers (part e).")
@click.option("--memory", type=click.Choice(["both", "brain", "abdom", "none"]), default="both", show_default=True,
              help="Peak-memory probes to run (part f; each generates one full-size volume).")
@click.option("--memory-width", type=click.FloatRange(min=0.01), default=0.0625, show_default=True,
              help="Width of the memory probes' model: narrow, so volume copies dominate.")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Work folder, kept afterwards [default: a temporary folder, removed afterwards].")
@click.option("--keep", is_flag=True, default=False, show_default=True, help="Keep the temporary work folder.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write every number to this JSON file.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the generated volumes.")
def benchmark_speed(input_dir: Path | None, json_path: Path | None, **kw) -> None:
    """Measure end-to-end inference speed and print one table: (a) the I/O floor (read every input, write a
    same-size score volume), (b) predict pixel / sample through the library's Predictor, (c) its per-stage
    breakdown, (d) the naive forward (every slice, full field of view, fp32) and how far its output is from the
    optimised one, (e) the gzip writers, (f) peak memory of one worker on a full-size brain / abdomen volume.
    Ratios are against (a) of the same run ((d): the naive forward; (e): nibabel's default writer). The model
    is --weights or a randomly initialised FPI network of --width (speed does not depend on the weights)."""
    from mood_detector.errors import MoodError
    from mood_detector.pipelines.speedbench import SpeedConfig, run_speed_benchmark

    cfg = SpeedConfig(input=input_dir, json=json_path, **kw)
    try:
        res = run_speed_benchmark(cfg)
    except MoodError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(res.table())
    if json_path is not None:
        click.echo(f"\njson: {json_path}")
