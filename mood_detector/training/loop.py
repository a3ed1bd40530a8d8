"""Pieces every training loop uses: seeding, resumable checkpoints, the loss log, autocast."""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mood_detector.io.atomic import atomic_path

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
LOSS_LOG = "loss_log.csv"


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; returns a CPU generator for the task's own sampling."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when ``enabled``; a no-op elsewhere (CPU training stays fp32, repeatable)."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def at_least_float32(t: torch.Tensor) -> torch.Tensor:
    """``t`` in float32 when it is in a lower precision (bf16 autocast); float32 and float64 kept."""
    return t if t.dtype == torch.float64 else t.float()


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> Path:
    """Atomically write ``state`` (tensors, dicts, numbers only) to ``run_dir/checkpoint.pt``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / CHECKPOINT
    with atomic_path(path, mode=None) as tmp:  # mode None: the checkpoint stays private (0600)
        torch.save(state, tmp)
    return path


def load_checkpoint(run_dir: Path) -> dict[str, Any] | None:
    """The last checkpoint in ``run_dir`` (loaded with ``weights_only=True``: no code can run), or None."""
    path = run_dir / CHECKPOINT
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def save_best(run_dir: Path, state: dict[str, Any]) -> Path:
    """Atomically write ``state`` (the best weights so far and what made them best) to ``run_dir/best.pt``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / BEST
    with atomic_path(path, mode=None) as tmp:
        torch.save(state, tmp)
    return path


def load_best(run_dir: Path) -> dict[str, Any] | None:
    """``run_dir/best.pt`` (loaded with ``weights_only=True``), or None."""
    path = run_dir / BEST
    return torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None


def resume_checkpoint(run_dir: Path, resume: bool) -> dict[str, Any] | None:
    """:func:`load_checkpoint` when ``resume`` is set, logging whether training resumes or starts afresh."""
    ckpt = load_checkpoint(run_dir) if resume else None
    if ckpt is not None:
        log.info("resuming %s at epoch %d", run_dir, int(ckpt["epoch"]))
    elif resume:
        log.info("no checkpoint in %s: starting from scratch", run_dir)
    return ckpt


class LossLog:
    """Appends one CSV row per epoch (and mirrors it to the log as JSON)."""

    FIELDS = ("phase", "epoch", "batches", "loss", "lr", "seconds", "slices_per_s")

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOSS_LOG
        run_dir.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            with self.path.open("w", newline="") as fh:
                csv.writer(fh).writerow(self.FIELDS)

    def write(self, **row: Any) -> None:
        with self.path.open("a", newline="") as fh:
            csv.writer(fh).writerow([row.get(k, "") for k in self.FIELDS])
        log.info("epoch %s", json.dumps(row, sort_keys=True))

    def rows(self) -> list[dict[str, str]]:
        with self.path.open(newline="") as fh:
            return list(csv.DictReader(fh))


class Timer:
    """Wall-clock seconds since construction."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.t0
