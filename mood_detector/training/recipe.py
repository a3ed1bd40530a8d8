"""A model card read back as a training recipe: ``mood-detector train --recipe weights/brain/nsa.json``.

A card (``<name>.json`` beside the weights) records every setting a model was trained with: the detector, kind,
network size and width, the schedule (epochs, batch size, learning rate, seed, batches per volume pair), the
detector's options in ``extra`` (the task, the axes it trains along, the final BatchNorm recompute) and the
export steps applied afterwards (float16 storage, test-time mirroring, the slice-score rule). A recipe turns these
back into ``train`` values, so that training on new data gives a card whose settings equal the recipe's.

What a card holds about its *data* (``training_data``, ``data_command``, ``n_train_volumes``, statistics such as
``bn_recomputed`` or DPA's ``score_scale``) is measured from the new data instead. Options that name a folder or file
(the detector flags declared with a ``path``, e.g. ``--unlabeled``) are not taken from a recipe: they name files on
the machine that trained it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from mood_detector.detector import REGISTRY, Detector, detector_class
from mood_detector.errors import WeightsError
from mood_detector.preprocess import SCHEMES
from mood_detector.weights import ModelCard

log = logging.getLogger(__name__)

#: card top-level fields that are ``train`` values
CARD_VALUES = ("detector", "kind", "size", "width", "epochs", "seed")
#: ``extra`` keys that are ``train`` values (schedule settings every detector may record)
EXTRA_VALUES = ("batch_size", "lr", "max_batches_per_pair")


def option_fields(detector: str) -> set[str]:
    """The ``--opt`` keys of ``detector`` (empty when it has none)."""
    cls = detector_class(detector).options_cls
    return {f.name for f in fields(cls)} if cls is not None else set()


def _as_option(value: Any) -> str:
    """A card value as an ``--opt`` string (booleans as 1/0, which every option parser reads back)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


@dataclass
class ExportSteps:
    """What ``mood-detector export`` did to a model after training, replayed on the newly trained one.

    Attributes:
        stored_dtype: precision of the stored tensors (``float16`` or ``float32``).
        tta_mirror: the test-time mirroring ``predict`` uses by default (``None``: none recorded).
        slice_score: the slice-score rule, for detectors where it is not a training option.
        score_axes: the slicing axes ``predict`` uses by default (``None``: the card's ``train_axes``).
        adapt: the test-time adaptation ``predict`` uses by default (``None``: none recorded).
        recipe: the card the steps came from (recorded in the new card as ``extra.recipe``).
    """

    stored_dtype: str = "float32"
    tta_mirror: str | None = None
    slice_score: str | None = None
    score_axes: str | None = None
    adapt: str | None = None
    recipe: str = ""

    def apply(self, det: Detector) -> torch.dtype | None:
        """Set the card fields on ``det``; returns the dtype to save with (``None``: as trained)."""
        extra = det.card.extra
        if self.tta_mirror is not None:
            extra["tta_mirror"] = self.tta_mirror
        if self.slice_score is not None:
            extra["slice_score"] = self.slice_score
        for key in ("score_axes", "adapt"):
            if getattr(self, key) is not None:
                extra[key] = getattr(self, key)
        if self.recipe:
            extra["recipe"] = self.recipe
        if self.stored_dtype == "float32" and "stored_dtype" not in extra:
            return None
        extra["stored_dtype"] = self.stored_dtype
        return getattr(torch, self.stored_dtype)


@dataclass
class Recipe:
    """The settings of a model card as ``train`` values.

    Attributes:
        source: the card file.
        values: ``train`` keyword arguments (TrainConfig fields: detector, kind, size, ...).
        options: detector options (``--opt``), as strings.
        export: the export steps to replay after training.
        data_command: the command that made the recipe's training data ('' when the card does not say).
    """

    source: Path
    values: dict[str, Any] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    export: ExportSteps = field(default_factory=ExportSteps)
    data_command: str = ""


def recipe_from_card(card: ModelCard, source: Path) -> Recipe:
    """The :class:`Recipe` of ``card`` (read from ``source``)."""
    values: dict[str, Any] = {k: getattr(card, k) for k in CARD_VALUES}
    if card.detector not in REGISTRY:
        raise WeightsError(f"{source}: the card's detector {card.detector!r} is not one of this package's")
    extra = dict(card.extra)
    if extra.get("preprocess", "minmax") != SCHEMES[0]:  # not a setting: what this version's training does
        log.warning("%s: the recipe's model was trained with the %r intensity scheme; training now uses %r "
                    "(mood_detector.preprocess), so the new model sees its inputs differently",
                    source, extra.get("preprocess", "minmax"), SCHEMES[0])
    cls = detector_class(card.detector)
    keys = option_fields(card.detector) - cls.folder_options()
    values.update({k: extra[k] for k in EXTRA_VALUES if k in extra and k not in keys})
    # the options the detector finds in its card (FPI's ``mode`` is the card's)
    options = {k: _as_option(v) for k, v in cls.card_options(card).items() if k in keys}
    export = ExportSteps(stored_dtype=str(extra.get("stored_dtype", "float32")),
                         tta_mirror=extra.get("tta_mirror"),
                         slice_score=None if "slice_score" in keys else extra.get("slice_score"),
                         score_axes=extra.get("score_axes"), adapt=extra.get("adapt"), recipe=str(source))
    return Recipe(source=source, values=values, options=options, export=export, data_command=card.data_command)


def read_recipe(path: str | Path) -> Recipe:
    """Read the model card at ``path`` (a ``.json`` card, or the ``.safetensors`` file it belongs to)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        path = path.with_suffix(".json")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{path}: cannot read the recipe's model card ({exc})") from None
    if not isinstance(data, dict):
        raise WeightsError(f"{path}: not a model card (a JSON object)")
    return recipe_from_card(ModelCard.from_dict(data), path)


def apply_recipe(recipe: Recipe, values: dict[str, Any], given: set[str], options: dict[str, str]) -> dict[str, str]:
    """Fill ``values`` (train keyword arguments) from ``recipe`` where the key is not in ``given`` (set on the
    command line); returns the detector options: the recipe's, with the user's ``--opt`` values on top."""
    for key, value in recipe.values.items():
        if key not in given:
            values[key] = value
    if recipe.data_command:
        log.info("the recipe's training data were made with: %s", recipe.data_command)
    return {**recipe.options, **options}
