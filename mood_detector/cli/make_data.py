"""``mood-detector make-data``: generate the embedded default data."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("make-data")
@click.argument("kind", type=click.Choice(["brain", "abdom"]))
@click.option("--n", "n", type=click.IntRange(min=1), default=8, show_default=True, help="Number of subjects.")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Output folder (created); files are named 00000.nii.gz, 00001.nii.gz, ...")
@click.option("--size", type=click.IntRange(min=8), default=None,
              help="Edge length of the cubic volumes [default: 256 for brain, 512 for abdom].")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Random seed; subject k depends on (seed, k).")
@click.option("--start", type=click.IntRange(min=0), default=0, show_default=True,
              help="Index of the first subject (for making disjoint train / test sets).")
@click.option("--templates", default="default", show_default=True,
              help="brain: source T1 images, 'default' (the MNI152 2009a template in nilearn), 'all' (every "
                   "installed one) or a comma list of icbm2009a, icbm2009c, fsl-mni152, colin27, itk-subject; "
                   "subject k uses template k mod their number (see docs/data.md for what installs each). With "
                   "--randomise also 'icbm-tissue' (the ICBM tissue maps, the default there).")
@click.option("--randomise/--no-randomise", default=False, show_default=True,
              help="Random appearance per subject: the domain-randomised training data (docs/data.md). brain: "
                   "contrast (T1-, T2-, PD-, FLAIR-like or arbitrary), skull or none, bias, blur, thick slices, "
                   "noise, empty or noisy background; abdom: every tissue's CT number within its class's range, "
                   "noise, blur, thick slices, air noise and a patient table.")
@click.pass_context
def make_data(ctx: click.Context, kind: str, n: int, out: Path, size: int | None, seed: int, start: int,
              templates: str, randomise: bool) -> None:
    """Generate KIND pseudo-subjects: brain from real T1 brain templates under random deformation, abdom from
    a procedural phantom. Neither is real patient data."""
    from mood_detector.io.folders import check_output_dir

    from mood_detector.pipelines.subjects import check_templates, make_subjects

    check_output_dir(out, "--out")
    try:
        check_templates(kind, templates, randomise)
    except (RuntimeError, ValueError) as exc:
        raise click.BadParameter(str(exc), param_hint="'--templates'") from None
    try:
        files = make_subjects(kind, out, n, size, seed, start, templates, randomise)
    except (RuntimeError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    from mood_detector.provenance import command_line, write_data_command

    write_data_command(out, command_line(ctx))  # train copies it into the model card (data_command)
    click.echo(f"wrote {len(files)} volumes to {out}")
