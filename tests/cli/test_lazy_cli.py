"""The CLI imports a command's module only when that command is used, and still lists every command."""

from __future__ import annotations

import sys

import click
from click.testing import CliRunner

from mood_detector.cli import COMMANDS, main
from mood_detector.cli.lazy import LazyGroup

TARGET = "tests.cli.lazy_target"


def test_help_lists_every_command():
    res = CliRunner().invoke(main, ["--help"])
    assert res.exit_code == 0
    listed = res.output.split("Commands:")[1].split()
    assert all(name in listed for name in COMMANDS)
    assert main.commands["predict"].name == "predict"  # direct lookup still works
    assert isinstance(main, LazyGroup)


def test_module_imported_only_when_needed():
    @click.group(cls=LazyGroup, lazy_commands={"hello": f"{TARGET}:hello"})
    def cli() -> None:
        pass

    @cli.command("eager")
    def eager() -> None:
        click.echo("eager ran")

    sys.modules.pop(TARGET, None)
    runner = CliRunner()
    assert runner.invoke(cli, ["eager"]).output == "eager ran\n"
    assert TARGET not in sys.modules  # another command ran: the lazy module stays unimported
    assert runner.invoke(cli, ["hello"]).output == "hello\n"
    assert TARGET in sys.modules
    res = runner.invoke(cli, ["--help"])
    assert "eager" in res.output and "hello" in res.output and "Say hello." in res.output
    assert runner.invoke(cli, ["nope"]).exit_code == 2
