"""The common detector interface and the registry of detectors.

A detector is a small class that scores batches of 2D slices; the harness (``mood_detector.inference``)
does everything else: reading, resampling, slicing, batching, aggregation to a volume score and writing.
Adding a detector means adding one sub-package under ``mood_detector/models`` and one line in
:data:`REGISTRY`; the harness is never touched.
"""

from __future__ import annotations

import dataclasses
import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, Sequence, TypeVar

import numpy as np
import torch
from torch import nn

from mood_detector.kinds import Kind, get_kind
from mood_detector.weights import ModelCard, load_weights, save_weights

T = TypeVar("T")


class SliceScores(NamedTuple):
    """Scores of a batch of slices: ``pixel`` (N, H, W) in [0, 1] and, for detectors with their own
    image-level score, ``slice`` (N,) in [0, 1]; ``None`` means the mean pixel score is used."""

    pixel: torch.Tensor
    slice: torch.Tensor | None = None


class VolumeScores(NamedTuple):
    """Result for one volume: the voxel-wise ``pixel`` map (input shape, float32, [0, 1]) and the ``sample``
    score in [0, 1]; ``slice_scores`` are the per-slice scores the sample score was aggregated from."""

    pixel: np.ndarray
    sample: float
    slice_scores: np.ndarray


@dataclass
class TrainConfig:
    """Options shared by all detectors' training; detector-specific ones go in ``options``.

    Attributes:
        detector: registry name.
        kind: ``brain`` or ``abdom``.
        size: in-plane network size; volumes are resampled to ``size`` cubed (default: the kind's size).
        width: channel multiplier of the network.
        mode: detector mode (FPI: ``discrete`` or ``continuous``).
        epochs, batch_size, lr: schedule (defaults per the FPI paper).
        swa_epochs: extra SWA epochs after training (0 = off).
        seed: random seed; a fixed seed makes a CPU run repeatable.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        amp: bf16 autocast and channels_last on CUDA.
        workers: data loader worker processes.
        cache_gb: RAM budget for the compact float16 volume cache.
        disk_cache: decode every training volume once into ``<run_dir>/cache`` as float16 ``.npy`` files that
            the data-loader workers memory-map (shared pages instead of one private cache per worker);
            ``None`` = when ``workers`` > 0 (detectors that support it: FPI).
        max_batches_per_pair: cap on batches drawn from each volume pair (0 = all non-empty slices).
        batches_per_step: loader batches (of ``batch_size`` each) per optimiser step, split across the
            distributed ranks (a multiple of the world size; 0 = the world size, i.e. one per rank). Fixing it
            makes the run independent of the number of processes (see ``mood_detector.distributed``).
        resume: continue from the run folder's last checkpoint.
        options: detector-specific settings (strings parsed by the detector).
    """

    detector: str = "fpi"
    kind: str = "brain"
    size: int | None = None
    width: float = 1.0
    mode: str = "discrete"
    epochs: int = 50
    batch_size: int = 32
    lr: float = 1e-3
    swa_epochs: int = 0
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    workers: int = 0
    cache_gb: float = 4.0
    disk_cache: bool | None = None
    max_batches_per_pair: int = 0
    batches_per_step: int = 0
    resume: bool = False
    training_data: str = ""
    options: dict[str, str] = field(default_factory=dict)

    @property
    def kind_cfg(self) -> Kind:
        return get_kind(self.kind)

    @property
    def net_size(self) -> int:
        return int(self.size or self.kind_cfg.size)


class Detector(ABC):
    """A trained detector: scores slices, saves and loads itself as safetensors + card."""

    #: registry name, e.g. ``fpi``
    name: ClassVar[str]
    #: Inference capabilities the harness may use on the CPU path (``mood_detector.inference.fastpath``).
    #: ``skip_empty_slices``: a slice that is all background (<= 0) in the input is not run and scores 0.
    #: ``supports_crop``: the detector is fully convolutional with an output that depends on a bounded
    #: neighbourhood, so a slice batch may be cropped to its foreground box (offset and size multiples of
    #: :attr:`crop_stride`); detectors that resize whole slices (DDAD, SQUID, DPA) must leave it False.
    skip_empty_slices: ClassVar[bool] = False
    supports_crop: ClassVar[bool] = False

    @property
    def crop_stride(self) -> int:
        """Crop offsets and sizes must be multiples of this (the network's total down-sampling factor)."""
        return 1

    @property
    def slice_rule(self) -> str:
        """How a slice score is made from its pixel scores when the detector gives none of its own: ``mean``
        (default, the FPI reference code's rule) or ``top:Q`` (mean of the highest fraction Q), from the card's
        ``extra.slice_score`` (:func:`mood_detector.inference.aggregate.slice_scores`)."""
        return str(self.card.extra.get("slice_score", "mean"))

    def __init__(self, card: ModelCard) -> None:
        self.card = card
        self.device = torch.device("cpu")

    # --- what every detector implements -------------------------------------------------------------
    @classmethod
    @abstractmethod
    def build(cls, card: ModelCard) -> "Detector":
        """A freshly initialised detector for ``card``."""

    @abstractmethod
    def modules(self) -> dict[str, nn.Module]:
        """The named networks whose state is saved (prefix -> module)."""

    @abstractmethod
    def score_slices(self, x: torch.Tensor) -> SliceScores:
        """Score slices ``x`` (N, 1, size, size) in [0, 1] on ``self.device``; no gradients needed."""

    @classmethod
    @abstractmethod
    def fit(cls, files: Sequence[Path], cfg: TrainConfig, run_dir: Path) -> "Detector":
        """Train on normal volumes ``files``, checkpointing into ``run_dir``; return the trained detector."""

    # --- shared behaviour ---------------------------------------------------------------------------
    @property
    def kind(self) -> Kind:
        return get_kind(self.card.kind)

    @property
    def size(self) -> int:
        return int(self.card.size)

    @property
    def slice_axis(self) -> int:
        return int(self.card.slice_axis)

    def to(self, device: torch.device | str) -> "Detector":
        self.device = torch.device(device)
        for m in self.modules().values():
            m.to(self.device)
        return self

    def eval(self) -> "Detector":
        for m in self.modules().values():
            m.eval()
        return self

    def extra_tensors(self) -> dict[str, torch.Tensor]:
        """Tensors that are not module state (e.g. feature statistics); saved under ``extra.``."""
        return {}

    def load_extra_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Counterpart of :meth:`extra_tensors`."""

    def state_tensors(self) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for prefix, module in self.modules().items():
            for k, v in module.state_dict().items():
                out[f"{prefix}.{k}"] = v
        for k, v in self.extra_tensors().items():
            out[f"extra.{k}"] = v
        return out

    def load_state_tensors(self, tensors: dict[str, torch.Tensor], strict: bool = True) -> None:
        for prefix, module in self.modules().items():
            sub = {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
            module.load_state_dict(sub, strict=strict)
        self.load_extra_tensors({k[6:]: v for k, v in tensors.items() if k.startswith("extra.")})

    def save(self, path: str | Path, dtype: torch.dtype | None = None) -> Path:
        """Save to ``path`` (.safetensors + .json card); ``dtype`` (e.g. float16) casts floating tensors."""
        tensors = self.state_tensors()
        if dtype is not None:
            tensors = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in tensors.items()}
        return save_weights(path, tensors, self.card)


# name -> "module:Class"; imported lazily so an unused detector costs nothing at start-up.
REGISTRY: dict[str, str] = {
    "fpi": "mood_detector.models.fpi.detector:FPIDetector",
    "squid": "mood_detector.models.squid.detector:SQUIDDetector",
    "ddad": "mood_detector.models.ddad.detector:DDADDetector",
    "dpa": "mood_detector.models.dpa.detector:DPADetector",
    "ae": "mood_detector.models.ae.detector:AEDetector",
}


def detector_class(name: str) -> type[Detector]:
    """The detector class registered as ``name``."""
    try:
        target = REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown detector {name!r}; available: {', '.join(sorted(REGISTRY))}") from None
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)


def load_detector(path: str | Path, device: torch.device | str = "cpu") -> Detector:
    """Load a detector from its ``.safetensors`` file (and card), ready for inference on ``device``."""
    tensors, card = load_weights(path)
    det = detector_class(card.detector).build(card)
    floats = {k: (v.float() if v.is_floating_point() else v) for k, v in tensors.items()}
    det.load_state_tensors(floats)
    return det.to(device).eval()


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; anything else is passed to torch."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def parse_options(pairs: Sequence[str]) -> dict[str, str]:
    """Parse ``KEY=VALUE`` strings into a dict (for detector-specific options)."""
    out: dict[str, str] = {}
    for p in pairs:
        if "=" not in p:
            raise ValueError(f"option {p!r} is not of the form KEY=VALUE")
        k, v = p.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def parse_options_as(cls: type[T], options: dict[str, Any], detector: str) -> T:
    """Build the dataclass ``cls`` from ``options`` (``--opt`` strings or a card's JSON values), each field read
    with :func:`option`; unknown keys (typos would otherwise be silently ignored) and unconvertible values are a
    ``ValueError`` naming the detector."""
    known = {f.name: f.default for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"unknown {detector} option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    try:
        return cls(**{k: option(options, k, d) for k, d in known.items()})
    except ValueError as exc:
        raise ValueError(f"bad {detector} option value: {exc}") from None


def option(options: dict[str, Any], key: str, default: Any) -> Any:
    """Read a detector option with the type of ``default`` (bool accepts 1/0/true/false/yes/no)."""
    if key not in options:
        return default
    raw = options[key]
    if isinstance(default, bool):
        return str(raw).lower() in ("1", "true", "yes", "on")
    return type(default)(raw) if default is not None else raw
