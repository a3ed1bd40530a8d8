"""The common detector interface and the registry of detectors.

A detector is a small class that scores batches of 2D slices; the harness (``mood_detector.inference``)
does everything else: reading, resampling, slicing, batching, aggregation to a volume score and writing.
Adding a detector means adding one sub-package under ``mood_detector/models`` and one line in
:data:`REGISTRY`; the harness is never touched (docs/add-a-detector.md).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable, NamedTuple, Sequence, TypeVar

import numpy as np
import torch
from torch import nn

from mood_detector.errors import OptionError, WeightsError
from mood_detector.kinds import KINDS, Kind, get_kind
from mood_detector.preprocess import SCHEMES
from mood_detector.weights import ModelCard, git_commit, load_weights, save_weights

T = TypeVar("T")


class SliceScores(NamedTuple):
    """Scores of a batch of slices: ``pixel`` (N, H, W) in [0, 1] and, for detectors with their own
    image-level score, ``slice`` (N,) in [0, 1]; ``None`` means the mean pixel score is used."""

    pixel: torch.Tensor
    slice: torch.Tensor | None = None


class PatchScores(NamedTuple):
    """Scores of a batch of 3D patches (volumetric detectors): ``pixel`` (N, d, h, w) in [0, 1]."""

    pixel: torch.Tensor


class VolumeScores(NamedTuple):
    """Result for one volume: the voxel-wise ``pixel`` map (input shape, float32, [0, 1]) and the ``sample``
    score in [0, 1]; ``slice_scores`` are the per-slice scores the sample score was aggregated from."""

    pixel: np.ndarray
    sample: float
    slice_scores: np.ndarray


@dataclass(frozen=True)
class Flag:
    """A ``train`` flag of a detector: ``--steps 900`` sets the detector's option ``steps`` as ``--opt steps=900``
    would. A detector declares its flags in :attr:`Detector.flags`; ``train`` makes one option of each flag name
    (detectors that share a flag declare the same ``option``, ``choices``, ``minimum`` and ``path``) and refuses
    it, naming it, for a detector that does not declare it.

    Attributes:
        name: the flag as typed, e.g. ``--steps``.
        option: the option it sets, a field of the detector's :attr:`Detector.options_cls`, whose type and
            default are the flag's.
        help: what it does, for ``train --help`` (the default, and which detectors read it, are added).
        choices: the values allowed (empty: any value of the option's type).
        minimum: the smallest number allowed (``None``: no limit).
        path: ``dir`` or ``file``: an existing folder or file on the machine that trains (a recipe does not carry
            it over to another); empty: not a path.
        default_text: shown as the default instead of the option's default value (e.g. what leaving it out does).
    """

    name: str
    option: str
    help: str
    choices: tuple[str, ...] = ()
    minimum: int | float | None = None
    path: str = ""
    default_text: str = ""

    def same_value(self, other: "Flag") -> bool:
        """Whether ``other`` takes the same values into the same option (two detectors may share a flag)."""
        return (self.name, self.option, self.choices, self.minimum, self.path) == \
            (other.name, other.option, other.choices, other.minimum, other.path)



@dataclass
class TrainConfig:
    """Options shared by all detectors' training; detector-specific ones go in ``options``.

    Attributes:
        detector: registry name.
        kind: ``brain`` or ``abdom``.
        size: in-plane network size; volumes are resampled to ``size`` cubed (default: the kind's size).
        width: channel multiplier of the network.
        epochs, batch_size: schedule (defaults per the FPI paper).
        lr: learning rate; ``None`` = the detector's default (:attr:`Detector.default_lr`).
        seed: random seed; a fixed seed makes a CPU run repeatable.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        amp: bf16 autocast and channels_last on CUDA.
        workers: data loader worker processes.
        cache_gb: RAM budget for the compact float16 volume cache.
        max_batches_per_pair: cap on batches drawn per epoch from each training volume (FPI, NSA: each volume
            pair); 0 = all non-empty slices.
        resume: continue from the run folder's last checkpoint.
        options: detector-specific settings (strings parsed by the detector).
    """

    detector: str = "fpi"
    kind: str = "brain"
    size: int | None = None
    width: float = 1.0
    epochs: int = 50
    batch_size: int = 32
    lr: float | None = None
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    workers: int = 0
    cache_gb: float = 4.0
    max_batches_per_pair: int = 0
    resume: bool = False
    training_data: str = ""
    options: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        """A configuration saved as JSON (a checkpoint's); the detector's settings that configurations once held
        as fields (:attr:`Detector.former_config_fields`) are read into ``options``, except a value that left the
        option at its default."""
        values = json.loads(text)
        options = dict(values.pop("options", {}) or {})
        name = values.get("detector", "")
        former = detector_class(name).former_config_fields if name in REGISTRY else {}
        for key, unset in former.items():
            value = values.pop(key, None)
            if key not in options and value is not None and value != unset:
                options[key] = {True: "on", False: "off"}.get(value, str(value))
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known}, options=options)

    @property
    def kind_cfg(self) -> Kind:
        return get_kind(self.kind)

    @property
    def net_size(self) -> int:
        return int(self.size or self.kind_cfg.size)

    def validate(self) -> None:
        """Raise :class:`OptionError` (naming the ``train`` option) for a value no detector can train with;
        detector-specific limits (network strides, ``--opt`` keys) are each detector's
        :meth:`Detector.check_config`. :func:`check_train_config` runs both."""
        if self.detector not in REGISTRY:
            raise OptionError("--detector", f"{self.detector!r} is not a detector; choose from "
                                            f"{', '.join(sorted(REGISTRY))}")
        if self.kind not in KINDS:
            raise OptionError("--kind", f"{self.kind!r} is not a kind; choose from {', '.join(sorted(KINDS))}")
        if self.size is not None and self.size < 16:
            raise OptionError("--size", f"{self.size} is too small; use 16 or more")
        if not (math.isfinite(self.width) and self.width > 0):
            raise OptionError("--width", f"{self.width} is not a channel multiplier; use a number > 0, e.g. 0.25")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise OptionError("--lr", f"{self.lr} is not a learning rate; use a number > 0, e.g. 1e-3")
        for option, value, low in (("--epochs", self.epochs, 1), ("--batch-size", self.batch_size, 2),
                                   ("--workers", self.workers, 0),
                                   ("--max-batches-per-pair", self.max_batches_per_pair, 0)):
            if value < low:
                raise OptionError(option, f"{value} is below the minimum {low}")
        if not 0 <= self.seed < 2**32:
            raise OptionError("--seed", f"{self.seed} is out of range; use 0 to {2**32 - 1}")
        if not (math.isfinite(self.cache_gb) and self.cache_gb >= 0):
            raise OptionError("--cache-gb", f"{self.cache_gb} is not a size in GB; use a number >= 0")
        check_device(self.device)


#: :class:`TrainConfig` fields every detector's training reads (``Detector.train_fields``)
COMMON_FIELDS = frozenset({"detector", "kind", "size", "width", "epochs", "batch_size", "lr", "seed", "device", "amp",
                           "workers", "cache_gb", "max_batches_per_pair", "resume", "training_data", "options"})


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
    #: 2: the detector scores slices (:meth:`score_slices`); 3: it is volumetric and scores 3D patches of the
    #: network volume (:meth:`score_patches`, :attr:`patch_size`); the harness does the rest either way
    dims: ClassVar[int] = 2
    #: Training capabilities. ``options_cls``: the dataclass of the ``--opt KEY=VALUE`` options (typed fields with
    #: defaults, an ``Attributes:`` docstring for ``train --help --detector NAME``, checks in ``__post_init__``);
    #: ``train_fields``: the :class:`TrainConfig` fields the training reads (a ``train`` flag for another one is
    #: a usage error naming it); ``supports_distributed``: ``fit`` runs under ``torchrun``; ``supports_presets``:
    #: ``train --preset`` sets this detector's options; ``default_lr``: the learning rate without ``--lr``.
    options_cls: ClassVar[type | None] = None
    train_fields: ClassVar[frozenset[str]] = COMMON_FIELDS
    supports_distributed: ClassVar[bool] = False
    supports_presets: ClassVar[bool] = False
    default_lr: ClassVar[float] = 1e-3
    #: ``train`` flags that set one of the detector's options (:class:`Flag`; e.g. FPI's ``--steps``); ``train``
    #: refuses a flag, by name, for a detector that does not declare it
    flags: ClassVar[tuple[Flag, ...]] = ()
    #: options that :class:`TrainConfig` once held as fields, each with the value that left the option at its
    #: default (:meth:`TrainConfig.from_json` reads a saved configuration's others into ``options``)
    former_config_fields: ClassVar[dict[str, Any]] = {}
    #: the detector's training scores a held-out task each epoch and announces a verdict (ready or not)
    gives_verdict: ClassVar[bool] = False
    #: the detector has a self-supervised task of its own (:meth:`task_loss`) that ``predict --adapt finetune``
    #: trains on the inputs (:func:`mood_detector.inference.adapt.adapt_finetune`)
    supports_finetune: ClassVar[bool] = False

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

    @property
    def patch_size(self) -> tuple[int, int, int]:
        """The patches the harness's sliding window (:mod:`mood_detector.inference.sliding`) cuts the network
        volume into, slicing axis first: a slice detector's slice, (1, size, size); a volumetric detector's 3D
        patches for :meth:`score_patches` (default: the whole network volume)."""
        return (1, self.size, self.size) if self.dims == 2 else (self.size,) * 3

    def score_patches(self, x: torch.Tensor, origins: torch.Tensor) -> PatchScores:
        """Volumetric detectors: score patches ``x`` (N, 1, d, h, w) in [0, 1] of the network volume whose first
        voxels lie at ``origins`` (N, 3), on ``self.device``; no gradients needed."""
        raise TypeError(f"the {self.name} detector scores slices, not 3D patches")

    @classmethod
    @abstractmethod
    def fit(cls, files: Sequence[Path], cfg: TrainConfig, run_dir: Path) -> "Detector":
        """Train on normal volumes ``files``, checkpointing into ``run_dir``; return the trained detector."""

    @classmethod
    def check_config(cls, cfg: TrainConfig) -> None:
        """Raise for a ``cfg`` this detector cannot train with (a ``size`` its network cannot take, unknown or
        bad ``options``, ...), cheaply and before any data is read: :class:`OptionError` naming the option, or
        a ``ValueError`` from parsing ``options`` (reported as ``--opt``). Called by :func:`check_train_config`;
        the default parses the options."""
        cls.options(cfg)

    @classmethod
    def options(cls, cfg: TrainConfig) -> Any:
        """The detector's options (an :attr:`options_cls` instance) from ``cfg.options``: unknown keys and bad
        values are a ``ValueError``. Override to derive defaults from the rest of ``cfg``."""
        if cls.options_cls is None:
            if cfg.options:
                raise UnknownOptionsError(f"the {cls.name} detector has no options", sorted(cfg.options))
            return None
        return parse_options_as(cls.options_cls, cfg.options, cls.name)

    @classmethod
    def flag_default(cls, flag: Flag) -> Any:
        """The value the option of ``flag`` has when the flag is left out: the options dataclass's default."""
        f = next((f for f in dataclasses.fields(cls.options_cls or _NoOptions) if f.name == flag.option), None)
        if f is None:
            raise TypeError(f"{cls.name}: flag {flag.name} sets {flag.option!r}, which is not one of its options")
        if f.default is not dataclasses.MISSING:
            return f.default
        return f.default_factory() if f.default_factory is not dataclasses.MISSING else None

    @classmethod
    def folder_options(cls) -> frozenset[str]:
        """The options that name a folder or file on the machine that trains (flags with a ``path``)."""
        return frozenset(f.option for f in cls.flags if f.path)

    @classmethod
    def card_options(cls, card: ModelCard) -> dict[str, Any]:
        """The option values ``card`` records (a recipe trains with them again): by default the options
        dataclass's fields found in the card's ``extra``; a detector that stores an option elsewhere in its card
        adds it."""
        keys = {f.name for f in dataclasses.fields(cls.options_cls)} if cls.options_cls is not None else set()
        return {k: v for k, v in card.extra.items() if k in keys}

    @classmethod
    def learning_rate(cls, cfg: TrainConfig) -> float:
        """``--lr`` when given, else the detector's :attr:`default_lr`."""
        return cls.default_lr if cfg.lr is None else float(cfg.lr)

    @classmethod
    def card_for(cls, cfg: TrainConfig, n_files: int) -> ModelCard:
        """The model card of a training run with ``cfg`` on ``n_files`` volumes. The default: the kind's
        geometry, ``arch`` = the kind, the options, the batch size and learning rate in ``extra``; detectors
        override what differs (``dataclasses.replace`` of this card)."""
        kind = cfg.kind_cfg
        o = cls.options(cfg)
        extra = {**(dataclasses.asdict(o) if o is not None else {}), "batch_size": cfg.batch_size,
                 "lr": cls.learning_rate(cfg), "n_train_volumes": n_files,
                 "preprocess": SCHEMES[0]}  # training reads volumes through preprocess.prepare
        return ModelCard(detector=cls.name, arch=kind.name, width=cfg.width, kind=kind.name,
                         slice_axis=kind.slice_axis, size=cfg.net_size, training_data=cfg.training_data,
                         epochs=cfg.epochs, seed=cfg.seed, commit=git_commit(), extra=extra)

    @classmethod
    def from_checkpoint(cls, run_dir: Path) -> "Detector":
        """The model of a training run's last checkpoint (``export`` from a run folder)."""
        raise ValueError(f"{run_dir}: a {cls.name} training run; only fpi and nsa runs export from their "
                         f"checkpoint")

    def task_loss(self, a: torch.Tensor, b: torch.Tensor, step: int, gen: torch.Generator, seed: int,
                  device: torch.device | str) -> torch.Tensor | None:
        """The loss of the detector's own self-supervised task on one batch made from the slice stacks ``a`` and
        ``b`` ((n, size, size) float32 on the CPU, from the inputs at the network size), its random draws from
        ``gen`` fixed by ``seed`` and ``step``, computed on ``device`` with the networks (:meth:`modules`) as they
        are (the caller sets training mode and steps the optimiser); ``None`` (the default) when the detector has
        none. Detectors that have one set :attr:`supports_finetune`."""
        return None

    def recompute_bn(self, files: Sequence[Path], batches: int = 64, seed: int = 0) -> "Detector":
        """Recompute the BatchNorm statistics over training batches from ``files`` (``export --bn-data``)."""
        raise ValueError(f"--bn-data: the {self.name} detector has no BatchNorm recompute (fpi, nsa and squid "
                         f"models have one)")

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
        # what the harness scores, for whoever reads the card (predict logs it; older cards lack it)
        self.card.extra.update(patch_size=list(self.patch_size), network_size=self.size)
        tensors = self.state_tensors()
        if dtype is not None:
            tensors = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in tensors.items()}
        return save_weights(path, tensors, self.card)


#: the detector whose bundled weights ``predict``, the container and the demo use when none is named (measured
#: against FPI on the same benchmark: docs/nsa.md)
DEFAULT_DETECTOR = "nsa"

# name -> "module:Class"; imported lazily so an unused detector costs nothing at start-up.
REGISTRY: dict[str, str] = {
    "fpi": "mood_detector.models.fpi.detector:FPIDetector",
    "squid": "mood_detector.models.squid.detector:SQUIDDetector",
    "ddad": "mood_detector.models.ddad.detector:DDADDetector",
    "dpa": "mood_detector.models.dpa.detector:DPADetector",
    "ae": "mood_detector.models.ae.detector:AEDetector",
    "nsa": "mood_detector.models.nsa.detector:NSADetector",
    "unet3d": "mood_detector.models.unet3d.detector:UNet3DDetector",
    "unet25d": "mood_detector.models.unet25d.detector:UNet25DDetector",
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
    floats = {k: (v.float() if v.is_floating_point() else v) for k, v in tensors.items()}
    try:  # a card and tensors that do not make this detector (another network, edited files)
        det = detector_class(card.detector).build(card)
        det.load_state_tensors(floats)
    except WeightsError:
        raise
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        raise WeightsError(f"{path}: not loadable as {card.detector} weights "
                           f"({type(exc).__name__}: {' '.join(str(exc).split())[:300]})") from None
    return det.to(device).eval()


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; anything else is passed to torch."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def check_device(device: str, option: str = "--device") -> None:
    """Raise :class:`OptionError` unless ``device`` is ``auto``, ``cpu``, or a CUDA device that is there."""
    if device == "auto":
        return
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise OptionError(option, f"{device!r} is not a device; use auto, cpu, cuda or cuda:N")
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise OptionError(option, f"{device}: no CUDA device is visible here; use cpu or auto")
        if dev.index is not None and dev.index >= n:
            raise OptionError(option, f"{device}: there are {n} CUDA device(s), cuda:0 to cuda:{n - 1}")


def check_multiple(option: str, value: int, step: int, why: str) -> None:
    """Raise :class:`OptionError` unless ``value`` is a positive multiple of ``step`` (``why``: whose step)."""
    if value >= step and value % step == 0:
        return
    below = max(step, value // step * step)  # the multiples around value (the two smallest below step)
    raise OptionError(option, f"{value} is not a multiple of {step} ({why}); use e.g. {below} or {below + step}")


@dataclass
class _NoOptions:
    """The options of a detector without any."""


def registered_flags() -> dict[str, list[tuple[str, Flag]]]:
    """Each ``train`` flag of the registered detectors: flag name -> ``(detector, Flag)`` for each detector that
    declares it, in registry order. Raises ``TypeError`` where detectors declare one flag name differently, or
    two flags set one option."""
    out: dict[str, list[tuple[str, Flag]]] = {}
    options: dict[str, str] = {}
    for name in REGISTRY:
        cls = detector_class(name)
        for flag in cls.flags:
            cls.flag_default(flag)  # the option exists
            first = out.setdefault(flag.name, [(name, flag)])[0][1]
            if not first.same_value(flag):
                raise TypeError(f"{name} declares {flag.name} unlike {out[flag.name][0][0]} does")
            if options.setdefault(flag.option, flag.name) != flag.name:
                raise TypeError(f"{name}: {flag.name} sets {flag.option!r}, which {options[flag.option]} sets")
            if out[flag.name][-1][0] != name:
                out[flag.name].append((name, flag))
    return out


def flag_for_option(option: str) -> str | None:
    """The ``train`` flag that sets detector option ``option`` (``None``: only ``--opt`` does)."""
    return next((name for name, readers in registered_flags().items() if readers[0][1].option == option), None)


def check_train_config(cfg: TrainConfig) -> None:
    """Check every value of ``cfg`` before training starts: :meth:`TrainConfig.validate`, then the detector's
    :meth:`Detector.check_config`. Raises :class:`OptionError` naming the ``train`` option (``--size``,
    ``--opt``, ``--unlabeled``, ...) with what is allowed."""
    cfg.validate()
    cls = detector_class(cfg.detector)
    try:
        cls.check_config(cfg)
    except OptionError:
        raise
    except UnknownOptionsError as exc:
        flags = [flag for flag in map(flag_for_option, exc.keys) if flag is not None]
        if flags:
            raise OptionError(flags[0], f"the {cfg.detector} detector does not use it") from None
        raise OptionError("--opt", str(exc)) from None
    except ValueError as exc:
        raise OptionError("--opt", str(exc)) from None


def check_used(detector: str, given: Iterable[str]) -> None:
    """Raise :class:`OptionError` naming the first ``train`` flag in ``given`` (:class:`TrainConfig` field names
    set on the command line) that ``detector``'s training does not read."""
    cls = detector_class(detector)
    for name in sorted(set(given) - cls.train_fields):
        if name in {f.name for f in dataclasses.fields(TrainConfig)}:
            raise OptionError("--" + name.replace("_", "-"), f"the {detector} detector does not use it")


def options_help(detector: str) -> list[tuple[str, str]]:
    """``(KEY=DEFAULT, text)`` for each ``--opt`` of ``detector``: the fields of its options dataclass, the text
    from the ``Attributes:`` section of the dataclass's docstring (or of a parent's)."""
    cls = detector_class(detector).options_cls
    if cls is None:
        return []
    texts: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        texts.update(_attribute_texts(klass.__doc__ or ""))
    return [(f"{f.name}={f.default}", texts.get(f.name, "")) for f in dataclasses.fields(cls)]


def _attribute_texts(doc: str) -> dict[str, str]:
    """``name -> text`` of a Google-style ``Attributes:`` section (``a, b: text`` gives both the text)."""
    lines = doc.expandtabs().splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Attributes:")
    except StopIteration:
        return {}
    out: dict[str, str] = {}
    names: list[str] = []
    indent = None
    for line in lines[start + 1:]:
        if not line.strip():
            continue
        depth = len(line) - len(line.lstrip())
        indent = depth if indent is None else indent
        if depth < indent:
            break
        if depth == indent and ":" in line:
            head, _, text = line.strip().partition(":")
            names = [n.strip() for n in head.split(",")]
            for n in names:
                out[n] = text.strip()
        else:
            for n in names:
                out[n] += " " + line.strip()
    return out


def parse_options(pairs: Sequence[str]) -> dict[str, str]:
    """Parse ``KEY=VALUE`` strings into a dict (for detector-specific options)."""
    out: dict[str, str] = {}
    for p in pairs:
        k, sep, v = p.partition("=")
        if not sep or not k.strip():
            raise OptionError("--opt", f"{p!r} is not of the form KEY=VALUE")
        out[k.strip()] = v.strip()
    return out


class UnknownOptionsError(ValueError):
    """Detector options that the detector does not know (``keys``)."""

    def __init__(self, message: str, keys: Sequence[str]) -> None:
        super().__init__(message)
        self.keys = list(keys)


def parse_options_as(cls: type[T], options: dict[str, Any], detector: str) -> T:
    """Build the dataclass ``cls`` from ``options`` (``--opt`` strings or a card's JSON values), each field read
    with :func:`option`; unknown keys (typos would otherwise be silently ignored; :class:`UnknownOptionsError`)
    and unconvertible values are a ``ValueError`` naming the detector."""
    known = {f.name: f.default for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise UnknownOptionsError(f"unknown {detector} option(s) {', '.join(unknown)}; known: "
                                  f"{', '.join(sorted(known))}", unknown)
    try:
        return cls(**{k: option(options, k, d) for k, d in known.items()})
    except ValueError as exc:
        raise ValueError(f"bad {detector} option value: {exc}") from None


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def option(options: dict[str, Any], key: str, default: Any) -> Any:
    """Read a detector option with the type of ``default`` (bool accepts 1/0, true/false, yes/no, on/off);
    a value of another type is a ``ValueError`` naming the key."""
    if key not in options:
        return default
    raw = options[key]
    if isinstance(default, bool):
        word = str(raw).strip().lower()
        if word in _TRUE or word in _FALSE:
            return word in _TRUE
        raise ValueError(f"{key}={raw!r} is not a boolean (1/0, true/false, yes/no, on/off)")
    if default is None:
        return raw
    try:
        return type(default)(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{key}={raw!r} is not a{'n' if type(default) is int else ''} "
                         f"{type(default).__name__}") from None
