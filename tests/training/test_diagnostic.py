import numpy as np
import torch
from torch import nn

from mood_detector.tasks.fpi import FPIConfig, labels_to_classes
from mood_detector.training.diagnostic import diagnose, make_probe_set, trivial_losses
from tests.conftest import blob_volume


class Oracle(nn.Module):
    """Returns logits that put all mass on the true class of a fixed probe set (looked up by call order)."""

    def __init__(self, labels: torch.Tensor) -> None:
        super().__init__()
        self.labels, self.i = labels, 0

    def forward(self, x):
        lab = self.labels[self.i:self.i + len(x)]
        self.i += len(x)
        return torch.nn.functional.one_hot(labels_to_classes(lab), 5).permute(0, 3, 1, 2).float() * 20


class Constant(nn.Module):
    def forward(self, x):
        out = torch.zeros(len(x), 5, *x.shape[-2:])
        out[:, 0] = 3.0
        return out


def probe():
    stacks = [blob_volume(seed=s) for s in range(4)]
    return make_probe_set(stacks, FPIConfig(mode="discrete"), n_examples=16, seed=3)


def test_probe_set_is_fixed_and_balanced_in_direction():
    p, q = probe(), probe()
    assert torch.equal(p.images, q.images) and torch.equal(p.labels, q.labels)
    assert len(p.images) == 16 and (p.labels > 0).any()


def test_oracle_beats_trivial_predictors_and_constant_does_not():
    p = probe()
    good = diagnose(Oracle(p.labels), p, batch_size=4)
    bad = diagnose(Constant(), p, batch_size=4)
    assert good.loss < 0.01 and good.patch_auroc > 0.99 and good.learned
    assert all(a > 0.99 for a in good.class_acc if not np.isnan(a))
    assert bad.loss >= bad.const_loss - 1e-6 and not bad.learned
    assert abs(bad.patch_auroc - 0.5) < 1e-6


def test_position_prior_is_cross_fitted():
    p = probe()
    const, prior = trivial_losses(p.labels, 5)
    assert const > 0 and prior > 0
    # the same patch in every example: its position is fully predictive, and the cross-fitted prior sees it
    k = int((p.labels.flatten(1).amax(1) > 0).nonzero()[0, 0])
    same = p.labels[k:k + 1].expand(64, -1, -1).clone()
    c, pr = trivial_losses(same, 5)
    assert pr < 0.6 * c
    c1, p1 = trivial_losses(same.clamp(0, 1), 1)
    assert p1 < 0.6 * c1
