"""The dataset kind of a volume: canonical cubes decide, otherwise the intensities where they tell, else the shape."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mood_detector.kinds import CT_AIR_FRACTION, KINDS, air_fraction, guess_kind, is_canonical, kind_for_shape

CANONICAL = [(k.size,) * 3 for k in KINDS.values()]
edges = st.integers(min_value=1, max_value=1024)
shapes = st.tuples(edges, edges, edges)


def _ct(shape=(40, 40, 24), air: float = 0.3) -> np.ndarray:
    """A CT-like volume in Hounsfield units: soft tissue at 40 HU, the first ``air`` share of rows air."""
    vol = np.full(shape, 40.0, dtype=np.float32)
    vol[: int(round(air * shape[0]))] = -1024.0
    return vol


@pytest.mark.parametrize("shape", CANONICAL)
def test_canonical_cube_decides_without_a_reason(shape):
    kind, reason = guess_kind(shape, np.full((2, 2, 2), -1024.0, dtype=np.float32))  # the data cannot override
    assert reason is None and kind is kind_for_shape(shape)


@settings(max_examples=50, deadline=None)
@given(st.sampled_from(CANONICAL), st.floats(-3000, 3000), st.floats(0, 1))
def test_canonical_shapes_never_warn(shape, low, share):
    data = np.full((4, 4, 4), 10.0, dtype=np.float32)
    data.flat[: int(share * data.size)] = low
    assert guess_kind(shape, data)[1] is None
    assert guess_kind(shape)[1] is None


@settings(max_examples=100, deadline=None)
@given(shapes)
def test_other_shapes_always_give_a_reason_naming_the_shape(shape):
    if is_canonical(shape):
        return
    kind, reason = guess_kind(shape)
    assert kind is kind_for_shape(shape)
    assert reason is not None and "x".join(map(str, shape)) in reason and "256³/512³" in reason


@settings(max_examples=60, deadline=None)
@given(shapes.filter(lambda s: not is_canonical(s)), st.floats(0.0, 1.0))
def test_normalised_data_fall_back_to_the_shape_rule(shape, scale):
    """Data already in [0, 1] cannot tell CT from MRI: the shape decides, and the reason says so."""
    data = np.linspace(0.0, scale, 1000, dtype=np.float32).reshape(10, 10, 10)
    kind, reason = guess_kind(shape, data)
    assert kind is kind_for_shape(shape)
    assert "do not tell" in reason


def test_raw_ct_of_a_brain_sized_shape_goes_to_abdom():
    """A raw CT abdomen of 256x256x157 in HU: the shape rule says brain, the air says CT."""
    vol = _ct((256, 256, 157))
    assert kind_for_shape(vol.shape).name == "brain"
    kind, reason = guess_kind(vol.shape, vol)
    assert kind.name == "abdom"
    assert "256x256x157" in reason and "-1024" in reason and "Hounsfield" in reason


def test_mri_intensities_keep_the_shape_rule():
    """Raw MRI magnitudes (0 .. thousands) hold no air in HU: the shape decides."""
    vol = np.random.default_rng(0).uniform(0, 3000, (60, 64, 50)).astype(np.float32)
    kind, reason = guess_kind(vol.shape, vol)
    assert kind.name == "brain" and "do not tell" in reason and "nearest 256" in reason


def test_a_few_stray_negative_voxels_do_not_make_ct():
    vol = np.random.default_rng(1).uniform(0, 1000, (50, 50, 50)).astype(np.float32)
    vol.flat[: int(vol.size * CT_AIR_FRACTION / 2)] = -1024.0
    assert guess_kind(vol.shape, vol)[0].name == "brain"


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 40), st.integers(2, 40), st.integers(2, 40), st.floats(0.05, 1.0),
       st.sampled_from([-3024.0, -2048.0, -1024.0, -1000.0, -600.0]))
def test_enough_air_is_ct_whatever_the_shape(a, b, c, air, value):
    shape = (a, b, c)
    vol = np.full(shape, 40.0, dtype=np.float32)
    vol.flat[: max(1, int(air * vol.size))] = value
    kind, reason = guess_kind(shape, vol)
    assert kind.name == "abdom" and "Hounsfield" in reason


def test_air_fraction_subsamples_large_volumes():
    """A strided subsample estimates the share of air in a volume over the sample cap."""
    vol = np.zeros((160, 160, 160), dtype=np.int16)  # 4.1 M voxels > the 1 M sample
    vol[:, :, :40] = -1024
    assert air_fraction(vol) == pytest.approx(0.25, abs=0.02)
    assert air_fraction(np.zeros((0, 3, 3), dtype=np.float32)) == 0.0
