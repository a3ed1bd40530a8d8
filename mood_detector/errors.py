"""The package's own error types.

Every failure that concerns one input file is a :class:`InputError` carrying the file and a one-line reason,
so the harness can report it and go on with the other files.
"""

from __future__ import annotations

from pathlib import Path


class MoodError(Exception):
    """Base class of all errors raised on purpose by mood-detector."""


class InputError(MoodError):
    """An input file that cannot be scored: names the file and the reason in one line."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = " ".join(str(reason).split())  # always one line
        super().__init__(f"{self.path}: {self.reason}")


class WeightsError(MoodError):
    """Weights or a model card that cannot be loaded."""


class StrictFailure(MoodError):
    """Raised by ``--strict`` runs at the first input that fails."""


class OptionError(ValueError):
    """A command-line option value that its parser accepts but that cannot work: a ``--size`` the network's
    stride does not divide, an ``--opt`` key the detector does not know, a ``--device`` that is not there, an
    output that cannot be written, ...; found before any work starts.

    ``option`` is the option as typed on the command line (``--size``), ``reason`` says what is wrong and what
    is allowed, in one line. The command line reports it as a usage error (exit code 2):
    ``Error: Invalid value for '--size': ...``. A ``ValueError``, so library callers that catch those still do.
    """

    def __init__(self, option: str, reason: str) -> None:
        self.option = option
        self.reason = " ".join(str(reason).split())  # always one line
        super().__init__(f"{option}: {self.reason}")
