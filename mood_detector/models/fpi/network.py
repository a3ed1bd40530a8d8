"""Wide residual encoder-decoder of the FPI reference code (no skip connections).

Pre-activation residual blocks: BN-ReLU-conv3x3-BN-ReLU-conv3x3, no conv bias. The shortcut is a 1x1 conv
(on the pre-activated input) when the channel count changes, an average pool when only the stride is 2, and
the identity otherwise. Up-blocks upsample (nearest, x2) right after their first conv. With ``width=1`` and one
output channel the brain network has exactly 4,164,763 parameters.

``skips=True`` is this package's variant, not the paper's: each decoder stage (and the output) also gets the
encoder's features of the same resolution through a 1x1 convolution, added (U-Net-like). Without skips the
network paints its map from a grid of stride 16 (8x8 cells at 128^2 slices: blurry blobs); with them the map
follows the input's edges. See docs/fpi.md for the measurement that made it the CPU preset's choice.
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

    def __init__(self, arch: str = "brain", out_channels: int = 1, width: float = 1.0, skips: bool = False,
                 out_bias: bool = False) -> None:
        super().__init__()
        if arch not in ENCODER:
            raise ValueError(f"unknown architecture {arch!r}")
        self.arch, self.out_channels, self.width, self.skips = arch, out_channels, width, skips
        # The reference plan's convolutions have no bias, so its logits have none either: a class prior (most
        # pixels are "not foreign") must then be built from activations, and a fresh network starts far above
        # the loss of a constant predictor. ``out_bias`` adds one learnable bias per output channel,
        # initialised to that prior (:meth:`init_prior`).
        self.out_bias = nn.Parameter(torch.zeros(out_channels)) if out_bias else None
        w = lambda c: scaled(c, width)  # noqa: E731
        self.stem = nn.Conv2d(1, w(16), 3, padding=1, bias=False)
        self.encoder = nn.Sequential(*[PreActBlock(w(a), w(b), s) for a, b, s in ENCODER[arch]])
        ups: Sequence[tuple[int, int]] = DECODER[arch]
        self.decoder = nn.Sequential(*[UpBlock(w(a), w(b)) for a, b in ups], UpBlock(w(16), out_channels))
        if skips:
            # encoder output channels by resolution level (0 = full size); decoder stage i ends at level
            # n_up - 1 - i; each gets a 1x1 projection of the encoder's last features at that level
            level, enc_at = 0, {}
            for _, cout, stride in ENCODER[arch]:
                level += stride == 2
                enc_at[level] = w(cout)
            outs = [w(b) for _, b in ups] + [out_channels]
            n_up = len(outs)
            self.skip_proj = nn.ModuleList(nn.Conv2d(enc_at[n_up - 1 - i], c, 1) for i, c in enumerate(outs))

    @property
    def stride(self) -> int:
        """Total down-sampling factor: inputs must have H and W divisible by it."""
        return 2 ** sum(1 for _, _, s in ENCODER[self.arch] if s == 2)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.stem(x))

    @torch.no_grad()
    def init_prior(self, inside: float = 0.05) -> None:
        """Set the output bias to the log prior of a map that is foreign on a fraction ``inside`` of pixels,
        spread evenly over the non-zero classes (softmax) or as the logit of ``inside`` (one channel)."""
        if self.out_bias is None:
            return
        c = self.out_channels
        if c == 1:
            self.out_bias.fill_(float(torch.logit(torch.tensor(inside))))
        else:
            p = torch.full((c,), inside / (c - 1))
            p[0] = 1 - inside
            self.out_bias.copy_(p.log())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._forward(x)
        return out if self.out_bias is None else out + self.out_bias[None, :, None, None]

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.skips:
            return self.decoder(self.encode(x))
        h, level, feats = self.stem(x), 0, {}
        for block in self.encoder:
            h = block(h)
            level += block.stride == 2
            feats[level] = h  # the last block at each level
        n_up = len(self.decoder)
        for i, (block, proj) in enumerate(zip(self.decoder, self.skip_proj)):
            h = block(h) + proj(feats[n_up - 1 - i])
        return h
