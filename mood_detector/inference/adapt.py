"""Test-time adaptation to the scans at hand, without labels.

``bn``: BatchNorm statistics recomputed on the input folder's own slices. ``finetune``: a short self-supervised
fine-tune of the detector's synthetic-anomaly task on them (:func:`adapt_finetune`). ``auto`` (decided by the
predictor): the fine-tune where it fits a share of the folder's scoring time, as
:func:`finetune_seconds` estimates it on the machine at hand.

A network trained on one set of scanners normalises its features with that data's BatchNorm means and
variances; on another site's scans those statistics are off, and the whole map drifts. Recomputing them on
the inputs themselves (no labels; AdaBN, Li et al. 2018) is a forward pass over a sample of their slices (evenly
spread, so the same inputs give the same statistics). The detector's weights are not changed, only the running
statistics.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, replace
from typing import Callable, Iterable

import numpy as np
import torch
from torch import nn

from mood_detector.detector import Detector
from mood_detector.preprocess import to_slices

log = logging.getLogger(__name__)

#: a volume's slices used for the statistics: at most this many non-empty ones, evenly spread
SLICES_PER_VOLUME = 24


def pick_slices(net: np.ndarray, axes: Iterable[int], per_volume: int = SLICES_PER_VOLUME) -> np.ndarray:
    """Up to ``per_volume`` non-empty slices of ``net`` (a volume at the network size), spread evenly over the
    non-empty ones and over ``axes``: (N, H, W) float32."""
    axes = list(axes)
    out = []
    for axis in axes:
        s = to_slices(net, axis)
        full = np.flatnonzero(s.reshape(s.shape[0], -1).max(axis=1) > 0)
        k = min(len(full), max(1, per_volume // len(axes)))
        if k:
            out.append(np.asarray(s[full[np.linspace(0, len(full) - 1, k).round().astype(int)]], dtype=np.float32))
    return np.concatenate(out) if out else np.zeros((0, *net.shape[1:]), dtype=np.float32)


def batchnorm_layers(det: Detector) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for module in det.modules().values() for m in module.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def adapt_batchnorm(det: Detector, volumes: Iterable[np.ndarray], axes: Iterable[int], batch_size: int = 16,
                    device: torch.device | str = "cpu") -> int:
    """Recompute ``det``'s BatchNorm statistics over slices of ``volumes`` (each already at the network size,
    as the predictor feeds it): a cumulative average over all of them. Returns the number of slices used; with
    none (or no BatchNorm layer) the detector is left as it was."""
    layers = batchnorm_layers(det)
    if not layers:
        log.warning("--adapt bn: the %s detector has no BatchNorm layers; nothing to adapt", det.name)
        return 0
    slices = [pick_slices(v, axes) for v in volumes]
    x = np.concatenate(slices) if slices else np.zeros((0,))
    if len(x) == 0:
        log.warning("--adapt bn: no non-empty slices in the inputs; BatchNorm statistics unchanged")
        return 0
    saved = [(m.momentum, m.running_mean.clone(), m.running_var.clone()) for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over every batch
        m.train()
    try:
        for i in range(0, len(x), batch_size):
            det.score_slices(torch.from_numpy(x[i:i + batch_size])[:, None].to(device))
    except BaseException:  # leave the model as it was
        for m, (_, mean, var) in zip(layers, saved):
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
        raise
    finally:
        for m, (momentum, _, _) in zip(layers, saved):
            m.momentum = momentum
            m.eval()
    log.info("--adapt bn: BatchNorm statistics of %d layers recomputed over %d slices", len(layers), len(x))
    return len(x)


@dataclass(frozen=True)
class FinetuneConfig:
    """A short self-supervised fine-tune on the inputs (``predict --adapt finetune``).

    Attributes:
        steps: optimiser steps (each one batch of the detector's own synthetic task on two input volumes).
        batch_size: slices per batch (half from each volume; the task uses both directions).
        lr: Adam learning rate (small: the model is trained, only its notion of normal tissue moves).
        seed: fixes the slices and the task's draws.
    """

    steps: int = 600
    batch_size: int = 16
    lr: float = 1e-4
    seed: int = 0


def adapt_finetune(det: Detector, volumes: list[np.ndarray], axes: Iterable[int],
                   cfg: FinetuneConfig = FinetuneConfig(), device: torch.device | str = "cpu",
                   quiet: bool = False, step_done: Callable[[int], None] | None = None) -> int:
    """Train ``det`` for ``cfg.steps`` steps of its own synthetic-anomaly task on slices of ``volumes`` (at the
    network size): the inputs' tissue becomes "normal" to it, planted patches stay anomalous. For the FPI
    family (``fpi``, ``nsa``), whose task makes examples from two slice stacks; returns the steps run (0 for
    other detectors, left as they were). The inputs may hold anomalies: each is a small part of the slices
    the task draws from, and the task's labels mark only its own patches."""
    make = getattr(det, "_step_batch", None)
    if make is None or not hasattr(det, "loss"):
        log.warning("--adapt finetune: the %s detector has no synthetic task; nothing to adapt", det.name)
        return 0
    stacks = [s for s in (pick_slices(v, axes, per_volume=4 * cfg.batch_size) for v in volumes) if len(s)]
    if not stacks:
        log.warning("--adapt finetune: no non-empty slices in the inputs; model unchanged")
        return 0
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    task = det.task_config(det.card)
    net = det.net
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    half = max(1, cfg.batch_size // 2)
    net.train()
    try:
        for step in range(cfg.steps):
            i, j = rng.integers(len(stacks), size=2)
            a = stacks[i][rng.integers(len(stacks[i]), size=half)]
            b = stacks[j][rng.integers(len(stacks[j]), size=half)]
            batch = make([(torch.from_numpy(a), torch.from_numpy(b))], [0], task, gen, cfg.seed, 0, step, device)
            opt.zero_grad(set_to_none=True)
            loss = det.loss(net(batch.images.to(device)), batch.labels.to(device))
            loss.backward()
            opt.step()
            if step_done is not None:
                step_done(step)
    finally:
        net.eval()
    log.log(logging.DEBUG if quiet else logging.INFO, "--adapt finetune: %d steps of the %s task on %d slices "
            "(last loss %.4f)", cfg.steps, det.name, sum(len(s) for s in stacks), float(loss.detach()))
    return cfg.steps


#: fine-tune steps timed (on a copy of the detector) to estimate a whole fine-tune's time
PROBE_STEPS = 5


def finetune_seconds(det: Detector, volumes: list[np.ndarray], axes: Iterable[int],
                     cfg: FinetuneConfig = FinetuneConfig(), device: torch.device | str = "cpu") -> float:
    """Seconds that :func:`adapt_finetune` with ``cfg`` would take here: the time of its first step (slice
    stacks, first allocations) plus the mean of the :data:`PROBE_STEPS` steps after it times the rest, all run
    on a copy of ``det`` (``det`` itself is not changed). ``inf`` for a detector without a synthetic task."""
    probe = min(PROBE_STEPS + 1, cfg.steps)
    cuda = torch.device(device).type == "cuda"
    stamps = [time.perf_counter()]

    def stamp(_: int) -> None:
        if cuda:  # CUDA runs the step asynchronously: wait for it
            torch.cuda.synchronize(device)
        stamps.append(time.perf_counter())

    if adapt_finetune(copy.deepcopy(det), volumes, axes, replace(cfg, steps=probe), device, quiet=True,
                      step_done=stamp) == 0:
        return float("inf")
    first = stamps[1] - stamps[0]
    if probe == 1:
        return first * cfg.steps
    return first + (stamps[-1] - stamps[1]) / (probe - 1) * (cfg.steps - 1)
