"""A plain convolutional autoencoder with the FPI network's depth and channel plan.

Encoder: stem conv, then one stage per FPI encoder block (conv3x3 [stride] - BN - ReLU - conv3x3 - BN -
ReLU, no residual shortcut), then a 1x1 convolution down to ``latent`` channels (the spatial bottleneck:
size/16 squared x latent values for the brain plan). Decoder: 1x1 conv back up, one stage per FPI up-block
(nearest x2 upsampling - conv - BN - ReLU - conv - BN - ReLU), a 1x1 output conv and a sigmoid, so the
reconstruction is in [0, 1] like the input. No skip connections (they would let the network copy
anomalies through).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from mood_detector.models.fpi.network import DECODER, ENCODER, scaled


def _conv_bn_relu(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class ConvAutoencoder(nn.Module):
    """Input (N, 1, H, W) in [0, 1] -> reconstruction (N, 1, H, W) in [0, 1]; any H, W (padded internally to a
    multiple of :attr:`stride`, the output cropped back)."""

    def __init__(self, arch: str = "brain", width: float = 1.0, latent: int = 16) -> None:
        super().__init__()
        if arch not in ENCODER:
            raise ValueError(f"unknown architecture {arch!r}")
        self.arch, self.width, self.latent = arch, width, latent
        w = lambda c: scaled(c, width)  # noqa: E731
        enc: list[nn.Module] = _conv_bn_relu(1, w(16))
        for a, b, s in ENCODER[arch]:
            enc += _conv_bn_relu(w(a), w(b), s) + _conv_bn_relu(w(b), w(b))
        last = w(ENCODER[arch][-1][1])
        enc.append(nn.Conv2d(last, latent, 1))
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [nn.Conv2d(latent, last, 1), nn.BatchNorm2d(last), nn.ReLU(inplace=True)]
        ups = [(w(a), w(b)) for a, b in DECODER[arch]] + [(w(16), w(16))]
        for a, b in ups:
            dec += [nn.Upsample(scale_factor=2, mode="nearest")] + _conv_bn_relu(a, b) + _conv_bn_relu(b, b)
        dec.append(nn.Conv2d(w(16), 1, 1))
        self.decoder = nn.Sequential(*dec)

    @property
    def stride(self) -> int:
        """Total down-sampling factor."""
        return 2 ** sum(1 for _, _, s in ENCODER[self.arch] if s == 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        s = self.stride
        ph, pw = (-h) % s, (-w) % s
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        out = torch.sigmoid(self.decoder(self.encoder(x)))
        return out[..., :h, :w]
