"""Weights on disk: a ``.safetensors`` file of tensors plus a ``.json`` model card beside it.

Loading never unpickles anything: safetensors is a flat tensor format and the card is plain JSON.
"""

from __future__ import annotations

import json
import logging
import subprocess
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from mood_detector import __version__
from mood_detector.errors import WeightsError
from mood_detector.io.atomic import atomic_open, atomic_path

log = logging.getLogger(__name__)


#: card fields of earlier versions that are now ``extra`` entries: ``classes``, the output channels of an FPI network
FORMER_FIELDS = ("classes",)


@dataclass
class ModelCard:
    """What a set of weights is and how it was made.

    Attributes:
        detector: registry name (``fpi``, ``ae``, ...).
        arch: network architecture name (``brain`` or ``abdom`` plan for FPI).
        width: channel multiplier (1.0 = the published widths).
        kind: dataset kind the model was trained for.
        slice_axis: array axis the network slices along.
        size: in-plane slice size the network sees (volumes are resampled to ``size`` cubed).
        mode: the detector's variant, one word that each detector defines and sets (FPI: its task's output,
            ``discrete`` or ``continuous``; DDAD: the scoring variant; DPA: the features; ...).
        training_data: plain-words description of what it was trained on.
        data_command: the command that made the training data (``make-data`` records it beside the volumes).
        epochs, seed: training schedule and seed.
        package_version, commit: provenance.
        extra: detector-specific settings, hyperparameters and statistics (JSON-serialisable), e.g. FPI's
            output channels ``classes``.
    """

    detector: str
    arch: str
    width: float
    kind: str
    slice_axis: int
    size: int
    mode: str = ""
    training_data: str = ""
    data_command: str = ""
    epochs: int = 0
    seed: int = 0
    package_version: str = __version__
    commit: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelCard":
        """The card of JSON ``data``; fields of cards written by earlier versions that are now ``extra`` entries
        (:data:`FORMER_FIELDS`) are read into ``extra`` (where it has no such entry), other unknown keys ignored."""
        known = {f.name for f in fields(cls)}
        extra = data.get("extra", {})
        if isinstance(extra, dict) and any(k in data for k in FORMER_FIELDS):
            moved = {k: data[k] for k in FORMER_FIELDS if k in data and k not in extra}
            data = {**data, "extra": {**extra, **moved}}
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except TypeError as exc:
            raise WeightsError(f"model card is incomplete: {exc}") from None


def git_commit(cwd: Path | None = None) -> str:
    """The current git commit of the package's checkout, or '' when not in one."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd or Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def card_path(weights: Path) -> Path:
    """The card that belongs to a ``.safetensors`` file."""
    return weights.with_suffix(".json")


def save_weights(path: str | Path, tensors: dict[str, torch.Tensor], card: ModelCard) -> Path:
    """Save ``tensors`` to ``path`` (``.safetensors``) and the card beside it, both atomically."""
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_suffix(".safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(flat, tmp, metadata={"detector": card.detector, "kind": card.kind})
    with atomic_open(card_path(path), binary=False, fsync=False) as fh:
        fh.write(card.to_json() + "\n")
    return path


def read_card(weights: Path) -> ModelCard:
    """The JSON card beside a ``.safetensors`` file (without loading the tensors)."""
    return ModelCard.from_dict(json.loads(card_path(weights).read_text(encoding="utf-8")))


def load_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], ModelCard]:
    """Load tensors (safetensors, never pickle) and the JSON card beside them."""
    path = Path(path)
    if path.is_dir():
        found = sorted(path.glob("*.safetensors"))
        if len(found) != 1:
            raise WeightsError(f"{path}: expected exactly one .safetensors file, found {len(found)}")
        path = found[0]
    if path.suffix != ".safetensors":
        raise WeightsError(f"{path}: weights must be a .safetensors file (pickled checkpoints are refused)")
    cp = card_path(path)
    if not path.is_file() or not cp.is_file():
        raise WeightsError(f"{path}: weights file or its card {cp.name} is missing")
    try:
        card = read_card(path)
        tensors = load_file(str(path), device="cpu")
    except WeightsError:
        raise
    except Exception as exc:
        raise WeightsError(f"{path}: cannot load weights ({type(exc).__name__}: {exc})") from None
    return tensors, card
