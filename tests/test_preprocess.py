"""The shared foreground rule and intensity normalisation (mood_detector/preprocess.py)."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mood_detector.preprocess import foreground_mask, normalise_intensity, otsu_threshold, prepare, scale_unit


def _ball(shape, centre, radius):
    idx = np.indices(shape, dtype=np.float32)
    return ((idx - np.array(centre, dtype=np.float32).reshape(3, 1, 1, 1)) ** 2).sum(0) <= radius**2


def _near(mask, voxels=3):
    """``mask`` grown by ``voxels`` (the rule's smoothing and margin may add a thin rim)."""
    from scipy import ndimage

    return ndimage.binary_dilation(mask, iterations=voxels)


def _head(shape=(64, 64, 64), noise=0.0, seed=0):
    """A bright shell (scalp) around a darker 'brain' with a dark hole (ventricle), optional Rayleigh noise."""
    rng = np.random.default_rng(seed)
    c = [s / 2 for s in shape]
    head = _ball(shape, c, 24)
    vol = np.where(head, 300.0, 0.0) + np.where(_ball(shape, c, 20), -150.0, 0.0)
    vol[_ball(shape, c, 5)] = 20.0  # a dark cavity inside: must be filled
    if noise:
        vol = vol + np.hypot(rng.normal(0, noise, shape), rng.normal(0, noise, shape))
    return vol.astype(np.float32), head


def test_otsu_splits_two_modes():
    x = np.concatenate([np.full(1000, 10.0), np.full(500, 90.0)])
    assert 10.0 < otsu_threshold(x) <= 90.0


def test_mask_of_a_noisy_head_is_the_head():
    vol, head = _head(noise=25.0)
    m = foreground_mask(vol)
    assert m[head].mean() > 0.99  # the whole head, the dark cavity included
    assert m[~_near(head)].mean() < 0.01  # the noisy background is not the object


def test_mask_of_zero_background_and_constant_volume():
    vol, head = _head()
    m = foreground_mask(vol)
    assert m[head].all() and not m[~_near(head)].any()
    assert not foreground_mask(np.full((16, 16, 16), 3.0, np.float32)).any()


def test_ct_body_without_a_separate_table():
    shape = (64, 64, 64)
    hu = np.full(shape, -1000.0, np.float32)
    body = _ball(shape, (32, 32, 36), 20)
    hu[body] = 40.0
    hu[_ball(shape, (32, 32, 36), 6)] = -850.0  # lung-like air inside: part of the object
    hu[:, :, 8:11] = 300.0  # a table, separated from the body by air
    hu += np.random.default_rng(1).normal(0, 15, shape).astype(np.float32)
    m = foreground_mask(hu)
    assert m[body].mean() > 0.99
    assert m[:, :, 8:11].mean() < 0.05


def test_mask_of_a_large_volume_is_computed_reduced_and_matches_shape():
    vol, head = _head((200, 150, 130), noise=20.0)
    m = foreground_mask(vol)
    assert m.shape == vol.shape and m[head].mean() > 0.98 and m[~_near(head, 4)].mean() < 0.01


def test_normalise_maps_percentiles_and_zeroes_background():
    vol, head = _head(noise=25.0)
    x, m = prepare(vol)
    assert x.dtype == np.float32 and x.shape == vol.shape
    assert (x[~m] == 0).all()
    assert 0.0 <= x.min() and x.max() == 1.0
    # the same scan in other units (CT-like offset and scale) gives the same network input
    y, _ = prepare(vol * 7.0 - 1000.0)
    np.testing.assert_allclose(x, y, atol=1e-5)


def test_normalise_inplace_and_empty_mask():
    vol, _ = _head()
    z = normalise_intensity(vol.copy(), mask=np.zeros(vol.shape, bool))
    assert not z.any()
    a = vol.copy()
    out = normalise_intensity(a, inplace=True)
    assert out is a


def test_scale_unit_keeps_background():
    vol, head = _head(noise=25.0)
    s = scale_unit(vol)
    assert s.min() == 0.0 and s.max() == 1.0 and (s[~head] > 0).mean() > 0.5
    inside = np.clip(vol / vol.max(), 0, 1)
    assert scale_unit(inside) is not None and np.array_equal(scale_unit(inside), inside)


@settings(max_examples=25, deadline=None)
@given(arrays(np.float32, (12, 10, 9), elements=st.floats(-2000, 4000, width=32)))
def test_prepare_properties(vol):
    x, m = prepare(vol)
    assert x.shape == vol.shape and m.shape == vol.shape and m.dtype == bool
    assert np.isfinite(x).all() and x.min() >= 0.0 and x.max() <= 1.0
    assert (x[~m] == 0).all()


def test_minmax_scheme_keeps_earlier_models_inputs():
    from mood_detector.preprocess import scheme_of

    vol, head = _head(noise=25.0)
    x, m = prepare(vol, scheme="minmax")
    np.testing.assert_array_equal(x, scale_unit(vol))  # background kept, as those models were trained
    assert m[head].mean() > 0.99
    assert scheme_of({}) == "minmax" and scheme_of({"preprocess": "foreground"}) == "foreground"
    import pytest

    with pytest.raises(ValueError, match="preprocess"):
        scheme_of({"preprocess": "zscore"})


def test_scale_unit_inplace_keeps_one_copy():
    vol, _ = _head(noise=25.0)
    a = vol.copy()
    out = scale_unit(a, inplace=True)
    assert out is a and out.min() == 0.0 and out.max() == 1.0
    b = vol.copy()
    assert scale_unit(b) is not b and np.array_equal(scale_unit(b), out)  # without inplace the input is kept
