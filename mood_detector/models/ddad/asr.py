"""ASR-Net (paper Sec. 3.5, Eqs. 8-13): a small CNN that refines raw discrepancy maps into anomaly maps,
trained with focal loss on FPI-style synthetic patches (Eqs. 9-10)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from mood_detector.tasks.fpi import FPIConfig, fpi_pair, sample_patches

#: Patch sampling of the ASR self-supervised task (paper Eq. 10 and the authors' generate_anomaly): centre in
#: the central 80% of the slice, half-width in [5%, 20%) of the slice (patch side 10%-40%).
ASR_PATCHES = FPIConfig(mode="continuous", core=0.8, half_width=(0.05, 0.20), equal_tol=0.0)


class ASRNet(nn.Module):
    """conv3x3(C_in -> 128) + BN + ReLU, conv3x3(128 -> 128) + BN + ReLU, conv3x3(128 -> 2) (authors' code).

    ``in_channels`` is 2 for R_dual (input ``[inter, intra]``) and 1 for R_intra (input ``[intra]``).
    """

    def __init__(self, in_channels: int = 2, mid: int = 128, out_channels: int = 2) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.model = nn.Sequential(
            nn.Conv2d(in_channels, mid, 3, 1, 1), nn.BatchNorm2d(mid), nn.ReLU(),
            nn.Conv2d(mid, mid, 3, 1, 1), nn.BatchNorm2d(mid), nn.ReLU(),
            nn.Conv2d(mid, out_channels, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, 2, H, W) of discrepancy maps (N, C_in, H, W)."""
        return self.model(x)

    @staticmethod
    def score(logits: torch.Tensor) -> torch.Tensor:
        """Pixel anomaly score (N, H, W) in [0, 1]: the softmax probability of class 1."""
        return torch.softmax(logits.float(), dim=1)[:, 1]


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Mean over pixels of ``-(1 - p_t)^gamma log p_t`` (paper Eq. 12), ``p_t`` the softmax probability of the
    target class. ``logits`` (N, C, H, W), ``target`` (N, H, W) integer class indices.

    Deviation: the authors' copy of a focal-loss toolbox adds label smoothing 1e-5 to ``p_t``; this computes
    ``log p_t`` exactly via ``log_softmax`` (a difference below 1e-4 in the loss).
    """
    logp = F.log_softmax(logits.float(), dim=1)
    logp_t = logp.gather(1, target.long()[:, None])[:, 0]
    p_t = logp_t.exp()
    return (-((1.0 - p_t) ** gamma) * logp_t).mean()


def partner_indices(position: np.ndarray, volume: np.ndarray, rng: np.random.Generator,
                    idx: np.ndarray) -> np.ndarray:
    """For each slice in ``idx``, a source slice for the foreign patch: a slice at about the same relative
    position along the slice axis, from another volume when there is one (like FPI's pairing by slice index).

    ``position`` (n,) relative slice positions in [0, 1], ``volume`` (n,) volume ids of the slice bank.
    """
    n_vol = int(volume.max()) + 1 if volume.size else 1
    order = np.argsort(position, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    window = max(1, n_vol)
    out = np.empty(idx.size, dtype=np.int64)
    for j, i in enumerate(idx):
        cand = i
        for _ in range(8):  # a few tries to find another volume; fall back to any other slice
            r = int(np.clip(rank[i] + rng.integers(-window, window + 1), 0, order.size - 1))
            cand = int(order[r])
            if cand != i and (n_vol == 1 or volume[cand] != volume[i]):
                break
        if cand == i and order.size > 1:
            cand = int(order[(rank[i] + 1) % order.size])
        out[j] = cand
    return out


def synthesise(x: torch.Tensor, source: torch.Tensor, generator: torch.Generator,
               probability: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Foreign-patch anomalies for ASR training (paper Eqs. 9-10).

    With ``probability`` per slice, a random square patch of ``x`` (N, 1, H, W) is replaced by
    ``(1 - a) x + a source`` with ``a ~ U(0, 1)`` (Eq. 9); the target is the binary mask of the patch where the two
    sources differ (``fpi_pair``'s label > 0: a patch over identical pixels, e.g. shared background, changes
    nothing and is labelled normal). The other slices are returned unchanged with an all-zero target.
    Returns (images (N, 1, H, W), targets (N, H, W) int64).
    """
    n, _, h, w = x.shape
    boxes, _ = sample_patches(n, h, w, ASR_PATCHES, generator, device=x.device)
    factors = torch.rand(n, generator=generator).to(x.device)
    batch = fpi_pair(x[:, 0], source[:, 0], ASR_PATCHES, boxes=boxes, factors=factors)
    applied = (torch.rand(n, generator=generator) < probability).to(x.device)
    images = torch.where(applied[:, None, None, None], batch.images[:n], x)
    target = (batch.labels[:n] > 0) & applied[:, None, None]
    return images, target.long()
