"""The DDAD anomaly scores on ensembles of reconstructions (paper Eqs. 3-7, the authors' code conventions).

Conventions (checked against the authors' ``trainer.py``/``test.py``):

* ``A_intra`` is ``torch.std`` over the K NDM reconstructions, i.e. the *sample* standard deviation (divisor
  K - 1). Paper Eq. 3 writes the population form (divisor K); the two differ by the constant factor
  ``sqrt(K / (K - 1))``, which changes no ranking. We follow the code the published numbers came from.
* ``A_inter = |mu_UDM - mu_NDM|`` (Eq. 4).
* AE-U (Eqs. 6-7): both are divided by ``sigma = sqrt(mean_k exp(logvar_k))`` of the NDM networks, i.e. the
  root of the mean predicted variance (the authors average the variances, then take the root), not the mean of
  the K predicted standard deviations.
* ``A_rec = (x - mu_NDM)^2`` (the authors' "Rec. (ensemble)"), divided by the mean NDM variance with AE-U.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from mood_detector.training.loop import at_least_float32


class Discrepancy(NamedTuple):
    """Raw pixel maps (N, 1, H, W): ``rec``, ``intra`` and ``inter`` (None without a UDM)."""

    rec: torch.Tensor
    intra: torch.Tensor
    inter: torch.Tensor | None


def discrepancy(x: torch.Tensor, ndm: torch.Tensor, udm: torch.Tensor | None = None,
                ndm_logvar: torch.Tensor | None = None) -> Discrepancy:
    """DDAD maps from reconstructions.

    Args:
        x: inputs (N, 1, H, W) in the networks' intensity range.
        ndm: NDM reconstructions (K, N, 1, H, W), K >= 2.
        udm: UDM reconstructions (K', N, 1, H, W) or None.
        ndm_logvar: AE-U log-variances of the NDM networks (K, N, 1, H, W) or None.
    """
    if ndm.dim() != 5 or ndm.shape[0] < 2:
        raise ValueError(f"ndm must be (K>=2, N, 1, H, W), got {tuple(ndm.shape)}")
    ndm = at_least_float32(ndm)
    mu_a = ndm.mean(0)
    intra = ndm.std(0, unbiased=True)
    rec = (at_least_float32(x) - mu_a) ** 2
    inter = None if udm is None else (at_least_float32(udm).mean(0) - mu_a).abs()
    if ndm_logvar is not None:
        var = torch.exp(at_least_float32(ndm_logvar)).mean(0)
        sigma = var.sqrt()
        intra = intra / sigma
        rec = rec / var
        inter = None if inter is None else inter / sigma
    return Discrepancy(rec, intra, inter)


def squash(raw: torch.Tensor, scale: float | torch.Tensor) -> torch.Tensor:
    """Map a non-negative raw score to [0, 1) by ``raw / (raw + scale)``: strictly increasing (no ranking is lost,
    nothing saturates), 0.5 at ``raw = scale``. ``scale`` is fitted on normal training slices (see
    ``DDADDetector``)."""
    s = torch.as_tensor(scale, dtype=torch.float32, device=raw.device).clamp_min(1e-12)
    raw = raw.float().clamp_min(0)
    return raw / (raw + s)
