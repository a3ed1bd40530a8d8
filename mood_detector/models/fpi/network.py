"""Wide residual encoder-decoder of the FPI reference code (no skip connections).

Pre-activation residual blocks: BN-ReLU-conv3x3-BN-ReLU-conv3x3, no conv bias. The shortcut is a 1x1 conv
(on the pre-activated input) when the channel count changes, an average pool when only the stride is 2, and
the identity otherwise. Up-blocks upsample (nearest, x2) right after their first conv. With ``width=1`` and one
output channel the brain network has exactly 4,164,763 parameters.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F


def _conv3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class PreActBlock(nn.Module):
    """Pre-activation residual block; ``stride`` 2 halves the resolution."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = _conv3(cin, cout, stride)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = _conv3(cout, cout)
        self.stride = stride
        self.shortcut = nn.Conv2d(cin, cout, 1, stride=stride, bias=False) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.relu(self.bn1(x))
        if self.shortcut is not None:
            short = self.shortcut(a)
        elif self.stride == 2:
            short = F.avg_pool2d(x, 2)
        else:
            short = x
        out = self.conv2(F.relu(self.bn2(self.conv1(a))))
        return out + short


class UpBlock(nn.Module):
    """Pre-activation residual block that doubles the resolution (nearest) after its first conv."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = _conv3(cin, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = _conv3(cout, cout)
        self.shortcut = nn.Conv2d(cin, cout, 1, bias=False) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.relu(self.bn1(x))
        short = self.shortcut(a) if self.shortcut is not None else x
        short = F.interpolate(short, scale_factor=2, mode="nearest")
        h = F.interpolate(self.conv1(a), scale_factor=2, mode="nearest")
        return self.conv2(F.relu(self.bn2(h))) + short


# Channel plans at width 1 (the reference code). Encoder: (cin, cout, stride); decoder: (cin, cout).
ENCODER = {
    "brain": [(16, 64, 1), (64, 128, 2), (128, 256, 2), (256, 256, 2), (256, 256, 2)],
    "abdom": [(16, 64, 1), (64, 128, 2), (128, 256, 2), (256, 256, 2), (256, 256, 2), (256, 256, 2)],
}
DECODER = {
    "brain": [(256, 128), (128, 64), (64, 16)],
    "abdom": [(256, 128), (128, 128), (128, 64), (64, 16)],
}


def scaled(c: int, width: float) -> int:
    """Channel count ``c`` scaled by ``width`` (at least 1)."""
    return max(1, int(round(c * width)))


class WideResEncoderDecoder(nn.Module):
    """The FPI network: input (N, 1, H, W), output logits (N, out_channels, H, W).

    Args:
        arch: ``brain`` (4 stride-2 stages, for 256^2) or ``abdom`` (5 stages, for 512^2).
        out_channels: 1 for continuous FPI (sigmoid), 5 for discrete (softmax).
        width: multiplies every channel count (1.0 = reference widths); tests use small values.
    """

    def __init__(self, arch: str = "brain", out_channels: int = 1, width: float = 1.0) -> None:
        super().__init__()
        if arch not in ENCODER:
            raise ValueError(f"unknown architecture {arch!r}")
        self.arch, self.out_channels, self.width = arch, out_channels, width
        w = lambda c: scaled(c, width)  # noqa: E731
        self.stem = nn.Conv2d(1, w(16), 3, padding=1, bias=False)
        self.encoder = nn.Sequential(*[PreActBlock(w(a), w(b), s) for a, b, s in ENCODER[arch]])
        ups: Sequence[tuple[int, int]] = DECODER[arch]
        self.decoder = nn.Sequential(*[UpBlock(w(a), w(b)) for a, b in ups], UpBlock(w(16), out_channels))

    @property
    def stride(self) -> int:
        """Total down-sampling factor: inputs must have H and W divisible by it."""
        return 2 ** sum(1 for _, _, s in ENCODER[self.arch] if s == 2)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encode(x))
