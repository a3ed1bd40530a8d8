#!/usr/bin/env python3
"""Measure the DPA's offline feature extractors against each other (how the default was chosen).

Generates brain pseudo-subjects (training + held-out), builds a test set with all five synthetic outlier
types, optionally trains a small FPI model (for ``fpi-encoder`` trials), trains one DPA per feature extractor
with otherwise identical settings and prints sample / pixel AP per extractor. Everything is generated data.

    python scripts/research/dpa_features.py --out /tmp/dpa_features --threads 1
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

from mood_detector.logging_setup import setup_logging


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
    from mood_detector.detector import TrainConfig
    from mood_detector.evaluation.testset import TestsetConfig, make_testset
    from dpa_selection import compare_features, features_table
    from mood_detector.training.api import train_detector

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
    logging.getLogger(__name__).info("results: %s", out / "trials" / "features.json")


if __name__ == "__main__":
    main()
