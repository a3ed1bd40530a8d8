"""FPI detector: the wide residual encoder-decoder trained on the foreign-patch-interpolation task.

Training follows the paper (Sec. 2): Adam, lr 1e-3, 50 epochs; optional SWA phase of plain SGD with a
per-epoch cyclic learning rate falling from 1e-3 to 1e-4, the weights averaged at each epoch's minimum
(``torch.optim.swa_utils.AveragedModel``), BatchNorm statistics recomputed afterwards (``update_bn``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.optim.swa_utils import AveragedModel, update_bn
from tqdm import tqdm

from mood_detector.detector import Detector, SliceScores, TrainConfig, resolve_device
from mood_detector.models.fpi.network import WideResEncoderDecoder
from mood_detector.tasks.fpi import CLASS_VALUES, FPIConfig, fpi_pair, labels_to_classes, logits_to_score
from mood_detector.training.data import VolumeStore, epoch_pairs, pair_loader
from mood_detector.training.loop import LossLog, Timer, autocast, load_checkpoint, save_checkpoint, seed_everything
from mood_detector.weights import ModelCard, git_commit

log = logging.getLogger(__name__)

SWA_LR = (1e-4, 1e-3)  # (min, max) of the cyclic learning rate in the SWA phase (paper Sec. 2)
BN_BATCHES = 64        # FPI batches used to recompute BatchNorm statistics after SWA


class FPIDetector(Detector):
    """Foreign Patch Interpolation; pixel score = sigmoid output (continuous) or expected foreign fraction
    sum_c p_c a_c (discrete, 5 classes)."""

    name = "fpi"

    def __init__(self, card: ModelCard, net: WideResEncoderDecoder) -> None:
        super().__init__(card)
        self.net = net

    @classmethod
    def build(cls, card: ModelCard) -> "FPIDetector":
        return cls(card, WideResEncoderDecoder(card.arch, card.classes, card.width))

    def modules(self) -> dict[str, nn.Module]:
        return {"net": self.net}

    def to(self, device: torch.device | str) -> "FPIDetector":
        super().to(device)
        if self.device.type == "cuda":
            self.net.to(memory_format=torch.channels_last)
        return self

    def score_slices(self, x: torch.Tensor) -> SliceScores:
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        return SliceScores(pixel=logits_to_score(self.net(x)))

    # --- training ----------------------------------------------------------------------------------
    @staticmethod
    def task_config(card: ModelCard) -> FPIConfig:
        from mood_detector.kinds import get_kind

        kind = get_kind(card.kind)
        return FPIConfig(mode=card.mode, core=kind.core, equal_tol=kind.equal_tol)

    @staticmethod
    def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """BCE against the soft foreign fraction (C=1, Eq. 6) or CE over the 5 classes (Eq. 7)."""
        if logits.shape[1] == 1:
            return F.binary_cross_entropy_with_logits(logits[:, 0].float(), labels)
        return F.cross_entropy(logits.float(), labels_to_classes(labels))

    @classmethod
    def card_for(cls, cfg: TrainConfig, n_files: int) -> ModelCard:
        kind = cfg.kind_cfg
        if cfg.mode not in ("continuous", "discrete"):
            raise ValueError(f"FPI mode must be 'continuous' or 'discrete', got {cfg.mode!r}")
        return ModelCard(
            detector=cls.name, arch=kind.name, width=cfg.width, kind=kind.name, slice_axis=kind.slice_axis,
            size=cfg.net_size, mode=cfg.mode, classes=len(CLASS_VALUES) if cfg.mode == "discrete" else 1,
            training_data=cfg.training_data, epochs=cfg.epochs, seed=cfg.seed, commit=git_commit(),
            extra={"swa_epochs": cfg.swa_epochs, "batch_size": cfg.batch_size, "lr": cfg.lr,
                   "n_train_volumes": n_files})

    @classmethod
    def fit(cls, files: Sequence[Path], cfg: TrainConfig, run_dir: Path) -> "FPIDetector":
        run_dir = Path(run_dir)
        gen = seed_everything(cfg.seed)
        card = cls.card_for(cfg, len(files))
        det = cls.build(card)
        device = resolve_device(cfg.device)
        det.to(device)
        net = det.net
        task = cls.task_config(card)
        opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
        swa_opt = torch.optim.SGD(net.parameters(), lr=SWA_LR[1])
        swa_model: AveragedModel | None = None
        start, batches_per_epoch = 0, 0
        ckpt = load_checkpoint(run_dir) if cfg.resume else None
        if ckpt is not None:
            net.load_state_dict(ckpt["net"])
            opt.load_state_dict(ckpt["opt"])
            swa_opt.load_state_dict(ckpt["swa_opt"])
            if ckpt.get("swa") is not None:
                swa_model = AveragedModel(net)
                swa_model.load_state_dict(ckpt["swa"])
            start, batches_per_epoch = int(ckpt["epoch"]), int(ckpt["batches_per_epoch"])
            log.info("resuming %s at epoch %d", run_dir, start)
        elif cfg.resume:
            log.info("no checkpoint in %s: starting from scratch", run_dir)
        store = VolumeStore(files, card.size, card.slice_axis, cfg.cache_gb)
        losses = LossLog(run_dir)
        amp = cfg.amp and device.type == "cuda"
        total = cfg.epochs + cfg.swa_epochs
        for epoch in range(start, total):
            swa_phase = epoch >= cfg.epochs
            net.train()
            loader = cls._loader(store, cfg, epoch, device)
            gen.manual_seed(cfg.seed * 1_000_003 + epoch)  # per-epoch stream: resuming reproduces it
            timer, total_loss, n_batches, n_slices = Timer(), 0.0, 0, 0
            lr = cfg.lr
            bar = tqdm(loader, desc=f"{'swa' if swa_phase else 'train'} {epoch + 1}/{total}", unit="batch",
                       leave=False)
            for step, (a, b) in enumerate(bar):
                batch = fpi_pair(a.to(device, non_blocking=True), b.to(device, non_blocking=True), task, gen)
                x = batch.images
                if device.type == "cuda":
                    x = x.contiguous(memory_format=torch.channels_last)
                if swa_phase:
                    frac = min(1.0, step / max(1, batches_per_epoch - 1))
                    lr = SWA_LR[1] + (SWA_LR[0] - SWA_LR[1]) * frac
                    for group in swa_opt.param_groups:
                        group["lr"] = lr
                optim = swa_opt if swa_phase else opt
                optim.zero_grad(set_to_none=True)
                with autocast(device, amp):
                    logits = net(x)
                loss = cls.loss(logits, batch.labels)
                loss.backward()
                optim.step()
                total_loss += float(loss.detach())
                n_batches += 1
                n_slices += x.shape[0]
                bar.set_postfix(loss=f"{total_loss / n_batches:.4f}")
            if n_batches == 0:
                raise ValueError("no training batches: are all training volumes empty?")
            if not swa_phase:
                batches_per_epoch = n_batches
            else:
                if swa_model is None:
                    swa_model = AveragedModel(net)
                swa_model.update_parameters(net)  # the weights at this epoch's learning-rate minimum
            secs = timer()
            losses.write(phase="swa" if swa_phase else "train", epoch=epoch + 1, batches=n_batches,
                         loss=round(total_loss / n_batches, 6), lr=lr, seconds=round(secs, 2),
                         slices_per_s=round(n_slices / max(secs, 1e-9), 2))
            save_checkpoint(run_dir, {
                "epoch": epoch + 1, "batches_per_epoch": batches_per_epoch, "net": net.state_dict(),
                "opt": opt.state_dict(), "swa_opt": swa_opt.state_dict(),
                "swa": swa_model.state_dict() if swa_model is not None else None,
                "config": json.dumps(asdict(cfg), sort_keys=True)})
        if swa_model is not None:
            log.info("SWA: averaged %d epoch minima; recomputing BatchNorm statistics", int(swa_model.n_averaged))
            bn_loader = cls._loader(store, cfg, total, device)
            gen.manual_seed(cfg.seed * 1_000_003 + total)
            update_bn(cls._fpi_inputs(bn_loader, task, gen, device), swa_model, device=device)
            net.load_state_dict(swa_model.module.state_dict())
        return det.eval()

    @staticmethod
    def _loader(store: VolumeStore, cfg: TrainConfig, epoch: int, device: torch.device):
        pairs = epoch_pairs(len(store), np.random.default_rng([cfg.seed, epoch]))
        return pair_loader(store, pairs, cfg.batch_size, seed=cfg.seed * 7919 + epoch, workers=cfg.workers,
                           max_batches_per_pair=cfg.max_batches_per_pair, pin_memory=device.type == "cuda")

    @staticmethod
    def _fpi_inputs(loader, task: FPIConfig, gen: torch.Generator, device: torch.device) -> Iterator[torch.Tensor]:
        for i, (a, b) in enumerate(loader):
            if i >= BN_BATCHES:
                break
            yield fpi_pair(a.to(device), b.to(device), task, gen).images
