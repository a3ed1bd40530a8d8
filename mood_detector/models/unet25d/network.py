"""The 2.5D network: a 2D U-Net that scores each slice from a slab of neighbouring slices and coordinates.

It takes and returns what the 3D U-Net does (``(N, 4, D, H, W)``: intensity + 3 coordinate channels ->
logits ``(N, 1, D, H, W)``), so the volumetric detector's training, tasks, validation and sliding-window
scoring serve it unchanged. Inside, the volume is cut into slices along ``axis``; each slice is scored by a
2D U-Net from ``2 * context + 1`` neighbouring slices (the edge slices repeated past the ends) plus the three
coordinate channels of the slice itself (its in-plane position and its level in the volume).
"""

from __future__ import annotations

import torch
from torch import nn

from mood_detector.models.unet3d.network import UNet3D


class SlabUNet(nn.Module):
    """2D U-Net over slabs of ``2 * context + 1`` slices along volume axis ``axis`` (0-2 of D, H, W)."""

    def __init__(self, base: int = 16, levels: int = 4, context: int = 1, axis: int = 2) -> None:
        super().__init__()
        if context < 0 or axis not in (0, 1, 2):
            raise ValueError(f"SlabUNet needs context >= 0 and axis in 0-2, got {context}, {axis}")
        self.context, self.axis = context, axis
        self.unet = UNet3D(base, levels, in_channels=2 * context + 1 + 3, dims=2)
        self.levels = levels

    @property
    def stride(self) -> int:
        return self.unet.stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # slices along axis -> the batch: (N, C, D, H, W) -> (N, S, C, A, B), S the slices
        perm = [0, 2 + self.axis, 1] + [2 + a for a in range(3) if a != self.axis]
        v = x.permute(*perm)
        n, s, _, a, b = v.shape
        k = self.context
        intensity = v[:, :, 0]  # (N, S, A, B)
        # slab j holds slices j-k..j+k, the end slices repeated: a slab never reaches past the volume (or patch)
        offsets = torch.arange(-k, k + 1, device=x.device)
        index = (torch.arange(s, device=x.device)[:, None] + offsets[None]).clamp(0, s - 1)
        slabs = intensity[:, index]  # (N, S, 2k+1, A, B)
        inputs = torch.cat([slabs, v[:, :, 1:]], dim=2).reshape(n * s, 2 * k + 1 + 3, a, b)
        logits = self.unet(inputs.contiguous(memory_format=torch.channels_last))  # (N*S, 1, A, B)
        logits = logits.reshape(n, s, 1, a, b)
        inverse = [perm.index(i) for i in range(5)]
        return logits.permute(*inverse).contiguous()
