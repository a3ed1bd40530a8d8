"""The progressively growing autoencoder of the Deep Perceptual Autoencoder (DPA).

Facts from the authors' public code (ninatu/anomaly_detection, ``residual18`` networks), re-implemented here:

* pre-activation residual blocks without normalisation layers, LeakyReLU(0.2), Kaiming-normal init
  (``fan_out``, ``a=0.2``); the shortcut is the identity, or a 1x1 conv when the channel count changes;
* down block = LReLU, AvgPool2d(2), conv3x3, LReLU, conv3x3 (shortcut: avg-pool [+ 1x1]);
* up block = LReLU, nearest x2, conv3x3, LReLU, conv3x3 (shortcut: nearest x2 [+ 1x1]);
* encoder: per input resolution a "from-image" block conv3x3(1->nf) + 2 pre-act blocks, then one
  [down, pre-act] pair per resolution down to 4x4, then LReLU + valid conv4x4 to a ``latent_dim`` x 1 x 1 code;
* decoder mirrors it: LReLU + conv4x4 (padding 3) from the 1x1 code to 4x4, one [up, pre-act] pair per
  resolution, then a per-resolution "to-image" block LReLU + conv3x3(nf->1), no output activation.

Progressive growing (paper Sec. 3.2, PGGAN-style): training starts at ``start_res`` (8) and doubles up to
``max_res``. While a new resolution ``r`` fades in with weight ``alpha`` in [0, 1], the encoder input path is
``(1-alpha) * from_image[r/2](avgpool(x)) + alpha * down[r](from_image[r](x))`` and the decoder output is
``(1-alpha) * upsample(to_image[r/2](h)) + alpha * to_image[r](up[r](h))``. All resolutions' blocks live in one
module (``ModuleDict`` keyed ``r8``, ``r16``, ...), so one state dict holds the whole grown network.

Deviation: the authors' code allows a different width per resolution; here every level has ``nf`` channels
(their MOOD configs used 128 at every level, which ``width=1`` reproduces).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

SLOPE = 0.2  # LeakyReLU negative slope


def _conv(cin: int, cout: int, k: int = 3, padding: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=padding)


def init_weights(module: nn.Module) -> nn.Module:
    """Kaiming-normal (fan_out, leaky_relu a=0.2) conv weights, zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, a=SLOPE, mode="fan_out", nonlinearity="leaky_relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _down2(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 2)


def _up2(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest")


class PreActBlock(nn.Module):
    """LReLU, [resample], conv3x3, LReLU, conv3x3 plus the shortcut: [resample], then a 1x1 conv when the
    channel count changes (identity otherwise); no normalisation. Without ``resample`` the plain pre-activation
    block; :class:`DownBlock` and :class:`UpBlock` resample by 2."""

    def __init__(self, cin: int, cout: int, resample=_identity) -> None:
        super().__init__()
        self.resample = resample
        self.conv1 = _conv(cin, cout)
        self.conv2 = _conv(cout, cout)
        self.shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.resample(F.leaky_relu(x, SLOPE)))
        h = self.conv2(F.leaky_relu(h, SLOPE))
        s = self.resample(x)
        return h + (self.shortcut(s) if self.shortcut is not None else s)


class DownBlock(PreActBlock):
    """LReLU, AvgPool2d(2), conv3x3, LReLU, conv3x3; shortcut avg-pool (+ 1x1 conv when channels change)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(cin, cout, _down2)


class UpBlock(PreActBlock):
    """LReLU, nearest x2, conv3x3, LReLU, conv3x3; shortcut nearest x2 (+ 1x1 conv when channels change)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(cin, cout, _up2)


def resolutions(start_res: int, max_res: int) -> list[int]:
    """The growth stages ``start_res, 2*start_res, ..., max_res`` (powers of two, start >= 8)."""
    for name, r in (("start_res", start_res), ("max_res", max_res)):
        if r < 8 or r & (r - 1):
            raise ValueError(f"{name} must be a power of two >= 8, got {r}")
    if max_res < start_res:
        raise ValueError(f"max_res {max_res} is below start_res {start_res}")
    return [start_res * 2**k for k in range(int(math.log2(max_res // start_res)) + 1)]


def blend(low: torch.Tensor, high: torch.Tensor, alpha: float) -> torch.Tensor:
    """The fade-in mixture ``(1 - alpha) * low + alpha * high`` (``high`` alone when alpha >= 1)."""
    if alpha >= 1.0:
        return high
    return (1.0 - alpha) * low + alpha * high


class Encoder(nn.Module):
    """Image (N, 1, r, r) -> code (N, latent_dim, 1, 1) for any growth resolution r."""

    def __init__(self, max_res: int, nf: int, latent_dim: int, start_res: int = 8) -> None:
        super().__init__()
        self.res = resolutions(start_res, max_res)
        self.from_image = nn.ModuleDict({
            f"r{r}": nn.Sequential(_conv(1, nf), PreActBlock(nf, nf), PreActBlock(nf, nf)) for r in self.res})
        # down[r]: r -> r/2 ; the chain ends at 4x4
        self.down = nn.ModuleDict({f"r{r}": nn.Sequential(DownBlock(nf, nf), PreActBlock(nf, nf)) for r in self.res})
        self.head = nn.Sequential(nn.LeakyReLU(SLOPE), nn.Conv2d(nf, latent_dim, 4))
        init_weights(self)

    def forward(self, x: torch.Tensor, res: int | None = None, alpha: float = 1.0) -> torch.Tensor:
        res = res or self.res[-1]
        if res not in self.res:
            raise ValueError(f"resolution {res} is not a growth stage {self.res}")
        if x.shape[-1] != res or x.shape[-2] != res:
            raise ValueError(f"encoder at resolution {res} got input {tuple(x.shape)}")
        h = self.down[f"r{res}"](self.from_image[f"r{res}"](x))
        if alpha < 1.0 and res > self.res[0]:
            h = blend(self.from_image[f"r{res // 2}"](F.avg_pool2d(x, 2)), h, alpha)
        r = res // 2
        while r >= self.res[0]:
            h = self.down[f"r{r}"](h)
            r //= 2
        return self.head(h)


class Decoder(nn.Module):
    """Code (N, latent_dim, 1, 1) -> image (N, 1, r, r) for any growth resolution r."""

    def __init__(self, max_res: int, nf: int, latent_dim: int, start_res: int = 8) -> None:
        super().__init__()
        self.res = resolutions(start_res, max_res)
        self.stem = nn.Sequential(nn.LeakyReLU(SLOPE), nn.Conv2d(latent_dim, nf, 4, padding=3))  # 1x1 -> 4x4
        # up[r]: r/2 -> r
        self.up = nn.ModuleDict({f"r{r}": nn.Sequential(UpBlock(nf, nf), PreActBlock(nf, nf)) for r in self.res})
        self.to_image = nn.ModuleDict({f"r{r}": nn.Sequential(nn.LeakyReLU(SLOPE), _conv(nf, 1)) for r in self.res})
        init_weights(self)

    def forward(self, z: torch.Tensor, res: int | None = None, alpha: float = 1.0) -> torch.Tensor:
        res = res or self.res[-1]
        if res not in self.res:
            raise ValueError(f"resolution {res} is not a growth stage {self.res}")
        h = self.stem(z)
        r = self.res[0]
        while r < res:
            h = self.up[f"r{r}"](h)
            r *= 2
        out = self.to_image[f"r{res}"](self.up[f"r{res}"](h))
        if alpha < 1.0 and res > self.res[0]:
            low = F.interpolate(self.to_image[f"r{res // 2}"](h), scale_factor=2, mode="nearest")
            out = blend(low, out, alpha)
        return out


class ProgressiveAE(nn.Module):
    """Encoder + decoder; ``forward(x, res, alpha)`` reconstructs ``x`` at growth resolution ``res``."""

    def __init__(self, max_res: int, nf: int = 128, latent_dim: int = 128, start_res: int = 8) -> None:
        super().__init__()
        self.max_res, self.nf, self.latent_dim, self.start_res = max_res, nf, latent_dim, start_res
        self.encoder = Encoder(max_res, nf, latent_dim, start_res)
        self.decoder = Decoder(max_res, nf, latent_dim, start_res)

    @property
    def resolutions(self) -> list[int]:
        return list(self.encoder.res)

    def forward(self, x: torch.Tensor, res: int | None = None, alpha: float = 1.0) -> torch.Tensor:
        return self.decoder(self.encoder(x, res, alpha), res, alpha)


def mix_resolution(x: torch.Tensor, alpha: float) -> torch.Tensor:
    """The fade-in input of the paper (Sec. 3.2): ``(1-alpha) * up2(down2(x)) + alpha * x`` (nearest up)."""
    if alpha >= 1.0:
        return x
    low = F.interpolate(F.avg_pool2d(x, 2), scale_factor=2, mode="nearest")
    return blend(low, x, alpha)
