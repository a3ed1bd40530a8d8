"""The relative-perceptual-L1 loss of the DPA paper (Sec. 3.1) and its progressive-growing form (Sec. 3.2).

``L(x, y) = mean|f^(x) - f^(y)| / mean|f^(x)|`` per image, with ``f^ = (f - mu) / sigma`` the features of one
layer normalised per channel by statistics of the training data (``feature_norm="channel"``, the paper's text)
or ``f^ = f`` the raw features (``feature_norm="none"``, the authors' code); the denominator is detached (as in
the authors' code), so it scales the gradient but is not differentiated. The same quantity is the image score; the
pixel map is the channel mean of ``|f^(x) - f^(y)|`` upsampled bilinearly to the image size.

While resolution ``r`` fades in with weight ``alpha`` the loss is
``alpha * L_{f2}(x, y) + (1 - alpha) * L_{f1}(down(x), down(y))`` with ``f1`` the previous stage's (shallower)
layer and ``down`` a 2x2 average (= bilinear x0.5).
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn
from torch.nn import functional as F

from mood_detector.models.dpa.features import FeatureExtractor
from mood_detector.training.loop import at_least_float32

EPS = 1e-8
#: per-channel feature normalisation: ``channel`` = (f - mu) / sigma (paper Sec. 3.1), ``none`` = raw f (authors' code)
FEATURE_NORMS = ("channel", "none")


def relative_l1(fx: torch.Tensor, fy: torch.Tensor) -> torch.Tensor:
    """Per-sample ``mean|fx - fy| / mean|fx|`` over (C, H, W); the denominator is detached."""
    fx, fy = at_least_float32(fx), at_least_float32(fy)  # the ratio in float32 also under bf16 autocast
    dims = tuple(range(1, fx.dim()))
    num = (fx - fy).abs().mean(dim=dims)
    den = fx.abs().mean(dim=dims).detach().clamp_min(EPS)
    return num / den


class FeatureStats(nn.Module):
    """Per-channel mean / std of one layer's features over training images (float64 accumulation).

    Channels that never vary (e.g. dead ReLUs) would divide by ~0; their std is floored at 1% of the median
    channel std so one silent channel cannot dominate the loss on unusual inputs."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("std", torch.ones(channels))
        self._n = 0
        self._s1 = torch.zeros(channels, dtype=torch.float64)
        self._s2 = torch.zeros(channels, dtype=torch.float64)

    @torch.no_grad()
    def update(self, f: torch.Tensor) -> None:
        f = f.detach().to("cpu", torch.float64)
        self._s1 += f.sum(dim=(0, 2, 3))
        self._s2 += (f * f).sum(dim=(0, 2, 3))
        self._n += f.shape[0] * f.shape[2] * f.shape[3]

    @torch.no_grad()
    def finish(self) -> "FeatureStats":
        if self._n == 0:
            raise ValueError("no features seen: cannot compute feature statistics")
        mean = self._s1 / self._n
        var = (self._s2 / self._n - mean * mean).clamp_min(0.0)
        std = var.sqrt()
        floor = max(float(std.median()) * 1e-2, 1e-6)
        self.mean.copy_(mean.float())
        self.std.copy_(std.clamp_min(floor).float())
        return self

    def normalise(self, f: torch.Tensor) -> torch.Tensor:
        return (f - self.mean.view(1, -1, 1, 1).to(f.dtype)) / self.std.view(1, -1, 1, 1).to(f.dtype)


@torch.no_grad()
def compute_stats(extractor: FeatureExtractor, layer: str, batches: Iterable[torch.Tensor],
                  device: torch.device | str = "cpu") -> FeatureStats:
    """:class:`FeatureStats` of ``layer`` over image ``batches`` (N, 1, H, W) in [0, 1]."""
    stats: FeatureStats | None = None
    dtype = next(extractor.parameters()).dtype  # float32; float64 in the fixed-seed test
    for x in batches:
        f = extractor(x.to(device, dtype), layer)
        if stats is None:
            stats = FeatureStats(f.shape[1])
        stats.update(f)
    if stats is None:
        raise ValueError("no training batches to compute feature statistics")
    return stats.finish().to(device)


class PerceptualLoss(nn.Module):
    """Relative-perceptual-L1 with a frozen extractor and, with ``feature_norm="channel"``, per-(resolution,
    layer) feature statistics (``feature_norm="none"`` uses the raw features and needs no statistics)."""

    def __init__(self, extractor: FeatureExtractor, feature_norm: str = "channel") -> None:
        super().__init__()
        if feature_norm not in FEATURE_NORMS:
            raise ValueError(f"unknown feature_norm {feature_norm!r}; choose one of {', '.join(FEATURE_NORMS)}")
        self.extractor = extractor
        self.feature_norm = feature_norm
        self.stats: dict[tuple[int, str], FeatureStats] = {}

    @property
    def normalised(self) -> bool:
        """Whether features are normalised per channel (and statistics are needed)."""
        return self.feature_norm == "channel"

    def features(self, x: torch.Tensor, layer: str) -> torch.Tensor:
        """Features ``f^(x)`` of ``layer``: raw, or normalised by the statistics of the resolution of ``x``."""
        if not self.normalised:
            return self.extractor(x, layer)
        key = (int(x.shape[-1]), layer)
        if key not in self.stats:
            raise KeyError(f"no feature statistics for resolution {key[0]} layer {layer}")
        return self.stats[key].normalise(self.extractor(x, layer))

    def per_sample(self, x: torch.Tensor, y: torch.Tensor, layer: str) -> torch.Tensor:
        """Per-image relative-perceptual-L1 of reconstruction ``y`` against input ``x``."""
        with torch.no_grad():
            fx = self.features(x, layer)
        return relative_l1(fx, self.features(y, layer))

    def progressive(self, x: torch.Tensor, y: torch.Tensor, layer: str, prev_layer: str | None,
                    alpha: float = 1.0) -> torch.Tensor:
        """Batch-mean loss with the fade of the loss level (paper Sec. 3.2)."""
        loss = self.per_sample(x, y, layer).mean()
        if alpha < 1.0 and prev_layer is not None:
            low = self.per_sample(F.avg_pool2d(x, 2), F.avg_pool2d(y, 2), prev_layer).mean()
            loss = alpha * loss + (1.0 - alpha) * low
        return loss

    @torch.no_grad()
    def score(self, x: torch.Tensor, y: torch.Tensor, layer: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw scores: per-image relative-perceptual-L1 (N,) and the pixel map (N, H, W) = channel mean of
        ``|f^(x) - f^(y)|`` upsampled bilinearly to the size of ``x``."""
        fx, fy = at_least_float32(self.features(x, layer)), at_least_float32(self.features(y, layer))
        diff = (fx - fy).abs()
        image = relative_l1(fx, fy)
        pixel = F.interpolate(diff.mean(dim=1, keepdim=True), size=tuple(x.shape[-2:]), mode="bilinear",
                              align_corners=False)[:, 0]
        return image, pixel
