"""The reconstruction backbones of DDAD (paper Sec. 4.2 and the authors' public code): AE, AE-U and MemAE.

All three share one convolutional auto-encoder for 64x64 single-channel inputs in [-1, 1]:

* encoder: four conv(k4, s2, p1, no bias) + BN + ReLU, channels 1 -> 16 -> 32 -> 64 -> 64 (64 x 4 x 4 = 1024);
* bottleneck: Linear(1024 -> 2048) + BN1d + ReLU -> Linear(2048 -> latent=16);
* decoder: Linear(16 -> 2048) + BN1d + ReLU -> Linear(2048 -> 1024), reshape to 64 x 4 x 4, three
  ConvTranspose(k4, s2, p1, no bias) + BN + ReLU 64 -> 64 -> 32 -> 16, a final ConvTranspose 16 -> C_out with
  no output activation.

AE-U has two output channels (mean, log-variance) and the loss ``mean(exp(-logvar) (x - mu)^2) + mean(logvar)``
(paper Eq. 5 in the authors' form). MemAE puts a 25-slot memory on the 16-d latent, addressed by a softmax over
the slots' inner products (the authors' configs use shrink threshold 0, i.e. plain softmax addressing), and is
trained with ``MSE + 0.0002 * entropy(addressing weights)``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from mood_detector.training.loop import at_least_float32

BACKBONES = ("ae", "aeu", "memae")
ENTROPY_WEIGHT = 2e-4  # MemAE entropy-loss weight of the authors' configs


class Reconstruction(NamedTuple):
    """Output of a backbone: the reconstruction ``mean`` (N, 1, H, W), the AE-U ``logvar`` (N, 1, H, W) or
    None, and the MemAE addressing weights ``att`` (N, slots) or None."""

    mean: torch.Tensor
    logvar: torch.Tensor | None = None
    att: torch.Tensor | None = None


def _conv(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def _deconv(cin: int, cout: int) -> list[nn.Module]:
    return [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class MemoryUnit(nn.Module):
    """``slots`` memory items of dimension ``dim``; a latent ``z`` is replaced by ``softmax(z M^T) M``."""

    def __init__(self, slots: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(slots, dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform in +-1/sqrt(dim), as the authors' MemoryUnit."""
        bound = 1.0 / math.sqrt(self.weight.shape[1])
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (the memory read-out (N, dim), the addressing weights (N, slots))."""
        att = torch.softmax(F.linear(z, self.weight), dim=1)
        return att @ self.weight, att


class ReconstructionNet(nn.Module):
    """AE (``backbone='ae'``), AE-U (``'aeu'``, 2 output channels) or MemAE (``'memae'``).

    Args:
        backbone: one of :data:`BACKBONES`.
        input_size: side of the square input, a multiple of 16 (the paper: 64).
        latent: bottleneck size (the authors: 16).
        multiplier: channel multiplier of the conv layers (1 = the paper's 16-32-64-64).
        mem_slots: MemAE memory size (the authors: 25).
        hidden: width of the fully connected bottleneck layers (the authors: 2048).
    """

    def __init__(self, backbone: str = "ae", input_size: int = 64, latent: int = 16, multiplier: float = 1.0,
                 mem_slots: int = 25, hidden: int = 2048) -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"unknown DDAD backbone {backbone!r}; choose from {', '.join(BACKBONES)}")
        if input_size % 16 or input_size < 16:
            raise ValueError(f"DDAD input size must be a positive multiple of 16, got {input_size}")
        self.backbone = backbone
        c = [max(1, int(k * multiplier)) for k in (16, 32, 64, 64)]
        self.fm = input_size // 16
        self.c_last = c[3]
        flat = c[3] * self.fm * self.fm
        self.encoder = nn.Sequential(*_conv(1, c[0]), *_conv(c[0], c[1]), *_conv(c[1], c[2]), *_conv(c[2], c[3]))
        self.linear_enc = nn.Sequential(nn.Linear(flat, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                                        nn.Linear(hidden, latent))
        self.memory = MemoryUnit(mem_slots, latent) if backbone == "memae" else None
        self.linear_dec = nn.Sequential(nn.Linear(latent, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                                        nn.Linear(hidden, flat))
        out = 2 if backbone == "aeu" else 1
        self.decoder = nn.Sequential(*_deconv(c[3], c[2]), *_deconv(c[2], c[1]), *_deconv(c[1], c[0]),
                                     nn.ConvTranspose2d(c[0], out, 4, 2, 1, bias=False))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent codes (N, latent) of inputs (N, 1, H, W)."""
        return self.linear_enc(self.encoder(x).flatten(1))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Raw decoder output (N, C_out, H, W) of latent codes (N, latent)."""
        h = self.linear_dec(z).view(z.shape[0], self.c_last, self.fm, self.fm)
        return self.decoder(h)

    def forward(self, x: torch.Tensor) -> Reconstruction:
        z = self.encode(x)
        att = None
        if self.memory is not None:
            z, att = self.memory(z)
        out = self.decode(z)
        if self.backbone == "aeu":
            mean, logvar = out.chunk(2, dim=1)
            return Reconstruction(mean, logvar, None)
        return Reconstruction(out, None, att)


def addressing_entropy(att: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Mean over samples of the entropy ``-sum_i w_i log w_i`` of MemAE addressing weights (N, slots)."""
    return -(att * torch.log(att + eps)).sum(dim=1).mean()


def reconstruction_loss(rec: Reconstruction, x: torch.Tensor,
                        entropy_weight: float = ENTROPY_WEIGHT) -> tuple[torch.Tensor, torch.Tensor]:
    """Training loss of a backbone and its plain MSE (for logging).

    AE: MSE. AE-U: ``mean(exp(-logvar) (x - mu)^2) + mean(logvar)``. MemAE: ``MSE + entropy_weight * H(att)``.
    """
    err = (at_least_float32(rec.mean) - x) ** 2
    mse = err.mean()
    if rec.logvar is not None:
        logvar = at_least_float32(rec.logvar)
        return (torch.exp(-logvar) * err).mean() + logvar.mean(), mse
    if rec.att is not None:
        return mse + entropy_weight * addressing_entropy(at_least_float32(rec.att)), mse
    return mse, mse
