"""Few training volumes: the options that give a small data set more varied examples, where the user set none.

With a step budget (``train --steps``, or ``--preset cpu``; runs budgeted in epochs train as they always did)
and below :data:`FEW_VOLUMES` volumes, a detector whose options include them gets :data:`FEW_VOLUME_OPTIONS` unless
they were given (``--opt``, a preset or a recipe): ``train_axes=all`` slices each volume pair along a random one of
the three axes, in either in-plane orientation, so a handful of scans gives three times the distinct slices
(``predict`` then scores along all three axes too). docs/training-your-data.md says how to keep one axis.
"""

from __future__ import annotations

import dataclasses

from mood_detector.training.budget import announce

#: fewer training volumes than this make a small data set
FEW_VOLUMES = 8
#: option -> value applied to a small data set where the option was not given
FEW_VOLUME_OPTIONS = {"train_axes": "all"}


def step_budget(options: dict[str, str]) -> bool:
    """Whether ``options`` set a budget in steps (a value that is not a count is left to the option checks)."""
    try:
        return int(options.get("steps", "0")) > 0
    except ValueError:
        return False


def few_volume_options(n_volumes: int, options_cls: type | None, options: dict[str, str],
                       say: bool = True) -> dict[str, str]:
    """``options`` with :data:`FEW_VOLUME_OPTIONS` added where ``options_cls`` (a detector's ``--opt``
    dataclass) has them and ``options`` does not; announces the change in one line when ``say``."""
    if n_volumes >= FEW_VOLUMES or not step_budget(options) or not dataclasses.is_dataclass(options_cls):
        return options
    known = {f.name for f in dataclasses.fields(options_cls)}
    added = {k: v for k, v in FEW_VOLUME_OPTIONS.items() if k in known and k not in options}
    if not added:
        return options
    if say:
        announce(f"small data set ({n_volumes} volumes, fewer than {FEW_VOLUMES}): using "
                 f"{', '.join(f'--opt {k}={v}' for k, v in added.items())} for more varied training slices "
                 "(docs/training-your-data.md)")
    return {**options, **added}
