"""Re-score trained DDAD weights as another variant without retraining: the command line of
:func:`mood_detector.models.ddad.detector.export_variant`.

A ``dual`` model holds the NDM, the UDM and a 2-channel ASR-Net, so it can also be scored as ``rec``, ``a_intra``
and ``a_inter`` (each saved file keeps only the networks its variant uses)::

    python scripts/research/ddad_variant.py weights/ddad_dual.safetensors weights/ddad_rec.safetensors rec
"""

from __future__ import annotations

from pathlib import Path

import click

from mood_detector.models.ddad.detector import VARIANTS, export_variant


@click.command()
@click.argument("weights", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("variant", type=click.Choice(sorted(VARIANTS)))
def main(weights: Path, out: Path, variant: str) -> None:
    """Save DDAD WEIGHTS as OUT scored as VARIANT."""
    try:
        click.echo(f"weights: {export_variant(weights, out, variant)}")
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


if __name__ == "__main__":
    main()
