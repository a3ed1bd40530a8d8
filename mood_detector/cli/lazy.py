"""A click group that imports a command's module only when that command is needed.

``mood-detector predict`` then imports the predict module (and torch) but not the modules of train, report or
benchmark (matplotlib, ...); ``mood-detector --help`` imports every command module, to show their help lines.
"""

from __future__ import annotations

import importlib
from typing import Any, Mapping

import click


class LazyCommands(dict):
    """``name -> click.Command``, each imported from its ``"module:attribute"`` target on first access
    (``group.commands[name]`` keeps working for callers that look commands up directly)."""

    def __init__(self, targets: Mapping[str, str]) -> None:
        super().__init__()
        self.targets = targets

    def __missing__(self, name: str) -> click.Command:
        if name not in self.targets:
            raise KeyError(name)
        module, attr = self.targets[name].split(":")
        cmd = getattr(importlib.import_module(module), attr)
        self[name] = cmd
        return cmd

    def get(self, name: str, default: Any = None) -> Any:  # dict.get does not call __missing__
        try:
            return self[name]
        except KeyError:
            return default

    def names(self) -> list[str]:
        """Registered and already-added command names, sorted."""
        return sorted(set(self.targets) | set(self.keys()))


class LazyGroup(click.Group):
    """A :class:`click.Group` whose commands come from ``lazy_commands`` (name -> ``"module:attribute"``) and are
    imported only when invoked (or when help lists them)."""

    def __init__(self, *args: Any, lazy_commands: Mapping[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        lazy = LazyCommands(lazy_commands or {})
        lazy.update(self.commands)
        self.commands = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return self.commands.names() if isinstance(self.commands, LazyCommands) else sorted(self.commands)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self.commands.get(cmd_name)
