#!/usr/bin/env python3
"""Measure the DPA's offline feature extractors against each other (how the default was chosen).

Generates brain pseudo-subjects (training + held-out), builds a test set with all five synthetic outlier
types, optionally trains a small FPI model (for ``fpi-encoder`` trials), trains one DPA per feature extractor
with otherwise identical settings and prints sample / pixel AP per extractor. Everything is generated data.

    python scripts/research/dpa_features.py --out /tmp/dpa_features --threads 1
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

import click

from mood_detector.detector import TrainConfig
from mood_detector.evaluation.evaluate import OVERALL
from mood_detector.io.nifti import list_volumes, write_text_atomic
from mood_detector.logging_setup import setup_logging
from mood_detector.models.dpa.selection import evaluate_weights
from mood_detector.training.api import train_detector

log = logging.getLogger(__name__)


@dataclass
class FeatureTrial:
    """One feature extractor tried for the default (:func:`compare_features`)."""

    features: str
    feature_layer: str
    weights: str
    train_seconds: float
    sample_ap: float
    sample_auroc: float
    pixel_ap: float
    pixel_dice: float | None
    per_type_sample_ap: dict[str, float] = field(default_factory=dict)


def compare_features(train_dir: str | Path, test_images: str | Path, test_labels: str | Path, out_dir: str | Path,
                     base: TrainConfig, trials: Sequence[tuple[str, str]],
                     fpi_weights: str | Path | None = None) -> list[FeatureTrial]:
    """Train one DPA per ``(features, feature_layer)`` in ``trials`` with otherwise identical settings and
    evaluate each on a (multi-type) test set, both tasks. ``fpi-encoder`` trials use ``fpi_weights``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    images = list_volumes(test_images)
    results: list[FeatureTrial] = []
    for features, layer in trials:
        tag = f"{features}_{layer}"
        opts = {**base.options, "features": features, "feature_layer": layer}
        opts.pop("feature_weights", None)
        if features == "fpi-encoder":
            if fpi_weights is None:
                raise ValueError("fpi-encoder trials need fpi_weights")
            opts["feature_weights"] = str(fpi_weights)
        cfg = replace(base, detector="dpa", options=opts)
        t0 = time.perf_counter()
        weights = train_detector(train_dir, out_dir / f"{tag}.safetensors", cfg, out_dir / f"{tag}_run")
        secs = time.perf_counter() - t0
        ev = evaluate_weights(weights, images, test_labels, out_dir / f"{tag}_pred", base.device, ("sample", "pixel"))
        s, p = ev["sample"].rows[OVERALL], ev["pixel"].rows[OVERALL]
        per_type = {k: float(m.ap) for k, m in ev["sample"].rows.items() if k != OVERALL}
        trial = FeatureTrial(features, layer, str(weights), round(secs, 1), float(s.ap), float(s.auroc),
                             float(p.ap), None if p.dice is None else float(p.dice), per_type)
        log.info("features %s: sample AP %.4f, pixel AP %.4f", tag, trial.sample_ap, trial.pixel_ap)
        results.append(trial)
    write_text_atomic(out_dir / "features.json", json.dumps([asdict(r) for r in results], indent=2) + "\n")
    return results


def features_table(trials: Sequence[FeatureTrial]) -> str:
    """Markdown table of :func:`compare_features` results."""
    lines = ["| features | layer | sample AP | sample AUROC | pixel AP | pixel DICE | train s |",
             "|---|---|---|---|---|---|---|"]
    for t in trials:
        dice = "n/a" if t.pixel_dice is None else f"{t.pixel_dice:.4f}"
        lines.append(f"| {t.features} | {t.feature_layer} | {t.sample_ap:.4f} | {t.sample_auroc:.4f} | "
                     f"{t.pixel_ap:.4f} | {dice} | {t.train_seconds:.0f} |")
    return "\n".join(lines)


@click.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Work folder.")
@click.option("--n-train", type=click.IntRange(min=2), default=12, show_default=True, help="Training subjects.")
@click.option("--n-test", type=click.IntRange(min=2), default=16, show_default=True, help="Test subjects.")
@click.option("--size", type=click.IntRange(min=16), default=64, show_default=True, help="Generated cube edge.")
@click.option("--max-res", type=int, default=32, show_default=True, help="DPA resolution (power of two).")
@click.option("--nf", type=int, default=16, show_default=True, help="DPA channels.")
@click.option("--latent-dim", type=int, default=32, show_default=True, help="DPA bottleneck.")
@click.option("--epochs", type=click.IntRange(min=1), default=6, show_default=True, help="Epochs at max-res.")
@click.option("--stage-epochs", type=click.IntRange(min=0), default=1, show_default=True,
              help="Epochs of each lower resolution.")
@click.option("--feature-epochs", type=click.IntRange(min=1), default=4, show_default=True,
              help="FPI pre-training epochs of fpi-vgg19.")
@click.option("--batch-size", type=click.IntRange(min=2), default=16, show_default=True, help="Slices per batch.")
@click.option("--trials", default="random-vgg19:r22,fpi-vgg19:r22,fpi-encoder:b2", show_default=True,
              help="Comma-separated FEATURES:LAYER pairs to compare.")
@click.option("--fpi-epochs", type=click.IntRange(min=1), default=4, show_default=True,
              help="Epochs of the FPI model whose encoder the fpi-encoder trials use.")
@click.option("--fpi-width", type=float, default=0.25, show_default=True, help="Width of that FPI model.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of data, test set and training.")
@click.option("--threads", type=click.IntRange(min=0), default=1, show_default=True,
              help="torch CPU threads (0 = torch's default).")
def main(out: Path, n_train: int, n_test: int, size: int, max_res: int, nf: int, latent_dim: int, epochs: int,
         stage_epochs: int, feature_epochs: int, batch_size: int, trials: str, fpi_epochs: int, fpi_width: float,
         seed: int, threads: int) -> None:
    """Compare DPA feature extractors on generated brain data (sample and pixel AP, all five outlier types)."""
    import torch

    from mood_detector.data.brain import make_brain_data
    from mood_detector.evaluation.testset import TestsetConfig, make_testset

    setup_logging("INFO", "text")
    if threads:
        torch.set_num_threads(threads)
    train_dir, normals, test_dir = out / "train", out / "normals_test", out / "testset"
    if not train_dir.is_dir():
        make_brain_data(train_dir, n_train, size, seed, 0)
    if not test_dir.is_dir():
        make_brain_data(normals, n_test, size, seed, 1000)
        make_testset(normals, test_dir, TestsetConfig(kind="brain", seed=seed))
    pairs = [tuple(t.split(":", 1)) for t in trials.split(",") if t.strip()]
    fpi = None
    if any(f == "fpi-encoder" for f, _ in pairs):
        fpi = out / "fpi" / "fpi.safetensors"
        if not fpi.is_file():
            cfg = TrainConfig(detector="fpi", kind="brain", size=max_res, width=fpi_width, epochs=fpi_epochs,
                              batch_size=batch_size, device="cpu", seed=seed)
            train_detector(train_dir, fpi, cfg)
    base = TrainConfig(detector="dpa", kind="brain", size=max_res, epochs=epochs, batch_size=batch_size,
                       device="cpu", seed=seed,
                       options={"nf": str(nf), "latent_dim": str(latent_dim), "stage_epochs": str(stage_epochs),
                                "feature_epochs": str(feature_epochs), "max_res": str(max_res)})
    res = compare_features(train_dir, test_dir / "toy", test_dir / "toy_label", out / "trials", base,
                           [(f, layer) for f, layer in pairs], fpi)
    click.echo(features_table(res))
    log.info("results: %s", out / "trials" / "features.json")


if __name__ == "__main__":
    main()
