"""Self-supervised training of the ``fpi-vgg19`` perceptual features on the training slices.

The paper's VGG19 is ImageNet-trained; those weights cannot be downloaded here. The authors' own MOOD entry
did not use ImageNet features either but a VGG19 trained self-supervised (SimCLR) on the MOOD training slices.
This package trains the VGG19 trunk (up to the deepest feature layer the loss uses) on its own self-supervised
task instead: Foreign Patch Interpolation (discrete mode, 5 classes), through a 1x1-conv head whose logits are
upsampled bilinearly to the slice size. The head is thrown away afterwards; the trunk is frozen.
"""

from __future__ import annotations

import logging
from typing import Iterable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from mood_detector.models.dpa.features import VGG19Features
from mood_detector.tasks.fpi import CLASS_VALUES, FPIConfig, fpi_pair, labels_to_classes
from mood_detector.training.data import VolumeStore, epoch_pairs, pair_loader
from mood_detector.training.engine import GeneratorState, Phase, Stateful, Step, rank_share
from mood_detector.training.loop import at_least_float32

log = logging.getLogger(__name__)


def feature_phase(ext: VGG19Features, layer: str, store: VolumeStore, task: FPIConfig, epochs: int,
                  batch_size: int, lr: float, seed: int, device: torch.device, max_batches_per_pair: int = 0,
                  workers: int = 0) -> tuple[Phase, dict[str, Stateful]]:
    """The engine phase that trains ``ext`` (in place) on the FPI task for ``epochs``, and the objects its
    checkpoints hold (the throw-away head, its optimiser and the patch generator). ``ext`` is frozen again after
    the last epoch."""
    if len(store) < 2:
        raise ValueError("fpi-vgg19 features need at least two training volumes (FPI pairs slices of two)")
    ext.to(device)
    with torch.no_grad():
        channels = ext(torch.zeros(1, 1, store.size, store.size, device=device), layer).shape[1]
    head = nn.Conv2d(channels, len(CLASS_VALUES), 1).to(device)
    ext.set_trainable(True)
    opt = torch.optim.Adam(list(ext.parameters()) + list(head.parameters()), lr=lr)
    gen = torch.Generator().manual_seed(seed * 31 + 7)

    def batches(epoch: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        """The epoch's FPI examples ``(images, labels)``, made from whole batches (under torchrun the engine
        then gives each rank its part)."""
        pairs = epoch_pairs(len(store), np.random.default_rng([seed, 10_000 + epoch]))
        loader = pair_loader(store, pairs, batch_size, seed=seed * 7919 + 10_000 + epoch, workers=workers,
                             max_batches_per_pair=max_batches_per_pair, pin_memory=device.type == "cuda")
        dtype = next(head.parameters()).dtype  # torch's default dtype (float32; float64 in the fixed-seed test)
        return ((b.images.to(dtype), b.labels) for b in (fpi_pair(a.to(device), s.to(device), task, gen)
                                                         for a, s in loader))

    def train_step(batch: tuple[torch.Tensor, torch.Tensor], epoch: int, index: int) -> Step:
        images, labels = batch
        logits = F.interpolate(head(ext(images, layer)), size=images.shape[-2:], mode="bilinear",
                               align_corners=False)
        loss = F.cross_entropy(at_least_float32(logits), labels_to_classes(labels))
        opt.zero_grad(set_to_none=True)
        rank_share(loss).backward()
        opt.step()
        return Step({"loss": loss}, images.shape[0])

    def end(epoch: int, steps: int) -> None:
        if epoch == epochs - 1:
            ext.set_trainable(False)
            ext.eval()

    phase = Phase("features", range(epochs), batches, train_step, lr=lambda: lr, end=end,
                  log_name=lambda epoch: "features-fpi",
                  empty="no FPI batches for feature pre-training: are all training volumes empty?")
    return phase, {"feature_head": head, "feature_opt": opt, "feature_gen": GeneratorState(gen)}

