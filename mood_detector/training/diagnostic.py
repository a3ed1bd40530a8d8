"""Has an FPI model learned its task? A fixed probe set of FPI examples and trivial predictors to beat.

The probe set is made once from given volumes (held out from training where there are enough of them) with a
fixed seed, so every epoch and every run is measured on the same examples. Reported (:class:`Diagnosis`):

* ``loss``: the model's task loss (CE in discrete mode, BCE in continuous mode) on the probe set;
* ``const_loss``: the best *constant* predictor (the probe set's own class frequencies / mean label: what a
  model that outputs the same thing everywhere reaches at best);
* ``prior_loss``: the best *position-only* predictor (per-pixel class frequencies / mean label, cross-fitted
  on the two halves of the probe set): what "learned where patches usually are" reaches;
* ``score_in`` / ``score_out``: mean pixel score inside the patches (where the label is > 0) and outside;
* ``patch_auroc``: AUROC of the pixel score for inside vs outside pixels (0.5 = no separation);
* ``class_acc``: per-class accuracy of the arg-max class (discrete mode).

docs/fpi.md says what "clearly better" turned out to mean for the bundled models.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.nn import functional as F

from mood_detector.evaluation.metrics import counts_from_scores, roc_auc
from mood_detector.tasks.fpi import CLASS_VALUES, FPIBatch, FPIConfig, fpi_pair, labels_to_classes, logits_to_score
from mood_detector.training.data import nonempty

log = logging.getLogger(__name__)


@dataclass
class Diagnosis:
    """Probe-set numbers for one model (see the module docstring)."""

    loss: float
    const_loss: float
    prior_loss: float
    score_in: float
    score_out: float
    patch_auroc: float
    class_acc: list[float] = field(default_factory=list)
    n_examples: int = 0

    @property
    def learned(self) -> bool:
        """The model beats both trivial predictors and separates inside from outside (see docs/fpi.md)."""
        return (self.loss < 0.9 * self.const_loss and self.loss < self.prior_loss and self.patch_auroc > 0.75
                and self.score_in > 2 * self.score_out)

    def as_row(self) -> dict[str, float | str]:
        d = asdict(self)
        d["class_acc"] = " ".join(f"{a:.3f}" for a in self.class_acc)
        return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in d.items()}

    def summary(self) -> str:
        acc = f" class_acc [{' '.join(f'{a:.2f}' for a in self.class_acc)}]" if self.class_acc else ""
        return (f"probe loss {self.loss:.4f} (constant {self.const_loss:.4f}, position prior {self.prior_loss:.4f}); "
                f"score in/out {self.score_in:.3f}/{self.score_out:.3f}; patch AUROC {self.patch_auroc:.3f}{acc}")


def probe_slices(stacks: Sequence[np.ndarray], rng: np.random.Generator, n_examples: int = 64
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Paired float32 slices (a, b), each (n, H, W), for a probe set: consecutive volumes of ``stacks`` (S, H, W)
    are paired and ``n_examples // 2`` slice indices, non-empty in both, are drawn over the whole set."""
    if len(stacks) < 2:
        raise ValueError("the probe set needs at least two volumes")
    pairs = [(stacks[i], stacks[i + 1]) for i in range(0, len(stacks) - 1, 2)]
    per_pair = max(1, (n_examples // 2) // len(pairs))
    a_all, b_all = [], []
    for a, b in pairs:
        n = min(len(a), len(b))
        keep = np.flatnonzero(nonempty(a[:n]) & nonempty(b[:n]))
        if keep.size == 0:
            continue
        idx = np.sort(rng.choice(keep, size=min(per_pair, keep.size), replace=False))
        a_all.append(np.asarray(a[idx], dtype=np.float32))
        b_all.append(np.asarray(b[idx], dtype=np.float32))
    if not a_all:
        raise ValueError("the probe volumes have no slice that is non-empty in both of a pair")
    return np.concatenate(a_all), np.concatenate(b_all)


def make_probe_set(stacks: Sequence[np.ndarray], task: FPIConfig, n_examples: int = 64, seed: int = 12345) -> FPIBatch:
    """Fixed FPI examples from slice stacks (S, H, W) of at least two volumes (:func:`probe_slices`), each
    slice pair giving two examples."""
    a, b = probe_slices(stacks, np.random.default_rng(seed), n_examples)
    return fpi_pair(torch.from_numpy(a), torch.from_numpy(b), task, torch.Generator().manual_seed(seed))


def trivial_losses(labels: torch.Tensor, classes: int) -> tuple[float, float]:
    """(best constant, best position-only) loss on ``labels`` (N, H, W) for a model with ``classes`` outputs.

    The constant is the labels' own class frequencies (mean label). The position-only predictor is fitted by
    two-fold cross-fitting (per-pixel frequencies of the even examples score the odd ones and vice versa,
    with add-0.1 smoothing), so it is not credited for memorising the probe set's own patches."""
    eps = 1e-6
    halves = (labels[0::2], labels[1::2])
    if classes == 1:
        def bce(y: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
            p = p.clamp(eps, 1 - eps)
            return -(y * p.log() + (1 - y) * (1 - p).log())

        const = float(bce(labels, labels.mean().expand_as(labels)).mean())
        prior = [bce(y, ((fit.sum(0) + 0.1) / (len(fit) + 0.2)).expand_as(y)) for y, fit in zip(halves, halves[::-1])]
        return const, float(torch.cat([p.flatten() for p in prior]).mean())
    onehot = F.one_hot(labels_to_classes(labels), classes).float()          # (N, H, W, C)
    const = onehot.mean((0, 1, 2)).clamp_min(eps)
    const_loss = float(-(onehot * const.log()).sum(-1).mean())
    hot = (onehot[0::2], onehot[1::2])
    losses = []
    for y, fit in zip(hot, hot[::-1]):
        freq = (fit.sum(0) + 0.1) / (len(fit) + 0.1 * classes)              # (H, W, C)
        losses.append(-(y * freq.log()).sum(-1).flatten())
    return const_loss, float(torch.cat(losses).mean())


@torch.no_grad()
def diagnose(net: torch.nn.Module, probe: FPIBatch, batch_size: int = 16,
             device: torch.device | str = "cpu") -> Diagnosis:
    """Measure ``net`` (logits (N, C, H, W)) on ``probe``; the net is put in eval mode and restored after."""
    was_training = net.training
    # the network's dtype: float32, or float64 when trained in it (the distributed tests)
    dtype = next((p.dtype for p in net.parameters()), probe.images.dtype)
    net.eval()
    try:
        logits = torch.cat([net(probe.images[i:i + batch_size].to(device, dtype)).float().cpu()
                            for i in range(0, len(probe.images), batch_size)])
    finally:
        net.train(was_training)
    labels = probe.labels
    classes = logits.shape[1]
    if classes == 1:
        loss = float(F.binary_cross_entropy_with_logits(logits[:, 0], labels))
        acc: list[float] = []
    else:
        target = labels_to_classes(labels)
        loss = float(F.cross_entropy(logits, target))
        pred = logits.argmax(1)
        acc = [float((pred[target == c] == c).float().mean()) if (target == c).any() else float("nan")
               for c in range(classes)]
    const_loss, prior_loss = trivial_losses(labels, classes)
    score = logits_to_score(logits)
    inside = labels > 0
    s_in = float(score[inside].mean()) if inside.any() else float("nan")
    s_out = float(score[~inside].mean())
    auroc = roc_auc(counts_from_scores(score.numpy().ravel().astype(np.float64), inside.numpy().ravel()))
    return Diagnosis(loss, const_loss, prior_loss, s_in, s_out, float(auroc), acc, len(labels))


def write_row(path: Path, epoch: int, d: Diagnosis) -> None:
    """Append ``d`` as one CSV row (header on first write)."""
    import csv

    row = {"epoch": epoch, **d.as_row()}
    new = not path.exists()
    with path.open("a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)


__all__ = ["CLASS_VALUES", "Diagnosis", "diagnose", "make_probe_set", "probe_slices", "trivial_losses", "write_row"]
