"""NSA detector: FPI's encoder-decoder, with skip connections, trained on a stronger synthetic-anomaly task.

The task (:mod:`mood_detector.tasks.nsa`) blends patches from another subject *and another location*, of
irregular shape and varied size, intensity and texture, in the gradient domain or as a feathered paste; the
label measures how much each pixel changed (NSA's logistic label). Everything else is FPI's: the training loop
(Adam, checkpoints, ``--resume``, the held-out probe diagnostic, the BatchNorm recompute, distributed
training), the network (``skips`` on by default here), inference (sigmoid output, crop fast path) and the
card. Only the examples differ, so a comparison with FPI measures the task alone.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np
import torch

from mood_detector.detector import Flag, TrainConfig
from mood_detector.errors import OptionError
from mood_detector.models.fpi.detector import FLAGS, MODES, FPIDetector, FPIOptions
from mood_detector.tasks.fpi import FPIBatch
from mood_detector.tasks.nsa import NSAConfig, nsa_pair
from mood_detector.training import diagnostic
from mood_detector.weights import ModelCard

#: the logistic label's (midpoint, slope) per kind: brain tissue contrasts in [0, 1] are about 0.1-0.3, the
#: abdomen phantom's soft tissues lie within 0.45-0.58, so its midpoint is half the brain's
LABEL_DEFAULTS = {"brain": (0.04, 100.0), "abdom": (0.02, 200.0)}


@dataclass(frozen=True)
class NSAOptions(FPIOptions):
    """NSA options (``--opt KEY=VALUE``): FPI's training options (``equal_tol`` is not used) plus the task's
    parameters (:class:`mood_detector.tasks.nsa.NSAConfig`).

    Attributes:
        mode: always ``continuous``: the output is one channel, the amount of change (``train --mode discrete``
            is refused).
        max_patches: patches per example, uniform in 1..max_patches.
        half_width_min, half_width_max: range of a box's half height / half width (fraction of the slice size).
        scale_min, scale_max: range of the source box size relative to the destination box.
        p_flip: probability that the content is mirrored (left-right).
        p_intensity: probability of an intensity change of the content (gain and offset).
        gain_max, offset_max: ranges of that change (gain log-uniform in 1/gain_max..gain_max).
        p_texture: probability of added smoothed Gaussian texture.
        texture_max: upper end of the texture's standard deviation.
        p_poisson: probability of gradient-domain (Poisson) blending; otherwise a feathered paste.
        shape_noise: how irregular the shapes are (0 = ellipses).
        label_x0, label_k: the logistic label's midpoint and slope; < 0 = the kind's default
            (:data:`LABEL_DEFAULTS`).
        label_sigma: smoothing (pixels) of the absolute change before the logistic.
    """

    skips: bool = True
    slice_score: str = "top:0.01"
    mode: str = "continuous"
    # the task's parameters, flat for --opt; their defaults are NSAConfig's (the ranges split into _min/_max)
    max_patches: int = NSAConfig.max_patches
    half_width_min: float = NSAConfig.half_width[0]
    half_width_max: float = NSAConfig.half_width[1]
    scale_min: float = NSAConfig.scale[0]
    scale_max: float = NSAConfig.scale[1]
    p_flip: float = NSAConfig.p_flip
    p_intensity: float = NSAConfig.p_intensity
    gain_max: float = NSAConfig.gain_max
    offset_max: float = NSAConfig.offset_max
    p_texture: float = NSAConfig.p_texture
    texture_max: float = NSAConfig.texture_max
    p_poisson: float = NSAConfig.p_poisson
    shape_noise: float = NSAConfig.shape_noise
    label_x0: float = -1.0
    label_k: float = -1.0
    label_sigma: float = NSAConfig.label_sigma

    def __post_init__(self) -> None:
        super().__post_init__()
        self.task("brain")  # the task's own checks

    def task(self, kind: str) -> NSAConfig:
        """The task configuration for ``kind`` (``brain`` or ``abdom``)."""
        x0, k = LABEL_DEFAULTS.get(kind, LABEL_DEFAULTS["brain"])
        ranges = {"half_width", "scale", "label_x0", "label_k"}
        same = {f.name: getattr(self, f.name) for f in fields(NSAConfig) if f.name not in ranges}
        return NSAConfig(**same, half_width=(self.half_width_min, self.half_width_max),
                         scale=(self.scale_min, self.scale_max),
                         label_x0=x0 if self.label_x0 < 0 else self.label_x0,
                         label_k=k if self.label_k < 0 else self.label_k)


def _seeded(seed: int, epoch: int, step: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, step, stream])


def _to_batch(images: np.ndarray, labels: np.ndarray, device: torch.device | str) -> FPIBatch:
    """An NSA batch in FPI's batch type (no boxes or factors: the patches are not boxes of one factor)."""
    return FPIBatch(images=torch.from_numpy(images)[:, None].to(device), labels=torch.from_numpy(labels).to(device),
                    boxes=torch.empty(0, 4, dtype=torch.long), factors=torch.empty(0))


class NSADetector(FPIDetector):
    """Pixel score = sigmoid output: the predicted (logistic) amount of change at each pixel."""

    name = "nsa"
    options_cls = NSAOptions
    #: FPI's flags; the output is always one continuous channel
    flags = tuple(Flag("--mode", "mode", "Always continuous: the output is one channel (discrete is refused).",
                       choices=MODES) if f.option == "mode" else f for f in FLAGS)

    @classmethod
    def check_config(cls, cfg: TrainConfig) -> None:
        """As FPI's; the output is always one continuous channel, so the only ``mode`` is ``continuous``."""
        mode = cfg.options.get("mode", NSAOptions.mode)
        if mode != "continuous":
            raise OptionError("--mode", f"{mode!r}: the nsa detector's output is always one continuous channel; "
                                        f"leave --mode out")
        super().check_config(cfg)

    @classmethod
    def card_for(cls, cfg: TrainConfig, n_files: int) -> ModelCard:
        """FPI's card, in ``continuous`` mode whatever the options say (:meth:`check_config` refuses another)."""
        return super().card_for(replace(cfg, options={**cfg.options, "mode": "continuous"}), n_files)

    @staticmethod
    def task_config(card: ModelCard) -> NSAConfig:  # type: ignore[override]
        fields = NSAOptions.__dataclass_fields__
        opts = NSAOptions(**{k: v for k, v in card.extra.items() if k in fields})
        return opts.task(card.kind)

    @staticmethod
    def _probe_set(stacks: list[np.ndarray], task: NSAConfig, seed: int) -> FPIBatch:  # type: ignore[override]
        """NSA examples from consecutive pairs of the probe volumes, non-empty slices, fixed by ``seed``."""
        rng = np.random.default_rng(seed)
        a_all, b_all = diagnostic.probe_slices(stacks, rng)
        nb = nsa_pair(a_all, b_all, task, rng)
        return _to_batch(nb.images, nb.labels, "cpu")

    @staticmethod
    def _step_batch(chunks: list[tuple[torch.Tensor, torch.Tensor]], streams: list[int], task: NSAConfig,
                    gen: torch.Generator, seed: int, epoch: int, step: int, device: torch.device) -> FPIBatch:
        """NSA examples of this rank's pair-batches (made on the CPU), each seeded by (seed, epoch, step,
        stream) like FPI's."""
        images, labels = [], []
        for (a, b), c in zip(chunks, streams):
            nb = nsa_pair(a.numpy(), b.numpy(), task, _seeded(seed, epoch, step, c))
            images.append(nb.images)
            labels.append(nb.labels)
        return _to_batch(np.concatenate(images), np.concatenate(labels), device)
