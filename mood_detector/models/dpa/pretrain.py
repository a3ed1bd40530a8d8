"""Self-supervised training of the ``fpi-vgg19`` perceptual features on the training slices.

The paper's VGG19 is ImageNet-trained; those weights cannot be downloaded here. The authors' own MOOD entry
did not use ImageNet features either but a VGG19 trained self-supervised (SimCLR) on the MOOD training slices.
This package trains the VGG19 trunk (up to the deepest feature layer the loss uses) on its own self-supervised
task instead: Foreign Patch Interpolation (discrete mode, 5 classes), through a 1x1-conv head whose logits are
upsampled bilinearly to the slice size. The head is thrown away afterwards; the trunk is frozen.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from mood_detector.models.dpa.features import VGG19Features
from mood_detector.tasks.fpi import CLASS_VALUES, FPIConfig, fpi_pair, labels_to_classes
from mood_detector.training.data import VolumeStore, epoch_pairs, pair_loader
from mood_detector.training.loop import LossLog, Timer

log = logging.getLogger(__name__)


def pretrain_vgg_fpi(ext: VGG19Features, layer: str, store: VolumeStore, task: FPIConfig, epochs: int,
                     batch_size: int, lr: float, seed: int, device: torch.device, max_batches_per_pair: int = 0,
                     workers: int = 0, losses: LossLog | None = None) -> list[float]:
    """Train ``ext`` (in place) on the FPI task for ``epochs``; returns the mean loss of each epoch."""
    if len(store) < 2:
        raise ValueError("fpi-vgg19 features need at least two training volumes (FPI pairs slices of two)")
    ext.to(device)
    with torch.no_grad():
        channels = ext(torch.zeros(1, 1, store.size, store.size, device=device), layer).shape[1]
    head = nn.Conv2d(channels, len(CLASS_VALUES), 1).to(device)
    ext.set_trainable(True)
    opt = torch.optim.Adam(list(ext.parameters()) + list(head.parameters()), lr=lr)
    gen = torch.Generator().manual_seed(seed * 31 + 7)
    history: list[float] = []
    try:
        for epoch in range(epochs):
            pairs = epoch_pairs(len(store), np.random.default_rng([seed, 10_000 + epoch]))
            loader = pair_loader(store, pairs, batch_size, seed=seed * 7919 + 10_000 + epoch, workers=workers,
                                 max_batches_per_pair=max_batches_per_pair, pin_memory=device.type == "cuda")
            timer, total, n, n_slices = Timer(), 0.0, 0, 0
            bar = tqdm(loader, desc=f"features {epoch + 1}/{epochs}", unit="batch", leave=False)
            for a, b in bar:
                batch = fpi_pair(a.to(device), b.to(device), task, gen)
                logits = F.interpolate(head(ext(batch.images, layer)), size=batch.images.shape[-2:],
                                       mode="bilinear", align_corners=False)
                loss = F.cross_entropy(logits.float(), labels_to_classes(batch.labels))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach())
                n += 1
                n_slices += batch.images.shape[0]
                bar.set_postfix(loss=f"{total / n:.4f}")
            if n == 0:
                raise ValueError("no FPI batches for feature pre-training: are all training volumes empty?")
            history.append(total / n)
            secs = timer()
            if losses is not None:
                losses.write(phase="features-fpi", epoch=epoch + 1, batches=n, loss=round(total / n, 6), lr=lr,
                             seconds=round(secs, 2), slices_per_s=round(n_slices / max(secs, 1e-9), 2))
    finally:
        ext.set_trainable(False)
        ext.eval()
    return history
