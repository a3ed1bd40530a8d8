"""Which command made a folder of training data: ``make-data`` writes it beside the volumes, ``train`` copies it
into the model card (``data_command``), so a card names the data it was trained on in a form that runs."""

from __future__ import annotations

import json
import logging
import shlex
from pathlib import Path

import click

log = logging.getLogger(__name__)

#: written by ``make-data`` into its output folder (not a volume: ``train`` and ``predict`` skip it)
DATA_COMMAND_FILE = "make-data.json"


def command_line(ctx: click.Context, program: str = "mood-detector") -> str:
    """The command of ``ctx`` as a shell line, with the arguments and the options given on the command line
    (defaults left out): e.g. ``mood-detector make-data brain --n 42 --out data/brain --seed 11``."""
    words = [program, ctx.info_name or ""]
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if isinstance(param, click.Argument):
            words.append(str(value))
            continue
        if ctx.get_parameter_source(param.name) is click.core.ParameterSource.DEFAULT or value is None:
            continue
        flag = max(param.opts, key=len)
        if isinstance(param, click.Option) and param.is_flag:
            words.append(flag if value else (param.secondary_opts or [flag])[0])
        else:
            words += [flag, str(value)]
    return shlex.join(w for w in words if w)


def write_data_command(folder: Path, command: str) -> None:
    """Record ``command`` as the maker of the volumes in ``folder``."""
    (Path(folder) / DATA_COMMAND_FILE).write_text(json.dumps({"command": command}, indent=2) + "\n",
                                                  encoding="utf-8")


def read_data_command(folder: Path) -> str:
    """The command recorded in ``folder`` by ``make-data`` ('' when none or unreadable)."""
    path = Path(folder) / DATA_COMMAND_FILE
    if not path.is_file():
        return ""
    try:
        return str(json.loads(path.read_text(encoding="utf-8")).get("command", ""))
    except (OSError, ValueError, AttributeError) as exc:
        log.warning("%s: not readable (%s); the model card will not name the data command", path, exc)
        return ""
