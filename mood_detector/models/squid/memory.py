"""Memories of SQUID: Gumbel shrinkage, the space-aware memory queue and the learned memory matrices.

* :func:`gumbel_shrinkage` (thesis Eq. 3.2): forward = the top-k softmax weights renormalised to sum 1 (all
  others exactly 0); backward = the gradient of the plain softmax, so every item receives gradient
  (straight-through).
* :class:`MemoryQueue` (thesis Sec. 3.2): one queue per patch position ("space-aware"), ``slots`` x ``dim``,
  filled first-in-first-out with *detached copies* of training features after each generator optimiser step;
  it is a buffer, never learned. Read-out (Eq. 3.1): dot-product similarity of the query with every slot,
  Gumbel shrinkage, weighted sum of slots.
* :class:`MemoryMatrixBlock`: the learned memory matrices of the student decoder (authors' code): a feature
  map is cut into a grid x grid of sub-windows, each sub-window position has its own learned matrix; the
  read-out replaces the feature, with a Bernoulli spatial mask keeping the input feature at 1 - ratio of the
  positions during training only.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def gumbel_shrinkage(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Top-``k`` shrinkage of softmax weights along the last dim with a straight-through gradient.

    Forward: ``softmax(logits)`` with every weight below the k-th largest set to 0 and the k kept weights
    renormalised to sum 1 (computed as a softmax over the k largest logits, which is the same number and
    cannot underflow to 0 inside the top k). Backward: the gradient of ``softmax(logits)``, so all items get
    gradient. ``k`` larger than the number of items keeps all of them.

    Deviation from the authors' code: their hard shrinkage ``relu(y - t)`` with ``t`` = the k-th weight also
    zeroes the k-th weight itself (keeping k - 1); here exactly ``k`` are kept, as the thesis states.
    """
    soft = torch.softmax(logits.float(), dim=-1)
    k = max(1, min(int(k), logits.shape[-1]))
    top, idx = torch.topk(logits.float(), k, dim=-1)
    hard = torch.zeros_like(soft).scatter(-1, idx, torch.softmax(top, dim=-1))
    return ((hard - soft).detach() + soft).to(logits.dtype)


def memory_read(query: torch.Tensor, memory: torch.Tensor, k: int) -> torch.Tensor:
    """Eq. 3.1: ``sum_j G(q . m_j) m_j`` for queries (N, D) and memory (S, D) -> (N, D)."""
    w = gumbel_shrinkage(query @ memory.t(), k)
    return w @ memory


class MemoryQueue(nn.Module):
    """Space-aware FIFO memory queue: ``positions`` queues of ``slots`` items of ``dim`` features.

    The contents are buffers (saved with the weights, no gradient). Slots start as small uniform noise
    (+-1/sqrt(dim), as in the authors' code) so read-outs are defined before the queue has filled; the
    ``filled`` counter says how many slots hold real training features.
    """

    def __init__(self, positions: int, slots: int, dim: int) -> None:
        super().__init__()
        self.positions, self.slots, self.dim = int(positions), int(slots), int(dim)
        bound = 1.0 / math.sqrt(dim)
        self.register_buffer("memory", torch.empty(positions, slots, dim).uniform_(-bound, bound))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))

    def read(self, query: torch.Tensor, k: int) -> torch.Tensor:
        """Read-out for queries (N, positions, dim): each position reads only its own queue -> same shape."""
        mem = self.memory.detach().to(query.dtype)
        out = [memory_read(query[:, p], mem[p], k) for p in range(self.positions)]
        return torch.stack(out, dim=1)

    @torch.no_grad()
    def push(self, values: torch.Tensor) -> None:
        """Append ``values`` (N, positions, dim) in order; when full, the oldest items are overwritten."""
        values = values.detach().to(self.memory.dtype)
        n_total = values.shape[0]
        if values.shape[1:] != (self.positions, self.dim):
            raise ValueError(f"queue expects (N, {self.positions}, {self.dim}), got {tuple(values.shape)}")
        values = values[-self.slots:]  # of a batch larger than the queue only the newest items survive
        n = values.shape[0]
        start = (int(self.ptr) + n_total - n) % self.slots
        idx = (start + torch.arange(n, device=values.device)) % self.slots
        self.memory[:, idx] = values.transpose(0, 1)
        self.ptr.fill_((start + n) % self.slots)
        self.filled.fill_(min(self.slots, int(self.filled) + n_total))

    def items(self, position: int) -> torch.Tensor:
        """The real items of queue ``position``, oldest first (filled, dim)."""
        mem = self.memory[position]
        if int(self.filled) < self.slots:
            return mem[: int(self.filled)]
        return torch.roll(mem, shifts=-int(self.ptr), dims=0)


class MemoryMatrixBlock(nn.Module):
    """Learned space-aware memory matrices on a feature map (student decoder, authors' code).

    Args:
        channels, size: the feature map (N, channels, size, size) it is applied to.
        slots: items per matrix.
        k: Gumbel shrinkage top-k.
        grid: the map is cut into grid x grid sub-windows, one matrix per sub-window position.
        ratio: training-time probability that a spatial position takes the memory read-out (else the input).
    """

    def __init__(self, channels: int, size: int, slots: int = 200, k: int = 5, grid: int = 2,
                 ratio: float = 0.95) -> None:
        super().__init__()
        if size % grid:
            raise ValueError(f"feature size {size} is not divisible by the memory grid {grid}")
        self.grid, self.k, self.ratio, self.win = grid, k, float(ratio), size // grid
        dim = channels * self.win**2
        bound = 1.0 / math.sqrt(dim)
        self.memory = nn.Parameter(torch.empty(grid * grid, slots, dim).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g, s = self.grid, self.win
        tokens = x.reshape(n, c, g, s, g, s).permute(0, 2, 4, 1, 3, 5).reshape(n, g * g, c * s * s)
        mem = self.memory.to(tokens.dtype)
        out = torch.stack([memory_read(tokens[:, p], mem[p], self.k) for p in range(g * g)], dim=1)
        out = out.reshape(n, g, g, c, s, s).permute(0, 3, 1, 4, 2, 5).reshape(n, c, h, w)
        if self.training and self.ratio < 1.0:
            mask = torch.bernoulli(torch.full((n, 1, h, w), self.ratio, device=x.device, dtype=x.dtype))
            out = mask * out + (1.0 - mask) * x
        return out
