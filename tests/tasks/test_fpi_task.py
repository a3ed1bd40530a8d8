import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mood_detector.tasks.fpi import (CLASS_VALUES, FPIConfig, box_masks, fpi_pair, labels_to_classes,
                                     logits_to_score, sample_patches)


def _pair(n, h, w, seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(n, h, w, generator=g)
    b = torch.rand(n, h, w, generator=g)
    a[:, :2] = 0.0  # some equal pixels (both zero) to exercise label truncation
    b[:, :2] = 0.0
    return a, b, g


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 3), h=st.integers(16, 48), w=st.integers(16, 48), seed=st.integers(0, 10_000),
       mode=st.sampled_from(["continuous", "discrete"]), core=st.sampled_from([0.5, 0.8]))
def test_label_equation(n, h, w, seed, mode, core):
    a, b, g = _pair(n, h, w, seed)
    cfg = FPIConfig(mode=mode, core=core)
    out = fpi_pair(a, b, cfg, g)
    assert out.images.shape == (2 * n, 1, h, w) and out.labels.shape == (2 * n, h, w)
    assert float(out.labels.min()) >= 0 and float(out.labels.max()) <= 1
    mask = box_masks(out.boxes[:n], h, w)
    f = out.factors[:n][:, None, None]
    # Eq. 1 inside the patch, untouched outside, in both directions
    np.testing.assert_allclose(out.images[:n, 0][mask], ((1 - f) * a + f * b).expand_as(a)[mask], atol=1e-6)
    np.testing.assert_allclose(out.images[n:, 0][mask], ((1 - f) * a + f * b).expand_as(a)[mask], atol=1e-6)
    assert torch.equal(out.images[:n, 0][~mask], a[~mask]) and torch.equal(out.images[n:, 0][~mask], b[~mask])
    # Eq. 5: label = foreign fraction in the patch where the sources differ, 0 elsewhere
    differs = (a - b).abs() > cfg.equal_tol
    exp_a = torch.where(mask & differs, f.expand_as(a), torch.zeros_like(a))
    exp_b = torch.where(mask & differs, (1 - f).expand_as(b), torch.zeros_like(b))
    assert torch.allclose(out.labels[:n], exp_a) and torch.allclose(out.labels[n:], exp_b)
    if mode == "discrete":
        vals = set(np.round(out.labels.unique().numpy(), 6).tolist())
        assert vals <= set(CLASS_VALUES)
    else:
        assert float(out.factors[:n].min()) >= 0.05 and float(out.factors[:n].max()) <= 0.95


@settings(max_examples=60, deadline=None)
@given(size=st.integers(16, 512), seed=st.integers(0, 10_000), core=st.sampled_from([0.5, 0.8]))
def test_patch_geometry(size, seed, core):
    g = torch.Generator().manual_seed(seed)
    boxes, _ = sample_patches(8, size, size, FPIConfig(core=core), g)
    centre_r = (boxes[:, 0] + boxes[:, 1]) / 2.0
    half = (boxes[:, 1] - boxes[:, 0]) / 2.0
    lo, hi = (1 - core) / 2 * size, (1 + core) / 2 * size
    assert bool(((boxes[:, 0] >= 0) & (boxes[:, 1] <= size)).all())
    # untruncated patches are centred in the core and have half-width in [5%, 20%) of the size
    full = (boxes[:, 0] > 0) & (boxes[:, 1] < size)
    assert bool((half[full] <= 0.2 * size).all()) and bool((half[full] >= max(1.0, np.floor(0.05 * size))).all())
    assert bool(((centre_r >= lo - 1) & (centre_r <= hi + 1))[full].all())


def test_classes_and_score():
    labels = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])
    assert labels_to_classes(labels).tolist() == [0, 1, 2, 3, 4]
    logits = torch.full((1, 5, 2, 2), -30.0)
    logits[:, 3] = 30.0  # certain of class 3 -> expected fraction 0.75
    assert torch.allclose(logits_to_score(logits), torch.full((1, 2, 2), 0.75))
    assert torch.allclose(logits_to_score(torch.zeros(1, 1, 2, 2)), torch.full((1, 2, 2), 0.5))
