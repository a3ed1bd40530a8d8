"""SQUID networks: the generator (encoder, in-painting block, student and teacher decoders) and the
discriminator, following the authors' public code (thesis Sec. 3.7).

Generator at width 1 for a 128x128 input cut into 2x2 patches of 64^2 (all convolutions act per patch until
the patches are put back together):

* encoder: double-conv residual blocks with filters [32, 64, 128, 256, 512]; an input block at 64^2 then four
  stride-2 blocks -> 512 x 4 x 4 per patch. (The thesis' Table 3.1 stops at 256 x 4 x 4 after four levels;
  the authors' code, and this package, use five.)
* in-painting block on the 512 x 4 x 4 patch features (``inpaint.py``).
* student decoder: up-blocks (bilinear x2, concatenated encoder skip, double conv) to 256 @ 8^2 and
  128 @ 16^2 per patch, each followed by a learned space-aware memory matrix block; the patches are then put
  back together and two more up-blocks without skips give 64 @ 64^2 and 32 @ 128^2; 1x1 conv + sigmoid.
* teacher decoder: the same shape without memory matrices, on the *non-in-painted* encoder features with
  detached skips (no gradient from the teacher into the encoder, thesis Sec. 3.1).
* distillation loss: sum over the four decoder levels of MSE(student feature, teacher feature).

Discriminator: five 5x5 stride-2 convolutions 1 -> 16 -> 32 -> 64 -> 128 -> 128 with LeakyReLU(0.2) and
BatchNorm after every convolution but the first (the authors' code has the first BatchNorm commented out),
then a linear layer on the 128 x 4 x 4 map -> one logit (high = real).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from mood_detector.models.squid.inpaint import InpaintBlock, patchify, unpatchify
from mood_detector.models.squid.memory import MemoryMatrixBlock

FILTERS = (32, 64, 128, 256, 512)  # generator filters at width 1 (authors' code)
DISC_FILTERS = (16, 32, 64, 128, 128)


def scaled(c: int, width: float) -> int:
    """Channel count ``c`` times ``width``, rounded, at least 1."""
    return max(1, int(round(c * width)))


class DoubleConv(nn.Module):
    """conv3x3(stride)-BN-ReLU, then a residual conv3x3-BN-ReLU-conv3x3-BN branch added to it, then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.BatchNorm2d(cout),
                                   nn.ReLU(inplace=True))
        self.conv2 = nn.Sequential(nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                                   nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        return F.relu(self.conv2(x) + x)


class UpBlock(nn.Module):
    """Bilinear up-sampling to ``size``, optional concatenation of a skip (skip first), double conv."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = DoubleConv(cin, cout)

    def forward(self, x: torch.Tensor, size: int, skip: torch.Tensor | None = None) -> torch.Tensor:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        if skip is not None:
            x = torch.cat([skip, x], dim=1)
        return self.conv(x)


class Decoder(nn.Module):
    """Student (``memory=True``) or teacher decoder; returns the image and the four level features."""

    def __init__(self, f: list[int], grid: int, feat: int, memory: bool, mem_slots: int = 200, k: int = 5,
                 ratio: float = 0.95) -> None:
        super().__init__()
        self.grid, self.feat = grid, feat
        self.ups = nn.ModuleList([UpBlock(f[4] + f[3], f[3]), UpBlock(f[3] + f[2], f[2]),
                                  UpBlock(f[2], f[1]), UpBlock(f[1], f[0])])
        self.memories = nn.ModuleList([MemoryMatrixBlock(f[3], 2 * feat, mem_slots, k, 2, ratio),
                                       MemoryMatrixBlock(f[2], 4 * feat, mem_slots, k, 2, ratio)]) if memory else None
        self.out = nn.Conv2d(f[0], 1, 1)

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        feats: list[torch.Tensor] = []
        for i in range(2):  # per patch, with skips and (student) memory matrices
            skip = skips[-1 - i]
            x = self.ups[i](x, skip.shape[-1], skip)
            if self.memories is not None:
                x = self.memories[i](x)
            feats.append(x)
        x = unpatchify(x, self.grid)  # patches back together
        size = x.shape[-1]
        for i in (2, 3):
            size *= 2
            x = self.ups[i](x, size)
            feats.append(x)
        return torch.sigmoid(self.out(x)), feats


class GeneratorOutput(NamedTuple):
    """Student reconstruction (B, 1, H, W), teacher reconstruction, distillation loss (scalar)."""

    recon: torch.Tensor
    teacher: torch.Tensor
    dist: torch.Tensor


class SquidGenerator(nn.Module):
    """Encoder + in-painting block + student decoder (+ teacher decoder in training).

    Args:
        width: channel multiplier of the encoder/decoders (1 = the authors' filters).
        size: input size (128 in the paper; must be divisible by 32 * grid).
        grid: patches per side (2).
        queue_slots, mem_slots: items per queue position / per learned memory matrix (200, 200).
        k: Gumbel shrinkage top-k (5).
        ratio: masked-shortcut probability (0.95).
    """

    def __init__(self, width: float = 1.0, size: int = 128, grid: int = 2, queue_slots: int = 200,
                 mem_slots: int = 200, k: int = 5, ratio: float = 0.95) -> None:
        super().__init__()
        if size % (32 * grid):
            raise ValueError(f"SQUID input size {size} must be divisible by {32 * grid} (128 in the paper)")
        self.size, self.grid = size, grid
        f = [scaled(c, width) for c in FILTERS]
        self.filters = f
        self.feat = size // grid // 16  # 4 for 64^2 patches
        self.inc = DoubleConv(1, f[0])
        self.downs = nn.ModuleList([DoubleConv(f[i], f[i + 1], stride=2) for i in range(4)])
        self.inpaint = InpaintBlock(f[4], self.feat, grid, queue_slots, k, ratio)
        self.student = Decoder(f, grid, self.feat, True, mem_slots, k, ratio)
        self.teacher = Decoder(f, grid, self.feat, False)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Patch features (B * grid^2, 512w, 4, 4) and the per-patch skips at 16^2 and 8^2."""
        h = self.inc(patchify(x, self.grid))
        skips = []
        for i, down in enumerate(self.downs):
            h = down(h)
            if i in (1, 2):
                skips.append(h)
        return h, skips

    def forward(self, x: torch.Tensor, teacher: bool | None = None) -> GeneratorOutput:
        """Reconstruct ``x`` (B, 1, size, size) in [0, 1]; the teacher branch runs in training (or when
        ``teacher`` is True)."""
        feats, skips = self.encode(x)
        recon, s_feats = self.student(self.inpaint(feats), skips)
        run_teacher = self.training if teacher is None else teacher
        if not run_teacher:
            zero = recon.new_zeros(())
            return GeneratorOutput(recon, recon.detach(), zero)
        t_recon, t_feats = self.teacher(feats.detach(), [s.detach() for s in skips])
        dist = torch.stack([F.mse_loss(s, t) for s, t in zip(s_feats, t_feats)]).sum()
        return GeneratorOutput(recon, t_recon, dist)

    def commit(self) -> None:
        """Enqueue the last training batch's features (after each generator optimiser step)."""
        self.inpaint.commit()


class Discriminator(nn.Module):
    """Five conv5x5 stride-2 layers (BN after all but the first, LeakyReLU 0.2) and a linear logit."""

    def __init__(self, size: int = 128) -> None:
        super().__init__()
        if size % 32:
            raise ValueError(f"discriminator input size {size} must be divisible by 32")
        layers: list[nn.Module] = []
        cin = 1
        for i, c in enumerate(DISC_FILTERS):
            layers.append(nn.Conv2d(cin, c, 5, stride=2, padding=2))
            if i > 0:
                layers.append(nn.BatchNorm2d(c))
            layers.append(nn.LeakyReLU(0.2))
            cin = c
        self.features = nn.Sequential(*layers)
        self.linear = nn.Linear(DISC_FILTERS[-1] * (size // 32) ** 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B,) (high = looks like a real normal image)."""
        return self.linear(self.features(x).flatten(1))[:, 0]
