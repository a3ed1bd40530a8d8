"""``mood-detector train``: train a detector on a folder of normal volumes."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from mood_detector import distributed
from mood_detector.detector import (REGISTRY, TrainConfig, check_used, detector_class, options_help,
                                    parse_options)
from mood_detector.errors import MoodError, OptionError
from mood_detector.training.api import train_detector
from mood_detector.training.budget import echo_to
from mood_detector.training.presets import CPU_STEPS, PRESETS, apply_preset
from mood_detector.training.verdict import PATIENCE

log = logging.getLogger(__name__)


class TrainCommand(click.Command):
    """``train``, whose ``--help`` also lists the ``--opt`` options of the ``--detector`` given with it."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--help" in args:
            for i, arg in enumerate(args):
                if arg == "--detector" and i + 1 < len(args):
                    ctx.meta["options_of"] = args[i + 1]
                elif arg.startswith("--detector="):
                    ctx.meta["options_of"] = arg.partition("=")[2]
        return super().parse_args(ctx, args)

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_epilog(ctx, formatter)
        name = ctx.meta.get("options_of")
        if name not in REGISTRY:
            formatter.write_paragraph()
            formatter.write_text("Add --detector NAME to --help to list that detector's --opt options.")
            return
        rows = options_help(name)
        with formatter.section(f"Options of the {name} detector (--opt KEY=VALUE; shown with their defaults)"):
            if rows:
                formatter.write_dl(rows)
            else:
                formatter.write_text("none")


@click.command("train", cls=TrainCommand)
@click.option("-i", "--input", "input_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              required=True, help="Folder of normal training volumes (*.nii, *.nii.gz).")
@click.option("-o", "--output", "output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Weights file to write (.safetensors; the JSON card is written beside it).")
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for checkpoints and the loss log [default: OUTPUT without suffix + '_run'].")
@click.option("--detector", type=click.Choice(sorted(REGISTRY)), default="fpi", show_default=True,
              help="Which detector to train.")
@click.option("--kind", type=click.Choice(["brain", "abdom"]), default="brain", show_default=True,
              help="Dataset kind: sets slice axis, patch-centre core and network depth.")
@click.option("--size", type=click.IntRange(min=16), default=None,
              help="In-plane network size; volumes are resampled to SIZE^3 [default: 256 brain, 512 abdom].")
@click.option("--width", type=click.FloatRange(min=0.01), default=1.0, show_default=True,
              help="Channel multiplier of the network (1 = published widths).")
@click.option("--mode", type=click.Choice(["discrete", "continuous"]), default="discrete", show_default=True,
              help="FPI: 5-class discrete factor (softmax, CE) or continuous factor (sigmoid, BCE); stored as the "
                   "option 'mode'. NSA's output is always continuous.")
@click.option("--epochs", type=click.IntRange(min=1), default=50, show_default=True,
              help="Training epochs (the budget when --steps is 0).")
@click.option("--steps", type=click.IntRange(min=0), default=0, show_default=True,
              help="FPI and NSA: the budget in optimiser steps, whatever the number of volumes (fewer volumes: more "
                   "epochs over them); the epochs follow from it and the cosine schedule spans them. 0 = --epochs.")
@click.option("--patience", type=click.IntRange(min=0), default=PATIENCE, show_default=True,
              help="FPI and NSA: stop when the held-out probe loss has not improved over this many optimiser steps "
                   "(and 3 epochs); the run keeps the weights of its best probe loss either way. 0 = never stop "
                   "early.")
@click.option("--batch-size", type=click.IntRange(min=2), default=32, show_default=True,
              help="Slices per batch (FPI: half the slice indices, each in both swap directions).")
@click.option("--lr", type=float, default=None,
              help="Learning rate [default: the detector's: 1e-3 (Adam), squid 1e-4].")
@click.option("--swa-epochs", type=click.IntRange(min=0), default=0, show_default=True,
              help="Extra SWA epochs (SGD, cyclic lr 1e-3..1e-4, per-epoch minima averaged); 0 = off.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (fixed seed = repeatable on CPU).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--amp/--no-amp", default=True, show_default=True, help="bf16 autocast + channels_last on CUDA.")
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="Data-loader worker processes (0 = load in the main process).")
@click.option("--cache-gb", type=click.FloatRange(min=0.0), default=4.0, show_default=True,
              help="RAM budget for the float16 cache of decoded training volumes.")
@click.option("--max-batches-per-pair", type=click.IntRange(min=0), default=0, show_default=True,
              help="Cap on batches drawn from each volume pair per epoch (0 = all non-empty slices).")
@click.option("--batches-per-step", type=click.IntRange(min=0), default=0, show_default=True,
              help="Batches (of --batch-size, each from one volume pair) per optimiser step, split across "
                   "torchrun processes; a multiple of their number. 0 = one per process. Fix it to get the same "
                   "result whatever the number of processes.")
@click.option("--resume/--no-resume", default=False, show_default=True,
              help="Continue from the run folder's last checkpoint.")
@click.option("--training-data", default="", help="Words for the model card: what the training data is.")
@click.option("--unlabeled", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Folder of unlabeled volumes (may contain anomalies) for detectors that use them (ddad: the "
                   "UDM trains on normal + unlabeled); stored as the detector option 'unlabeled'.")
@click.option("--feature-weights", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="dpa: perceptual-feature weights, a torchvision VGG19 state dict (.safetensors, or .pth read "
                   "with weights_only=True) or a trained FPI .safetensors; stored as the option "
                   "'feature_weights' [default: features trained on the training slices, see docs/dpa.md].")
@click.option("--opt", "opts", multiple=True, metavar="KEY=VALUE",
              help="Detector-specific option (repeatable), e.g. --opt backbone=aeu for ddad, --opt skips=1 for fpi.")
@click.option("--preset", type=click.Choice(["none", *PRESETS]), default="none", show_default=True,
              help="FPI and NSA: a set of option values chosen together: 'cpu' (about 25 minutes on 2 CPU cores, "
                   f"whatever the number of volumes: 128^2 slices, width 0.25, skip connections, label tolerance, "
                   f"contrast remaps, {CPU_STEPS} cosine-decayed optimiser steps of 4 batches per volume pair and "
                   "epoch; docs/fpi-cpu.md) or 'paper' (the FPI paper's setting). Options given on the command "
                   "line override the preset (--epochs replaces its steps).")
@click.option("--recipe", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A model card (.json, e.g. weights/brain/nsa.json) whose settings to train with: detector, kind, "
                   "size, width, mode, epochs, batch size, lr, seed, batches per pair, the detector options of its "
                   "'extra' (task, train axes, final BatchNorm recompute) and its export steps (float16 storage, "
                   "test-time mirroring). Options given on the command line override the recipe's.")
@click.option("--data-command", default=None,
              help="For the model card: the command that made the training data [default: the one make-data "
                   "recorded in INPUT (make-data.json), if any].")
@click.option("--force", is_flag=True, default=False,
              help="Allow OUTPUT to be a bundled model (a file tracked in weights/); without it train refuses.")
@click.pass_context
def train(ctx: click.Context, input_dir: Path, output: Path, run_dir: Path | None, opts: tuple[str, ...],
          unlabeled: Path | None, feature_weights: Path | None, preset: str, recipe: Path | None,
          data_command: str | None, force: bool, **kw) -> None:
    """Train a detector on the normal volumes in INPUT and write OUTPUT.safetensors + OUTPUT.json."""
    from mood_detector.bundled import refuse_bundled

    if (why := refuse_bundled(output, force)) is not None:  # before any work: the bundled card would go stale
        raise click.ClickException(why)
    options = parse_options(opts)
    given = {k for k in kw if ctx.get_parameter_source(k) is not click.core.ParameterSource.DEFAULT}
    export = None
    if recipe is not None:
        from mood_detector.training.recipe import apply_recipe, read_recipe

        if preset != "none":
            raise click.UsageError("--recipe and --preset both set the training options: give one of them")
        try:
            steps = read_recipe(recipe)
        except MoodError as exc:
            raise click.BadParameter(str(exc), param_hint="'--recipe'") from None
        options = apply_recipe(steps, kw, given, options)
        export = steps.export
    check_used(kw["detector"], given)  # a flag the detector would ignore is a usage error naming it
    if preset != "none":
        if not detector_class(kw["detector"]).supports_presets:  # presets set FPI's training options
            raise click.UsageError(f"--preset is for the fpi and nsa detectors, not {kw['detector']!r}")
        options = apply_preset(preset, kw, given, options)
    defaults = {p.name: p.default for p in ctx.command.params}
    for key in ("mode", "swa_epochs", "batches_per_step", "steps", "patience"):  # FPI's options, with own flags
        value = kw.pop(key)
        if key in given or value != defaults[key]:  # given, or set by the preset
            options[key] = str(value)
    cfg = TrainConfig(**kw, options=options)
    if unlabeled is not None:
        cfg.options["unlabeled"] = str(unlabeled)
    if feature_weights is not None:
        cfg.options["feature_weights"] = str(feature_weights)
    try:
        with echo_to(click.echo):  # the plan before training, the verdict after it
            path = train_detector(input_dir, output, cfg, run_dir, data_command=data_command, export=export)
    except OptionError:
        raise  # a bad option value, found before training: the group reports it as a usage error (exit 2)
    except (ValueError, MoodError) as exc:  # bad options, data or weights files: one line, no traceback
        raise click.ClickException(str(exc)) from None
    if distributed.is_main():
        click.echo(f"weights: {path}")
