"""The baseline detector: a reconstruction autoencoder scored by its reconstruction error.

This is the FPI paper's CAE row (a convolutional autoencoder of the FPI network's depth) and the MOOD
organisers' example algorithm: trained on normal slices only to reconstruct them (MSE loss); anomalies are
expected to be reconstructed badly.

Scores: pixel = clip(error_scale * |x - reconstruction|, 0, 1); since input and reconstruction (sigmoid) are
both in [0, 1], the error already lies in [0, 1] and the default ``error_scale=1`` changes nothing (a larger
scale saturates large errors at 1, which only matters for DICE thresholds, not for the ranking metrics
below saturation). Slice score: the harness default, the mean pixel score.

Detector options (``--opt KEY=VALUE``): ``latent`` (bottleneck channels, default 16), ``error_scale``
(default 1.0).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from mood_detector import distributed
from mood_detector.detector import Detector, SliceScores, TrainConfig
from mood_detector.models.ae.network import ConvAutoencoder
from mood_detector.training.data import VolumeStore, epoch_slices
from mood_detector.training.engine import Engine, Phase, Step, rank_share
from mood_detector.training.loop import at_least_float32, autocast, seed_everything
from mood_detector.weights import ModelCard


@dataclass
class AEOptions:
    """AE options (``--opt KEY=VALUE``).

    Attributes:
        latent: bottleneck channels.
        error_scale: maps the absolute reconstruction error to the [0, 1] pixel score.
    """

    latent: int = 16
    error_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.latent < 1 or not self.error_scale > 0:
            raise ValueError(f"ae options: latent must be >= 1 and error_scale > 0, got {self.latent}, "
                             f"{self.error_scale}")


class AEDetector(Detector):
    """Convolutional autoencoder; pixel score = clipped absolute reconstruction error."""

    name = "ae"
    options_cls = AEOptions
    supports_distributed = True  # through the training engine (each rank its part of every batch)

    def __init__(self, card: ModelCard, net: ConvAutoencoder) -> None:
        super().__init__(card)
        self.net = net
        self.error_scale = float(card.extra.get("error_scale", 1.0))

    @classmethod
    def build(cls, card: ModelCard) -> "AEDetector":
        return cls(card, ConvAutoencoder(card.arch, card.width, int(card.extra.get("latent", 16))))

    def modules(self) -> dict[str, nn.Module]:
        return {"net": self.net}

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction (N, 1, H, W) in [0, 1] of slices ``x``."""
        return self.net(x).float()

    def score_slices(self, x: torch.Tensor) -> SliceScores:
        err = (x.float() - self.reconstruct(x)).abs()[:, 0]
        return SliceScores(pixel=(err * self.error_scale).clamp_(0.0, 1.0))

    # --- training ----------------------------------------------------------------------------------
    @classmethod
    def card_for(cls, cfg: TrainConfig, n_files: int) -> ModelCard:
        return replace(super().card_for(cfg, n_files), mode="mse")

    @classmethod
    def fit(cls, files: Sequence[Path], cfg: TrainConfig, run_dir: Path) -> "AEDetector":
        """Adam on the MSE between normal slices and their reconstructions; checkpoint every epoch. Under
        ``torchrun`` the engine trains it distributed (:mod:`mood_detector.training.engine`)."""
        seed_everything(cfg.seed)
        det = cls.build(cls.card_for(cfg, len(files)))
        device = distributed.device_for_rank(cfg.device)
        det.to(device)
        net = det.net
        dtype = next(net.parameters()).dtype  # torch's default dtype (float32; float64 in the distributed tests)
        opt = torch.optim.Adam(net.parameters(), lr=cls.learning_rate(cfg))
        engine = Engine(Path(run_dir), cfg, {"net": net, "opt": opt}, resume_enabled=cfg.resume, device=device)
        start = engine.resume()
        store = VolumeStore(files, det.size, det.slice_axis, cfg.cache_gb)
        amp = cfg.amp and device.type == "cuda"

        def batches(epoch: int) -> Iterable[torch.Tensor]:
            torch.manual_seed(cfg.seed * 1_000_003 + epoch)  # per-epoch stream: resuming reproduces it
            net.train()
            return epoch_slices(store, epoch, cfg.seed, cfg.batch_size, cfg.workers, cfg.max_batches_per_pair, device)

        def train_step(x: torch.Tensor, epoch: int, index: int) -> Step:
            x = x.to(device, dtype, non_blocking=True)
            opt.zero_grad(set_to_none=True)
            with autocast(device, amp):
                recon = net(x)
            loss = F.mse_loss(at_least_float32(recon), x)
            rank_share(loss).backward()
            opt.step()
            return Step({"loss": loss}, x.shape[0])

        engine.run([Phase("train", range(cfg.epochs), batches, train_step)], start)
        return det.eval()
