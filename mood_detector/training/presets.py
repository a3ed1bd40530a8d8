"""Named training presets: a set of ``train`` option values chosen together for one budget.

A preset only fills in what the command line leaves at its default: ``--preset cpu --epochs 5`` keeps 5 epochs
(an ``--epochs`` given on the command line also replaces the preset's step budget). docs/fpi.md holds the
measurements behind each choice.
"""

from __future__ import annotations

from typing import Any

#: the ``cpu`` preset's budget in optimiser steps
CPU_STEPS = 1440

#: preset name -> train option values (CLI parameter names; ``steps`` becomes the detector option as its flag does);
#: ``options`` holds detector ``--opt`` values. Neither sets the task's output (``--mode``): each detector's own
#: default (FPI's ``discrete``, the paper's; NSA's ``continuous``, its only one) applies.
PRESETS: dict[str, dict[str, Any]] = {
    # The FPI paper: full-size slices, full width, 50 epochs of Adam at 1e-3, no skips, no contrast remap.
    "paper": {"size": None, "width": 1.0, "epochs": 50, "batch_size": 32, "lr": 1e-3,
              "options": {"skips": "0", "contrast": "0", "lr_schedule": "constant"}},
    # About 25 minutes on 2 CPU cores (24 measured with 4 volumes), whatever the number of volumes: 128^2 slices,
    # a quarter of the paper's width, skip connections for sharp maps, a label tolerance, contrast remaps, a
    # cosine-decayed learning rate, 4 batches per volume pair and epoch (docs/fpi-cpu.md). The budget is in
    # optimiser steps: 1,440 are the 24 epochs it once was for 32 volumes (2 held out for the probe, 30 in 15 pairs
    # of 4 batches: 60 steps each).
    "cpu": {"size": 128, "width": 0.25, "steps": CPU_STEPS, "batch_size": 32, "lr": 1e-3,
            "max_batches_per_pair": 4,
            "options": {"skips": "1", "contrast": "0.5", "lr_schedule": "cosine"},
            # label tolerance: measured for brain MRI (0 < 0.05 < 0.1 < 0.2); for CT scaled down to its smaller
            # soft-tissue contrasts in [0, 1] (fat, muscle and organs lie within 0.45-0.58), not measured
            "kind_options": {"brain": {"equal_tol": "0.2"}, "abdom": {"equal_tol": "0.05"}}},
}


def apply_preset(name: str, values: dict[str, Any], given: set[str], options: dict[str, str]) -> dict[str, str]:
    """Fill ``values`` (train keyword arguments) from preset ``name`` where the key is not in ``given`` (set on the
    command line); returns the detector options: the preset's, then its options for ``values["kind"]``, then
    the user's own on top."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    preset = PRESETS[name]
    for key, value in preset.items():
        if key in ("options", "kind_options") or key in given:
            continue
        if key == "steps" and "epochs" in given:  # the user's epochs are the budget
            continue
        values[key] = value
    by_kind = preset.get("kind_options", {}).get(values.get("kind", ""), {})
    return {**preset.get("options", {}), **by_kind, **options}
