"""A compact 3D U-Net with coordinate channels: the network of the volumetric detector.

Input: one intensity channel plus three coordinate channels (each voxel's position in the whole network
volume, in [-1, 1] per axis), so that a patch knows where it lies (a reflected or shifted region can look
like normal tissue of another place). Encoder: ``levels`` stages of two 3x3x3 convolutions (instance norm,
leaky ReLU), each stage but the first entered by a stride-2 convolution; channels double per stage from
``base``. Decoder: transposed-convolution up-sampling, concatenation with the encoder's features, two
convolutions. Output: one logit per voxel (anomaly).

Instance norm rather than batch norm: the batches are one or two volumes (or patches) on a CPU, too few for
batch statistics, and scoring then does not depend on which volumes share a batch.
"""

from __future__ import annotations

import math

import torch
from torch import nn


#: the initial output probability of every voxel (about the share of anomalous voxels in a training patch)
PRIOR = 0.02


def _block(cin: int, cout: int, stride: int = 1, dims: int = 3) -> nn.Sequential:
    conv, norm = (nn.Conv3d, nn.InstanceNorm3d) if dims == 3 else (nn.Conv2d, nn.InstanceNorm2d)
    return nn.Sequential(
        conv(cin, cout, 3, stride=stride, padding=1, bias=False),
        norm(cout, affine=True),
        nn.LeakyReLU(0.01, inplace=True),
        conv(cout, cout, 3, padding=1, bias=False),
        norm(cout, affine=True),
        nn.LeakyReLU(0.01, inplace=True),
    )


def coordinate_channels(origin: torch.Tensor, patch: tuple[int, int, int], full: tuple[int, int, int],
                        dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Coordinates (N, 3, d, h, w) in [-1, 1] of patches of shape ``patch`` whose first voxels lie at ``origin``
    (N, 3) in a volume of shape ``full`` (voxel centres: -1 and 1 are the first and last voxel)."""
    axes = []
    for a in range(3):
        idx = torch.arange(patch[a], device=device, dtype=dtype)[None] + origin[:, a:a + 1].to(device, dtype)
        axes.append(2 * idx / max(full[a] - 1, 1) - 1)  # (N, patch[a])
    n = origin.shape[0]
    d, h, w = patch
    return torch.stack([axes[0][:, :, None, None].expand(n, d, h, w),
                        axes[1][:, None, :, None].expand(n, d, h, w),
                        axes[2][:, None, None, :].expand(n, d, h, w)], dim=1)


class UNet3D(nn.Module):
    """3D U-Net: ``(N, 4, D, H, W)`` (intensity + 3 coordinates) -> logits ``(N, 1, D, H, W)``; every edge
    must be a multiple of ``2 ** (levels - 1)``. With ``dims=2`` the same U-Net in 2D (``(N, C, H, W)``), the
    network of the 2.5D detector (:mod:`mood_detector.models.unet25d`)."""

    def __init__(self, base: int = 8, levels: int = 4, in_channels: int = 4, dims: int = 3) -> None:
        super().__init__()
        if levels < 2 or base < 1 or dims not in (2, 3):
            raise ValueError(f"UNet3D needs levels >= 2, base >= 1 and dims 2 or 3, got {levels}, {base}, {dims}")
        ch = [base * 2**i for i in range(levels)]
        up, head = (nn.ConvTranspose3d, nn.Conv3d) if dims == 3 else (nn.ConvTranspose2d, nn.Conv2d)
        self.levels = levels
        self.down = nn.ModuleList([_block(in_channels, ch[0], dims=dims)] +
                                  [_block(ch[i - 1], ch[i], stride=2, dims=dims) for i in range(1, levels)])
        self.up = nn.ModuleList([up(ch[i], ch[i - 1], 2, stride=2) for i in range(levels - 1, 0, -1)])
        self.dec = nn.ModuleList([_block(2 * ch[i - 1], ch[i - 1], dims=dims) for i in range(levels - 1, 0, -1)])
        self.head = head(ch[0], 1, 1)
        # the output starts at the prior of an anomalous voxel, not at 0.5: few voxels of a training patch are
        # anomalous, and from a zero bias the first few hundred steps only learn to say "normal" everywhere
        # (measured: BCE 0.69 -> 0.59 in 60 steps at lr 1e-3 with the bias at 0)
        nn.init.constant_(self.head.bias, math.log(PRIOR / (1 - PRIOR)))

    @property
    def stride(self) -> int:
        """The total down-sampling factor: input edges must be multiples of it."""
        return 2 ** (self.levels - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x)
            if i < self.levels - 1:
                skips.append(x)
        for up, dec in zip(self.up, self.dec):
            x = dec(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)
