#!/usr/bin/env python3
"""DPA hyperparameter selection on a validation set with ONE outlier type (DPA paper Sec. 3.3).

Trains a grid of latent_dim x feature_layer DPA models on normal volumes, scores a one-type validation set
(made here with ``--make-val NORMALS --val-type TYPE``, or given as a ``make-testset`` folder), picks the best
by sample-level AP and, with ``--test``, evaluates the chosen model on a test set holding all five types. The
selection itself is :func:`mood_detector.models.dpa.selection.select_dpa`; this is its command line.

    python scripts/research/dpa_select.py --train data/train --make-val data/val_normals --val-type uniform_addition \\
        --out runs/dpa_select --size 64 --width 0.125 --epochs 4 --test runs/testset
"""

from __future__ import annotations

from pathlib import Path

import click

from mood_detector.evaluation.outliers import OUTLIER_TYPES
from mood_detector.logging_setup import setup_logging


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


@click.command()
@click.option("--train", "train_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="Folder of normal training volumes.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Work folder: grid weights, predictions, selection.json.")
@click.option("--val", "val_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Validation set written by make-testset (toy/ + toy_label/), holding one outlier type.")
@click.option("--make-val", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Instead of --val: normal volumes to turn into a one-type validation set in OUT/val.")
@click.option("--val-type", type=click.Choice(OUTLIER_TYPES), default="uniform_addition", show_default=True,
              help="The one outlier type of the validation set made with --make-val.")
@click.option("--test", "test_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Optional test set (make-testset folder, all types) to evaluate the chosen model on.")
@click.option("--latent-dims", default="32,128", show_default=True, help="Comma-separated bottleneck sizes.")
@click.option("--feature-layers", default="r22,r32", show_default=True, help="Comma-separated feature layers.")
@click.option("--pixel/--no-pixel", default=False, show_default=True,
              help="Also report the validation pixel AP of every grid point (not used for the choice).")
@click.option("--kind", type=click.Choice(["brain", "abdom"]), default="brain", show_default=True, help="Kind.")
@click.option("--size", type=click.IntRange(min=16), default=None, help="Network size (DPA max_res = min(size, 128)).")
@click.option("--width", type=click.FloatRange(min=0.01), default=1.0, show_default=True, help="nf = 128 x width.")
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True, help="Epochs at max_res.")
@click.option("--batch-size", type=click.IntRange(min=2), default=32, show_default=True, help="Slices per batch.")
@click.option("--lr", type=float, default=1e-3, show_default=True, help="Adam learning rate.")
@click.option("--max-batches-per-pair", type=click.IntRange(min=0), default=0, show_default=True,
              help="Cap on batches per volume and epoch (0 = all).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of training and of --make-val.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--opt", "opts", multiple=True, metavar="KEY=VALUE", help="Other DPA options (repeatable).")
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
              help="torch CPU threads (0 = torch's default).")
def main(train_dir: Path, out: Path, val_dir: Path | None, make_val: Path | None, val_type: str,
         test_dir: Path | None, latent_dims: str, feature_layers: str, pixel: bool, opts: tuple[str, ...],
         threads: int, **kw) -> None:
    """Select the DPA's latent_dim and feature_layer by sample AP on a one-type validation set."""
    import torch

    from mood_detector.detector import TrainConfig, parse_options
    from mood_detector.evaluation.testset import TestsetConfig, make_testset
    from mood_detector.io.nifti import list_volumes
    from mood_detector.models.dpa.selection import SelectionConfig, evaluate_weights, select_dpa

    setup_logging("INFO", "text")
    if threads:
        torch.set_num_threads(threads)
    if (val_dir is None) == (make_val is None):
        raise click.UsageError("give exactly one of --val and --make-val")
    if make_val is not None:
        val_dir = out / "val"
        make_testset(make_val, val_dir, TestsetConfig(kind=kw["kind"], types=(val_type,), seed=kw["seed"]))
    assert val_dir is not None
    base = TrainConfig(detector="dpa", options=parse_options(opts), **kw)
    sel = SelectionConfig(latent_dims=tuple(int(v) for v in _csv(latent_dims)),
                          feature_layers=tuple(_csv(feature_layers)), pixel=pixel)
    res = select_dpa(train_dir, val_dir / "toy", val_dir / "toy_label", out, base, sel)
    click.echo(res.table())
    click.echo(f"chosen: latent_dim={res.best.latent_dim} feature_layer={res.best.feature_layer} "
               f"-> {res.best.weights}")
    if test_dir is not None:
        ev = evaluate_weights(res.best.weights, list_volumes(test_dir / "toy"), test_dir / "toy_label",
                              out / "best_test_pred", kw["device"], ("sample", "pixel"))
        for task, result in ev.items():
            click.echo(f"\ntest set, {task}:\n{result.table()}")


if __name__ == "__main__":
    main()
