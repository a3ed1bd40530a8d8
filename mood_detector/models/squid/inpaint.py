"""The in-painting block of SQUID (thesis Sec. 3.4, Fig. 3.4/3.5) and patch-grid helpers.

Per patch feature map ``x`` (C=512, 4x4 for a 64^2 patch at width 1):

1. bottleneck: 1x1 conv C -> C/4 + BN + ReLU, flattened to ``F`` (C/4 * 4 * 4 = 2048 values);
2. memory read-out ``N = sum_j G(F . M_j) M_j`` from the queue of the patch's own position (Eq. 3.1);
3. transformer layer: 8-head attention with query = the patch's own ``F`` and keys/values = the read-outs
   ``N`` of its 8 neighbours; ``h = relu(LN(attn) + N_self)``, then ``h = relu(LN(FFN(h)) + h)`` with the
   feed-forward 2048 -> 512 -> 2048 (residuals as in the authors' code);
4. a 3-bit binary code of the patch position is concatenated as constant channels, then 1x1 conv back to C
   + BN + ReLU;
5. masked shortcut (Eq. 3.3/3.4): in training a Bernoulli(0.95) spatial mask keeps the in-painted feature,
   else the input feature; at inference the in-painted feature only (deterministic).

**The 8 neighbours with a 2x2 patch grid.** As in the authors' code, the neighbourhood is taken over the grid
of *patch positions*: the read-outs of the 2x2 patches form a 2x2 grid of tokens, which is zero-padded by one
and cut into 3x3 windows (``F.unfold``, stride 1); the centre token (the patch itself) is dropped. Each patch
therefore attends to the read-outs of its 3 real neighbours (the other three patches) plus 5 zero tokens from
the padding; the zero tokens are kept as keys/values (after the attention's input projection they are just
the projection biases), exactly as in the authors' code. With a larger grid the same code gives up to 8 real
neighbours.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from mood_detector import distributed
from mood_detector.models.squid.memory import MemoryQueue


def patchify(x: torch.Tensor, grid: int) -> torch.Tensor:
    """(B, C, H, W) -> (B * grid^2, C, H/grid, W/grid); patches in row-major order (p = row * grid + col)."""
    b, c, h, w = x.shape
    if h % grid or w % grid:
        raise ValueError(f"image {h}x{w} cannot be cut into a {grid}x{grid} patch grid")
    ph, pw = h // grid, w // grid
    return x.reshape(b, c, grid, ph, grid, pw).permute(0, 2, 4, 1, 3, 5).reshape(b * grid * grid, c, ph, pw)


def unpatchify(x: torch.Tensor, grid: int) -> torch.Tensor:
    """Inverse of :func:`patchify`: (B * grid^2, C, h, w) -> (B, C, grid*h, grid*w)."""
    n, c, h, w = x.shape
    b = n // (grid * grid)
    return x.reshape(b, grid, grid, c, h, w).permute(0, 3, 1, 4, 2, 5).reshape(b, c, grid * h, grid * w)


def neighbour_tokens(tokens: torch.Tensor, grid: int) -> torch.Tensor:
    """For tokens (B, grid^2, D) on a grid x grid patch grid: the 8 neighbours of each position in a
    zero-padded 3x3 window (centre excluded), row-major -> (B, grid^2, 8, D)."""
    b, p, d = tokens.shape
    img = tokens.transpose(1, 2).reshape(b, d, grid, grid)
    win = F.unfold(img, kernel_size=3, padding=1)  # (B, D * 9, P)
    win = win.reshape(b, d, 9, p).permute(0, 3, 2, 1)  # (B, P, 9, D)
    keep = [i for i in range(9) if i != 4]
    return win[:, :, keep]


def position_code(positions: int) -> torch.Tensor:
    """Binary code of each patch position, most significant bit first: (positions, int(log2 positions) + 1);
    3 bits for the 2x2 grid, as in the authors' code."""
    bits = int(math.log2(positions)) + 1
    idx = torch.arange(positions)
    return torch.stack([(idx >> (bits - 1 - b)) & 1 for b in range(bits)], dim=1).float()


class InpaintBlock(nn.Module):
    """Feature in-painting with the space-aware memory queue, a transformer layer and the masked shortcut.

    Args:
        channels: encoder output channels C (512 at width 1).
        size: spatial size of each patch's feature map (4 for 64^2 patches).
        grid: patches per side (2).
        slots: queue length per patch position (200).
        k: Gumbel shrinkage top-k (5).
        ratio: masked-shortcut probability of keeping the in-painted feature in training (0.95).
        heads: attention heads (8).
    """

    def __init__(self, channels: int = 512, size: int = 4, grid: int = 2, slots: int = 200, k: int = 5,
                 ratio: float = 0.95, heads: int = 8) -> None:
        super().__init__()
        self.channels, self.size, self.grid, self.k, self.ratio = channels, size, grid, k, float(ratio)
        self.positions = grid * grid
        mid = max(1, channels // 4)
        self.mid = mid
        self.dim = mid * size * size
        if self.dim % heads:
            raise ValueError(f"in-painting feature size {self.dim} is not divisible by {heads} heads")
        self.reduce = nn.Sequential(nn.Conv2d(channels, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU())
        self.queue = MemoryQueue(self.positions, slots, self.dim)
        self.attention = nn.MultiheadAttention(self.dim, heads, batch_first=True)
        self.norm1 = nn.LayerNorm(self.dim)
        self.ff = nn.Sequential(nn.Linear(self.dim, self.dim // 4), nn.ReLU(), nn.Linear(self.dim // 4, self.dim))
        self.norm2 = nn.LayerNorm(self.dim)
        self.register_buffer("code", position_code(self.positions), persistent=False)
        bits = self.code.shape[1]
        self.expand = nn.Sequential(nn.Conv2d(mid + bits, channels, 1), nn.BatchNorm2d(channels), nn.ReLU())
        self._pending: torch.Tensor | None = None

    def inpaint(self, x: torch.Tensor) -> torch.Tensor:
        """The in-painted features (B * P, C, h, w) without the shortcut; in training, remembers the bottleneck
        features for the next :meth:`commit`."""
        n, c, h, w = x.shape
        p = self.positions
        b = n // p
        f = self.reduce(x).reshape(b, p, self.dim)
        mem = self.queue.read(f, self.k)  # (B, P, D)
        if self.training:
            self._pending = f.detach()
        keys = neighbour_tokens(mem, self.grid).reshape(b * p, 8, self.dim)
        query = f.reshape(b * p, 1, self.dim)
        att = self.attention(query, keys, keys, need_weights=False)[0]
        hid = F.relu(self.norm1(att) + mem.reshape(b * p, 1, self.dim))
        hid = F.relu(self.norm2(self.ff(hid)) + hid)
        hid = hid.reshape(n, self.mid, h, w)
        code = self.code.to(hid.dtype).repeat(b, 1)[:, :, None, None].expand(-1, -1, h, w)
        return self.expand(torch.cat([hid, code], dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inpaint(x)
        if self.training and self.ratio < 1.0:
            mask = torch.bernoulli(torch.full((x.shape[0], 1, x.shape[2], x.shape[3]), self.ratio,
                                              device=x.device, dtype=out.dtype))
            out = mask * out + (1.0 - mask) * x
        return out

    @torch.no_grad()
    def commit(self) -> None:
        """Copy the features of the last training forward into the queue (call after the optimiser step);
        under ``torchrun``, every rank's (the whole batch's, in rank order), so the queue stays the same on every
        rank."""
        if self._pending is not None:
            self.queue.push(distributed.all_gather_cat(self._pending))
            self._pending = None
