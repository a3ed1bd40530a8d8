"""``mood-detector train``: train a detector on a folder of normal volumes."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click

from mood_detector import distributed
from mood_detector.detector import (REGISTRY, Flag, TrainConfig, check_used, detector_class, options_help,
                                    parse_options, registered_flags)
from mood_detector.errors import MoodError, OptionError
from mood_detector.training.api import train_detector
from mood_detector.training.budget import echo_to
from mood_detector.training.presets import CPU_STEPS, PRESETS, apply_preset

log = logging.getLogger(__name__)


def flag_type(flag: Flag, default: Any) -> click.ParamType:
    """The click type of ``flag``, whose option's default is ``default``."""
    if flag.path:
        return click.Path(exists=True, file_okay=flag.path == "file", dir_okay=flag.path == "dir", path_type=Path)
    if flag.choices:
        return click.Choice(list(flag.choices))
    if isinstance(default, bool):
        return click.BOOL
    if isinstance(default, int):
        return click.IntRange(min=flag.minimum) if flag.minimum is not None else click.INT
    if isinstance(default, float):
        return click.FloatRange(min=flag.minimum) if flag.minimum is not None else click.FLOAT
    return click.STRING


def flag_default_text(detector: str, flag: Flag) -> str:
    """The default of ``flag`` for ``detector``, as ``--help`` shows it."""
    return flag.default_text or str(detector_class(detector).flag_default(flag))


def flag_help(readers: list[tuple[str, Flag]]) -> str:
    """``--help`` text of a flag declared by ``readers`` (``(detector, Flag)``): which detectors read it, what it
    does for each and its default, and the option it sets."""
    groups: dict[tuple[str, str], list[str]] = {}
    for detector, flag in readers:
        groups.setdefault((flag.help, flag_default_text(detector, flag)), []).append(detector)
    option = f"(option '{readers[0][1].option}')"
    if len(groups) == 1:
        (text, default), detectors = next(iter(groups.items()))
        return f"{', '.join(detectors)}: {text} {option}  [default: {default}]"
    return " ".join(f"{', '.join(d)}: {text} [default: {default}]" for (text, default), d in groups.items()) + \
        f" {option}"


def flag_options() -> list[click.Option]:
    """One click option per ``train`` flag that the registered detectors declare (:attr:`Detector.flags`); its
    value is ``None`` when left out, so that each detector's own default applies."""
    out = []
    for name, readers in registered_flags().items():
        detector, flag = readers[0]
        default = detector_class(detector).flag_default(flag)
        out.append(click.Option([name, flag.option], type=flag_type(flag, default), default=None,
                                show_default=False, help=flag_help(readers)))
    return out


def flag_values(values: dict[str, Any], detector: str) -> dict[str, str]:
    """Remove the detector flags from ``values`` (``train`` keyword arguments); returns the options set by those
    with a value (given, or set by a preset) as ``--opt`` strings. A flag ``detector`` does not declare is an
    :class:`OptionError` naming it."""
    declared = {f.name for f in detector_class(detector).flags}
    out: dict[str, str] = {}
    for name, readers in registered_flags().items():
        option = readers[0][1].option
        value = values.pop(option, None)
        if value is None:
            continue
        if name not in declared:
            raise OptionError(name, f"the {detector} detector does not use it")
        out[option] = str(value)
    return out


class TrainCommand(click.Command):
    """``train``: its detector flags are made from the registered detectors' declarations (on first use, so that
    listing the commands imports no detector), and its ``--help`` also lists the flags and ``--opt`` options of
    the ``--detector`` given with it."""

    _flags: tuple[tuple[tuple[str, str], ...], list[click.Option]] | None = None

    @property
    def params(self) -> list[click.Parameter]:  # type: ignore[override]
        """The command's options, the detector flags among them before ``--opt`` (put in on first use, and again
        when the registry changes)."""
        key = tuple(REGISTRY.items())
        if self._flags is None or self._flags[0] != key:
            old = self._flags[1] if self._flags is not None else []
            own = [p for p in self._params if not any(p is o for o in old)]
            at = next((i for i, p in enumerate(own) if p.name == "opts"), len(own))
            self._flags = (key, flag_options())
            self._params[:] = [*own[:at], *self._flags[1], *own[at:]]
        return self._params

    @params.setter
    def params(self, value: list[click.Parameter]) -> None:
        self._params, self._flags = value, None

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        flags = set(registered_flags())
        rows: dict[bool, list[tuple[str, str]]] = {False: [], True: []}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None:
                rows[isinstance(param, click.Option) and bool(flags & set(param.opts))].append(record)
        with formatter.section("Options"):
            formatter.write_dl(rows[False])
        with formatter.section("Detector flags (each sets an option of the detectors named; another detector "
                               "refuses it)"):
            formatter.write_dl(rows[True])

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
            formatter.write_text("Add --detector NAME to --help to list that detector's flags, --opt options "
                                 "and learning rate.")
            return
        cls = detector_class(name)
        if cls.flags:
            with formatter.section(f"Flags of the {name} detector (each sets one of the options below)"):
                formatter.write_dl([(f.name, f"{f.help} (option '{f.option}')  [default: "
                                             f"{flag_default_text(name, f)}]") for f in cls.flags])
        formatter.write_paragraph()
        formatter.write_text(f"Learning rate without --lr: {cls.default_lr:g}.")
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
@click.option("--epochs", type=click.IntRange(min=1), default=50, show_default=True,
              help="Training epochs (detectors with a --steps budget: the budget when it is 0).")
@click.option("--batch-size", type=click.IntRange(min=2), default=32, show_default=True,
              help="Examples (slices) per batch.")
@click.option("--lr", type=float, default=None,
              help="Learning rate [default: the detector's; --help --detector NAME shows it].")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (fixed seed = repeatable on CPU).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--amp/--no-amp", default=True, show_default=True, help="bf16 autocast + channels_last on CUDA.")
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="Data-loader worker processes (0 = load in the main process).")
@click.option("--cache-gb", type=click.FloatRange(min=0.0), default=4.0, show_default=True,
              help="RAM budget for the float16 cache of decoded training volumes.")
@click.option("--max-batches-per-pair", type=click.IntRange(min=0), default=0, show_default=True,
              help="Cap on batches drawn per epoch from each training volume (fpi, nsa: each volume pair); 0 = "
                   "all non-empty slices.")
@click.option("--resume/--no-resume", default=False, show_default=True,
              help="Continue from the run folder's last checkpoint.")
@click.option("--training-data", default="", help="Words for the model card: what the training data is.")
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
          preset: str, recipe: Path | None, data_command: str | None, force: bool, **kw) -> None:
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
            able = " and ".join(n for n in sorted(REGISTRY) if detector_class(n).supports_presets)
            raise click.UsageError(f"--preset is for the {able} detectors, not {kw['detector']!r}")
        options = apply_preset(preset, kw, given, options)
    for key, value in flag_values(kw, kw["detector"]).items():  # a flag given wins over --opt, a preset's not
        if key in given or key not in options:
            options[key] = value
    cfg = TrainConfig(**kw, options=options)
    try:
        with echo_to(click.echo):  # the plan before training, the verdict after it
            path = train_detector(input_dir, output, cfg, run_dir, data_command=data_command, export=export)
    except OptionError:
        raise  # a bad option value, found before training: the group reports it as a usage error (exit 2)
    except (ValueError, MoodError) as exc:  # bad options, data or weights files: one line, no traceback
        raise click.ClickException(str(exc)) from None
    if distributed.is_main():
        click.echo(f"weights: {path}")
