"""The Foreign Patch Interpolation self-supervised task (FPI paper, Eqs. 1-7).

Two subjects' slices A and B, paired by slice index, share one square patch per slice. Inside it both images
get the same convex combination ``P = (1 - f) A + f B``. Placed into A the foreign (from-B) fraction is ``f``;
placed into B it is ``1 - f``. Both are training examples (both directions of the swap). Where the two source
pixels are equal (``|A - B| <= tol``) nothing foreign was introduced and the label is 0 (Eq. 5).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: The five class values of discrete mode (class c stands for foreign fraction CLASS_VALUES[c]).
CLASS_VALUES = (0.0, 0.25, 0.5, 0.75, 1.0)
#: Discrete interpolation factors; the reverse direction supplies 1 - f, so all five classes occur.
DISCRETE_FACTORS = (0.0, 0.25, 0.5, 0.75)


@dataclass(frozen=True)
class FPIConfig:
    """Sampling parameters of the FPI task.

    Attributes:
        mode: ``continuous`` (f ~ U(0.05, 0.95), sigmoid + BCE) or ``discrete`` (f in {0,.25,.5,.75}, 5-class CE).
        core: fraction of the slice (centred) in which patch centres are drawn (brain 0.5, abdomen 0.8).
        half_width: (low, high) patch half-width as a fraction of the slice size, uniform in [low, high).
        equal_tol: pixels with ``|A - B| <= equal_tol`` get label 0.
    """

    mode: str = "continuous"
    core: float = 0.5
    half_width: tuple[float, float] = (0.05, 0.20)
    equal_tol: float = 0.0

    @classmethod
    def for_kind(cls, kind: str, mode: str = "continuous", equal_tol: float = -1.0) -> "FPIConfig":
        """The task for dataset ``kind`` (:data:`KIND_TASK`); ``equal_tol`` < 0 = the kind's."""
        core, tol = KIND_TASK[kind]
        return cls(mode=mode, core=core, equal_tol=tol if equal_tol < 0 else equal_tol)


#: kind -> (core, equal_tol): patch centres within the central 50% of a brain slice (the brain fills the middle)
#: and 80% of an abdominal one; abdominal CT has near-equal soft tissue values, so sources closer than 1e-3 count
#: as equal when labelling
KIND_TASK: dict[str, tuple[float, float]] = {"brain": (0.5, 0.0), "abdom": (0.8, 1e-3)}


@dataclass
class FPIBatch:
    """A batch of FPI examples: ``images`` (2N, 1, H, W), ``labels`` (2N, H, W) foreign fractions in [0, 1],
    and the patch boxes (2N, 4) as (row0, row1, col0, col1), end-exclusive, and factors (2N,)."""

    images: torch.Tensor
    labels: torch.Tensor
    boxes: torch.Tensor
    factors: torch.Tensor


def sample_patches(n: int, height: int, width: int, cfg: FPIConfig, generator: torch.Generator | None = None,
                   device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``n`` square patches and factors. Returns boxes (n, 4) int64 and factors (n,) float32."""
    size = min(height, width)
    u = torch.rand(n, 5, generator=generator)
    lo, hi = cfg.half_width
    half = torch.clamp((lo + (hi - lo) * u[:, 0]) * size, min=1.0).floor()
    margin = (1.0 - cfg.core) / 2.0
    cr = ((margin + cfg.core * u[:, 1]) * height).floor()
    cc = ((margin + cfg.core * u[:, 2]) * width).floor()
    r0 = (cr - half).clamp(min=0)
    r1 = (cr + half).clamp(max=height)
    c0 = (cc - half).clamp(min=0)
    c1 = (cc + half).clamp(max=width)
    boxes = torch.stack([r0, r1, c0, c1], dim=1).long()
    if cfg.mode == "continuous":
        factors = 0.05 + 0.9 * u[:, 3]
    elif cfg.mode == "discrete":
        idx = torch.clamp((u[:, 4] * len(DISCRETE_FACTORS)).long(), max=len(DISCRETE_FACTORS) - 1)
        factors = torch.tensor(DISCRETE_FACTORS)[idx]
    else:
        raise ValueError(f"unknown FPI mode {cfg.mode!r}")
    return boxes.to(device), factors.float().to(device)


def box_masks(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Boolean masks (n, H, W) that are True inside each end-exclusive box."""
    rows = torch.arange(height, device=boxes.device)
    cols = torch.arange(width, device=boxes.device)
    in_r = (rows[None, :] >= boxes[:, 0:1]) & (rows[None, :] < boxes[:, 1:2])
    in_c = (cols[None, :] >= boxes[:, 2:3]) & (cols[None, :] < boxes[:, 3:4])
    return in_r[:, :, None] & in_c[:, None, :]


def fpi_pair(a: torch.Tensor, b: torch.Tensor, cfg: FPIConfig, generator: torch.Generator | None = None,
             boxes: torch.Tensor | None = None, factors: torch.Tensor | None = None) -> FPIBatch:
    """Make FPI examples from paired slices ``a`` and ``b`` of shape (N, H, W).

    Returns 2N examples: the first N are A with the patch (foreign fraction ``f``), the next N are B with the
    same patch (foreign fraction ``1 - f``). ``boxes``/``factors`` may be given to fix the randomness.
    """
    if a.shape != b.shape or a.dim() != 3:
        raise ValueError(f"a and b must both be (N, H, W); got {tuple(a.shape)} and {tuple(b.shape)}")
    n, h, w = a.shape
    if boxes is None or factors is None:
        boxes, factors = sample_patches(n, h, w, cfg, generator, device=a.device)
    mask = box_masks(boxes, h, w)
    f = factors.to(a.dtype)[:, None, None]
    patch = (1 - f) * a + f * b
    differs = (a - b).abs() > cfg.equal_tol
    a2 = torch.where(mask, patch, a)
    b2 = torch.where(mask, patch, b)
    la = torch.where(mask & differs, f.expand_as(a), torch.zeros_like(a))
    lb = torch.where(mask & differs, (1 - f).expand_as(b), torch.zeros_like(b))
    return FPIBatch(images=torch.cat([a2, b2])[:, None], labels=torch.cat([la, lb]),
                    boxes=torch.cat([boxes, boxes]), factors=torch.cat([factors, 1 - factors]))


def labels_to_classes(labels: torch.Tensor) -> torch.Tensor:
    """Map foreign fractions in {0, .25, .5, .75, 1} to class indices 0..4 (nearest class)."""
    return torch.round(labels * (len(CLASS_VALUES) - 1)).long().clamp(0, len(CLASS_VALUES) - 1)


def logits_to_score(logits: torch.Tensor) -> torch.Tensor:
    """Pixel anomaly score from network logits (N, C, H, W): sigmoid for C=1, else the expected foreign
    fraction sum_c p_c * a_c over the class values."""
    if logits.shape[1] == 1:
        return torch.sigmoid(logits[:, 0].float())
    probs = torch.softmax(logits.float(), dim=1)
    values = torch.linspace(0.0, 1.0, logits.shape[1], device=logits.device, dtype=probs.dtype)
    return torch.einsum("nchw,c->nhw", probs, values)
