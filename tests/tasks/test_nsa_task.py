import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from mood_detector.tasks.nsa import NSAConfig, irregular_shape, nsa_example, nsa_pair, poisson_blend


def _stack(n, h, w, seed):
    """Slices with a zero border (background) around random tissue."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, h, w), np.float32)
    x[:, 3:-3, 3:-3] = 0.2 + 0.6 * rng.random((n, h - 6, w - 6))
    return x


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 3), h=st.integers(16, 48), w=st.integers(16, 48), seed=st.integers(0, 10_000))
def test_pair_shapes_ranges_and_background(n, h, w, seed):
    a, b = _stack(n, h, w, seed), _stack(n, h, w, seed + 1)
    out = nsa_pair(a, b, NSAConfig(), np.random.default_rng(seed))
    assert out.images.shape == (2 * n, h, w) and out.labels.shape == (2 * n, h, w)
    assert out.images.dtype == np.float32 and out.labels.dtype == np.float32
    assert out.images.min() >= 0 and out.images.max() <= 1 and out.labels.min() >= 0 and out.labels.max() <= 1
    dst = np.concatenate([a, b])
    # background (<= 0) is never changed; labels are 0 beyond the label smoothing's reach from every changed
    # pixel: the separable Gaussian (truncate 4 sigma, sigma 1 pixel) reaches 4 pixels along each axis, a square,
    # so the distance is the chessboard one (a Euclidean 5 missed the square's corners: 4 * sqrt(2) > 5)
    assert np.array_equal(out.images[dst <= 0], dst[dst <= 0])
    for x, y, d in zip(out.images, out.labels, dst):
        far = ndimage.distance_transform_cdt(x == d, metric="chessboard") > 4
        assert not y[far].any()


def test_label_follows_the_change():
    """Pixels that changed much get labels near 1, unchanged pixels far from a patch get 0, and the label is a
    monotone function of the (smoothed) change: its logistic equation holds."""
    cfg = NSAConfig(label_sigma=0.0, p_intensity=1.0, p_poisson=0.0)
    a, b = _stack(4, 64, 64, 0), _stack(4, 64, 64, 1)
    rng = np.random.default_rng(3)
    for i in range(4):
        x, y = nsa_example(a[i], b[i], cfg, rng)
        change = np.abs(x - a[i])
        changed = change > 0
        assert changed.any()
        expect = 1 / (1 + np.exp(-cfg.label_k * (change - cfg.label_x0)))
        np.testing.assert_allclose(y[changed], expect[changed], rtol=1e-5)
        assert not y[~changed].any()
        assert y[change > 0.2].min() > 0.99


def test_poisson_blend_is_exact():
    rng = np.random.default_rng(0)
    dst = rng.random((20, 31))
    inner = np.zeros_like(dst)
    inner[1:-1, 1:-1] = rng.random((18, 29))
    # full mask, content equal to dst on the border: the blend reproduces the content exactly
    np.testing.assert_allclose(poisson_blend(dst, dst + inner, np.ones_like(dst)), dst + inner, atol=1e-9)
    # empty mask: nothing changes
    np.testing.assert_allclose(poisson_blend(dst, dst + inner, np.zeros_like(dst)), dst, atol=1e-12)
    # a constant offset has no gradient: a gradient-domain blend ignores it
    np.testing.assert_allclose(poisson_blend(dst, dst + 0.5, np.ones_like(dst)), dst, atol=1e-9)


def test_content_comes_from_elsewhere():
    """With intensity, texture and flips off and a constant destination, the patch holds the source's values
    (another subject), blended into the destination."""
    cfg = NSAConfig(p_intensity=0, p_texture=0, p_flip=0, p_poisson=0, scale=(1.0, 1.0), label_sigma=0)
    a = np.zeros((64, 64), np.float32)
    a[4:-4, 4:-4] = 0.3
    b = np.zeros((64, 64), np.float32)
    b[4:-4, 4:-4] = 0.9
    x, y = nsa_example(a, b, cfg, np.random.default_rng(1))
    assert np.isclose(x.max(), 0.9, atol=1e-3) and y.max() > 0.99


@pytest.mark.parametrize("noise", [0.0, 0.35])
def test_irregular_shape_fills_the_box(noise):
    s = irregular_shape(24, 40, np.random.default_rng(0), noise)
    assert s.shape == (24, 40) and set(np.unique(s)) <= {0.0, 1.0} and 0.3 < s.mean() < 0.95


def test_config_checks():
    with pytest.raises(ValueError, match="max_patches"):
        NSAConfig(max_patches=0)
    with pytest.raises(ValueError, match="half_width"):
        NSAConfig(half_width=(0.3, 0.2))
    with pytest.raises(ValueError, match="p_texture"):
        NSAConfig(p_texture=1.5)
