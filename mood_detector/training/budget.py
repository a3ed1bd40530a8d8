"""A training budget in optimiser steps, whatever the number of volumes, and the line that announces it.

An epoch is one pass over the training volume pairs, so its length grows with the data set: a budget in epochs
trains 4 volumes for an eighth of the steps it gives 32. A budget in steps fixes the amount of training
instead; few volumes then means more passes over them (each pass draws new slices, patches and augmentations).
:func:`plan_steps` turns a step budget into epochs by counting each epoch's steps in advance (the pairs and
batches of an epoch are fixed by the seed), and cuts the last epoch short so that exactly ``steps`` optimiser
steps are made.

:func:`announce` is how training reports its plan and its verdict: a log line at INFO, also passed to
whatever :func:`echo_to` registered (``train`` prints it).
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass
from typing import Callable, Iterator

log = logging.getLogger(__name__)

_listeners: list[Callable[[str], None]] = []


def announce(line: str) -> None:
    """Log ``line`` at INFO and hand it to each listener of :func:`echo_to`."""
    log.info("%s", line)
    for listener in list(_listeners):
        listener(line)


@contextlib.contextmanager
def echo_to(listener: Callable[[str], None]) -> Iterator[None]:
    """While the block runs, :func:`announce` also calls ``listener`` (e.g. ``click.echo``)."""
    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.remove(listener)


@dataclass(frozen=True)
class StepPlan:
    """Epochs that make a step budget.

    Attributes:
        steps: the optimiser steps asked for.
        per_epoch: the steps of each epoch, the last one cut to what is left of the budget.
    """

    steps: int
    per_epoch: tuple[int, ...]

    @property
    def epochs(self) -> int:
        return len(self.per_epoch)

    def limit(self, epoch: int) -> int | None:
        """The steps epoch ``epoch`` may make (``None``: all of its batches; beyond the plan: none)."""
        if epoch >= self.epochs:
            return None
        return self.per_epoch[epoch] if epoch == self.epochs - 1 else None


def plan_steps(steps: int, epoch_steps: Callable[[int], int], max_epochs: int = 1_000_000) -> StepPlan:
    """The epochs needed for ``steps`` optimiser steps; ``epoch_steps(epoch)`` counts the steps of an epoch.
    Raises ValueError for an epoch without steps (no epoch count would reach the budget)."""
    if steps < 1:
        raise ValueError(f"a step budget needs at least 1 step, got {steps}")
    per_epoch: list[int] = []
    left = steps
    while left > 0:
        if len(per_epoch) >= max_epochs:
            raise ValueError(f"{steps} steps need more than {max_epochs} epochs")
        n = epoch_steps(len(per_epoch))
        if n < 1:
            raise ValueError("no training batches: are all training volumes empty?")
        per_epoch.append(min(n, left))
        left -= per_epoch[-1]
    return StepPlan(steps, tuple(per_epoch))


def duration(seconds: float) -> str:
    """``seconds`` in words: ``40 s``, ``12 min``, ``2 h 05 min``."""
    if not math.isfinite(seconds):
        return "unknown"
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def summary(detector: str, n_train: int, n_probe: int, probe_held_out: bool, steps: int, epochs: int,
            seconds_per_step: float | None, timed: int) -> str:
    """The one line ``train`` prints before training: volumes, steps, epochs and the time estimate."""
    probe = (f"{n_probe} held out for the probe" if probe_held_out else
             f"probe made from {n_probe} training volumes" if n_probe else "no probe")
    line = f"training {detector}: {n_train} training volumes ({probe}); {steps} steps in {epochs} epochs"
    if seconds_per_step is None:
        return line + "; time not estimated (several processes)"
    return (line + f"; about {duration(seconds_per_step * steps)} on this machine "
                   f"(measured: {timed} timed steps, {seconds_per_step:.2f} s each)")
