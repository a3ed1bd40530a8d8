"""Re-score trained DDAD weights as another variant without retraining.

A ``dual`` model holds the NDM, the UDM and a 2-channel ASR-Net, so it can also be scored as ``rec``, ``a_intra``
and ``a_inter`` (each saved file keeps only the networks its variant uses)::

    python scripts/research/ddad_variant.py weights/ddad_dual.safetensors weights/ddad_rec.safetensors rec
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

from mood_detector.detector import load_detector
from mood_detector.models.ddad.detector import VARIANTS, DDADDetector

log = logging.getLogger(__name__)


def export_variant(weights: str | Path, out: str | Path, variant: str) -> Path:
    """Load DDAD ``weights`` and save them to ``out`` scored as ``variant``; ValueError if the networks the variant
    needs are missing or the weights are not DDAD's."""
    det = load_detector(weights)
    if not isinstance(det, DDADDetector):
        raise ValueError(f"{weights}: not DDAD weights (detector {det.card.detector!r})")
    other = det.with_variant(variant)
    other.card.training_data = f"{det.card.training_data} (networks of {Path(weights).name}, scored as {variant})"
    path = other.save(out)
    log.info("wrote %s (%s from %s)", path, variant, weights)
    return path


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
