"""The ``mood-detector`` command line: a thin click layer over library functions.

Each command lives in its own module and is registered in :data:`COMMANDS`; a module is imported only when its
command runs (or ``--help`` lists the commands), so start-up does not pay for every command's imports.
"""

from __future__ import annotations

import os
import sys

import click

from mood_detector import __version__
from mood_detector.cli.lazy import LazyGroup
from mood_detector.errors import OptionError
from mood_detector.logging_setup import setup_logging

# command name -> "module:function"; one line per command module
COMMANDS: dict[str, str] = {
    "make-data": "mood_detector.cli.make_data:make_data",
    "train": "mood_detector.cli.train:train",
    "export": "mood_detector.cli.export:export",
    "adapt": "mood_detector.cli.adapt:adapt",
    "predict": "mood_detector.cli.predict:predict",
    "demo": "mood_detector.cli.demo:demo",
    "report": "mood_detector.cli.report:report",
    "make-testset": "mood_detector.cli.make_testset:make_testset_cmd",
    "evaluate": "mood_detector.cli.evaluate:evaluate_cmd",
    "visibility": "mood_detector.cli.visibility:visibility_cmd",
    "benchmark": "mood_detector.cli.benchmark:benchmark",
    "benchmark-speed": "mood_detector.cli.benchmark_speed:benchmark_speed",
}


class MoodGroup(LazyGroup):
    """The command group: an :class:`~mood_detector.errors.OptionError` from any command (an option value that
    parsed but cannot work, found before the work starts) is a usage error naming the option, exit code 2."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except OptionError as exc:
            raise click.BadParameter(exc.reason, param_hint=f"'{exc.option}'") from None


def checked_option(parser: str):
    """Click callback that checks an option's value with ``parser`` (``"module:function"``, imported only when
    the option is given, so start-up stays light) while parsing, before the command loads anything: a
    ``ValueError`` becomes a one-line usage error naming the option."""
    module, func = parser.split(":")

    def callback(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
        if value is not None:
            import importlib

            try:
                getattr(importlib.import_module(module), func)(value)
            except ValueError as exc:
                raise click.BadParameter(str(exc)) from None
        return value

    return callback


#: ``--slice-score``: ``mean`` or ``top:Q``
slice_rule_option = checked_option("mood_detector.inference.aggregate:parse_slice_rule")
#: ``--mirror``: ``none`` or a comma list of the axes 0, 1, 2
mirror_option = checked_option("mood_detector.inference.predictor:parse_mirror")


@click.group(cls=MoodGroup, lazy_commands=COMMANDS,
             context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="mood-detector")
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
              default="INFO", help="Logging threshold (messages go to stderr).")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
              help="Log lines as plain text or one JSON object per line.")
def main(log_level: str, log_format: str) -> None:
    """mood-detector: out-of-distribution detection for 3D NIfTI volumes (MICCAI MOOD style)."""
    setup_logging(log_level, log_format)



def entry() -> None:
    """The ``mood-detector`` console command: :func:`main`; in a ``torchrun`` worker (``WORLD_SIZE`` > 1) the
    process then ends by :func:`mood_detector.distributed.end_process` with the command's exit status (no
    interpreter shutdown, where the distributed backend's threads can abort a finished run)."""
    if int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1:
        main()
        return
    try:
        main()
        code = 0
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = int(exc.code or 0)
        else:  # sys.exit("message"): printed, status 1, as the interpreter does
            print(exc.code, file=sys.stderr)
            code = 1
    from mood_detector import distributed

    distributed.end_process(code)
