"""The shared foreground rule and intensity normalisation (mood_detector/preprocess.py)."""

import numpy as np
import pytest
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


# --- dark regions of the object stay foreground -------------------------------------------------------------------
def _object(seed=2):
    """A generated object at 32^3: an ellipsoid with a sharp edge and texture (0.4-1), zero background."""
    from tests.conftest import blob_volume

    b = blob_volume((32, 32, 32), seed=seed)
    return np.where(b > 0, 0.4 + 0.6 * b, 0.0).astype(np.float32)


def _dark_sphere(vol, direction, radius=3.8):
    """``vol`` with a sphere set to 0 (a dark lesion; 3.8 = the largest synthetic outlier's radius at 32^3),
    centred on the object's surface along ``direction`` from the centre (``None``: at the centre), and the
    object voxels it darkened."""
    obj = vol > 0
    centre = np.array([15.5, 15.5, 15.5])
    if direction is not None:
        d = np.asarray(direction, dtype=float) / np.linalg.norm(direction)
        t = 0.0
        while obj[tuple(np.round(centre + (t + 0.5) * d).astype(int))]:
            t += 0.5
        centre = centre + t * d
    sphere = _ball(vol.shape, np.round(centre), radius)
    dark = vol.copy()
    dark[sphere] = 0.0
    return dark, sphere & obj


def test_dark_sphere_inside_the_object_stays_foreground():
    vol = _object()
    dark, lesion = _dark_sphere(vol, None)
    m = foreground_mask(dark)
    assert m[lesion].all() and not m[~_near(vol > 0)].any()


@pytest.mark.parametrize("direction", [(1, 1, 0), (1, 1, 1), (-1, 1, -1), (1, 0, 0)])
def test_dark_sphere_cutting_the_surface_stays_foreground(direction):
    """Half the sphere is outside the object, so the dark region opens to the outside and filling holes alone
    leaves it out where no slice along an axis encloses it (oblique surfaces); the closing encloses it. Only
    a thin lens at the mouth, where the outline bulged over the sphere, stays outside."""
    from scipy import ndimage

    vol = _object()
    dark, lesion = _dark_sphere(vol, direction)
    depth = ndimage.distance_transform_edt(vol > 0)  # below the object's surface, in voxels
    m = foreground_mask(dark)
    assert m[lesion & (depth >= 1.5)].all()
    assert m[lesion].mean() > 0.85
    assert not m[~_near(vol > 0)].any()  # no background beyond the object's own outline


def test_background_stays_out_of_generated_objects():
    """The closing adds no background beyond a voxel or two of the outline: a convex object and the abdominal
    phantom; an empty volume has no foreground."""
    from mood_detector.data.abdomen import make_abdomen_volume

    for vol in (_object(seed=4), make_abdomen_volume(32, seed=0, k=0)):
        obj = vol > 0.05
        m = foreground_mask(vol)
        assert m[obj].mean() > 0.99 and not m[~_near(obj, 2)].any()
    assert not foreground_mask(np.zeros((16, 16, 16), np.float32)).any()


def _brute_close(mask, radius):
    """The closing of ``close_ball`` by explicit binary dilation and erosion with its structuring element (an
    octahedron of radius r - round(r / 3) plus a cube of half-width round(r / 3)), outside = background."""
    from scipy import ndimage

    cube = int(round(radius / 3))
    octa = int(round(radius)) - cube
    se = ndimage.iterate_structure(ndimage.generate_binary_structure(3, 1), octa) if octa else np.ones((1, 1, 1), bool)
    if cube:
        se = ndimage.binary_dilation(np.pad(se, cube), np.ones((2 * cube + 1,) * 3, bool))
    pad = octa + cube + 1
    p = np.pad(mask, pad)
    closed = ndimage.binary_erosion(ndimage.binary_dilation(p, se), se, border_value=0)
    return closed[(slice(pad, -pad),) * 3]


@settings(max_examples=40, deadline=None)
@given(arrays(bool, (11, 9, 10), elements=st.booleans()), st.floats(0.0, 4.0))
def test_close_ball_is_the_closing_of_its_structuring_element(mask, radius):
    from mood_detector.preprocess import close_ball

    closed = close_ball(mask, radius)
    np.testing.assert_array_equal(closed, _brute_close(mask, radius))
    assert (closed >= mask).all()
    np.testing.assert_array_equal(close_ball(closed, radius), closed)  # a closing is idempotent


def test_close_ball_fills_a_bite_but_not_the_space_to_the_array_edge():
    from mood_detector.preprocess import close_ball

    shape = (40, 40, 40)
    obj = _ball(shape, (20, 20, 20), 12)
    bite = _ball(shape, (20, 20, 32), 5) & obj  # cut into the surface
    closed = close_ball(obj & ~bite, 12)
    # filled but for the lens between the ball's outline and the closing ball bridging the mouth (about
    # 1 voxel each at the centre of the mouth)
    inner = _ball(shape, (20, 20, 20), 10)
    assert closed[bite & inner].all() and closed[bite].mean() > 0.6 and not closed[~obj].any()
    # a slab 3 voxels from the array's edge: the strip between is background (outside the array is too)
    slab = np.zeros(shape, bool)
    slab[3:37, 3:37, 10:30] = True
    np.testing.assert_array_equal(close_ball(slab, 6), slab)
    edge = np.zeros(shape, bool)
    edge[:, :, :20] = True  # reaching the edge: not cut there
    np.testing.assert_array_equal(close_ball(edge, 6), edge)


def test_resize_mask_keeps_nearest_voxels():
    from mood_detector.preprocess import resize_mask

    m = np.zeros((8, 8, 8), bool)
    m[2:6, 2:6, 2:6] = True
    small = resize_mask(m, (4, 4, 4))
    assert small.shape == (4, 4, 4) and small[1:3, 1:3, 1:3].all() and small.sum() == 8
    assert resize_mask(m, (8, 8, 8)) is m
    big = resize_mask(small, (8, 8, 8))
    np.testing.assert_array_equal(big, m)
    assert resize_mask(m, (5, 7, 9)).shape == (5, 7, 9)


@settings(max_examples=60, deadline=None)
@given(arrays(bool, st.tuples(*[st.integers(1, 9)] * 3), elements=st.booleans()))
def test_fill_holes_fills_each_slice_as_binary_fill_holes(mask):
    """All slices of an axis at once, as filling each slice on its own along axis 0, then 1, then 2."""
    from scipy import ndimage

    from mood_detector.preprocess import _fill_holes

    ref = ndimage.binary_fill_holes(mask)
    for axis in range(3):
        moved = np.moveaxis(ref, axis, 0)
        for i in range(moved.shape[0]):
            moved[i] = ndimage.binary_fill_holes(moved[i])
    np.testing.assert_array_equal(_fill_holes(mask), ref)


# --- a noisy field of view inside zero padding --------------------------------------------------------------------
def _rician(vol, sigma, seed):
    """Magnitude of ``vol`` plus complex Gaussian noise of ``sigma`` (an MRI background's Rician noise)."""
    rng = np.random.default_rng(seed)
    return np.hypot(vol + rng.normal(0, sigma, vol.shape), rng.normal(0, sigma, vol.shape)).astype(np.float32)


def _pad(vol, before, after):
    """``vol`` inside a zero-padded array (``before`` / ``after`` voxels per axis) and the box it fills."""
    box = tuple(slice(b, b + s) for b, s in zip(before, vol.shape))
    return np.pad(vol, list(zip(before, after))), box


@pytest.fixture(scope="module")
def padded_real_brain():
    """The real MNI ICBM152 2009a T1 brain (nilearn's) at 3 mm, its lowest 6 slices cut off by the field of view
    (the brain meets the FOV's face), Rician noise of 15% of its 99th percentile inside the FOV, zero padded:
    (volume, brain, FOV box)."""
    nib = pytest.importorskip("nibabel")
    from mood_detector.data.brain import template_path

    try:
        t1 = np.asarray(nib.load(str(template_path("icbm2009a"))).get_fdata(dtype=np.float32))
    except RuntimeError as exc:
        pytest.skip(str(exc))
    small = t1[: t1.shape[0] // 3 * 3, : t1.shape[1] // 3 * 3, : t1.shape[2] // 3 * 3]
    small = small.reshape(small.shape[0] // 3, 3, small.shape[1] // 3, 3, small.shape[2] // 3, 3).mean((1, 3, 5))
    lo = int(np.flatnonzero((small > 0).any((0, 1)))[0])  # the brain's lowest slice
    fov = small[:, :, lo + 6:]
    brain = fov > 0.1 * np.percentile(fov[fov > 0], 50)
    noisy = _rician(fov, 0.15 * float(np.percentile(fov[fov > 0], 99)), seed=3)
    vol, box = _pad(noisy, (20, 12, 30), (14, 20, 8))
    full = np.zeros(vol.shape, bool)
    full[box] = brain
    return vol, full, box


def test_noise_of_a_padded_field_of_view_is_background(padded_real_brain):
    """The FOV's noise is the background beside the brain, not the zero padding: the brain is kept (also where
    the FOV cuts it), the noise and the padding are not."""
    vol, brain, box = padded_real_brain
    m = foreground_mask(vol)
    assert m[brain].mean() > 0.995
    fov = np.zeros(vol.shape, bool)
    fov[box] = True
    assert m[fov & ~_near(brain)].mean() < 0.005  # the noise beside the brain, the FOV's edges included
    assert not m[~_near(fov, 1)].any()  # the padding, but for the mask's one-voxel margin at the cut face


def test_padded_field_of_view_is_found_only_around_a_noisy_background(padded_real_brain):
    """Statistics come from inside the FOV only where padding surrounds a background of the scan's own; on a
    zero or noisy background without padding, and for CT air, the whole volume is used (the mask as before)."""
    from mood_detector.data.abdomen import make_abdomen_volume
    from mood_detector.preprocess import FOV_INSET, _padded_fov

    vol, brain, box = padded_real_brain
    assert _padded_fov(vol) == tuple(slice(b.start + FOV_INSET, b.stop - FOV_INSET) for b in box)
    zero_bg = np.where(brain, vol, 0).astype(np.float32)  # the same brain without its noise
    ct = np.full((40, 40, 40), -1000.0, np.float32)
    ct[_ball(ct.shape, (20, 20, 20), 12)] = 40.0
    for v in (zero_bg, _head()[0], _head(noise=25.0)[0], make_abdomen_volume(32, seed=0, k=0),
              ct + np.random.default_rng(0).normal(0, 15, ct.shape).astype(np.float32), ct):
        assert _padded_fov(v) is None


@settings(max_examples=25, deadline=None)
@given(st.tuples(*[st.integers(24, 40)] * 3), st.floats(0.03, 0.3), st.floats(0.2, 0.35),
       st.lists(st.integers(0, 16), min_size=6, max_size=6).filter(lambda p: sum(p) > 0), st.integers(0, 2**16))
def test_zero_padding_beyond_a_noisy_fov_keeps_the_mask(shape, sigma, radius, pads, seed):
    """Padding a noisy scan with zeros beyond its field of view leaves its mask inside the original array as it
    was but for the band where its outline lies (the threshold's statistics come from a slightly smaller
    region; the smoothed noise's bumps move the outline by a voxel or two) and the FOV's outer voxels (the smoothing meets zeros there instead of noise), and adds nothing to
    the padding."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    centre = [s * rng.uniform(0.45, 0.55) for s in shape]
    obj = _ball(shape, centre, radius * min(shape))
    clean = np.where(obj, 1.0, 0.0) - 0.4 * _ball(shape, centre, 0.5 * radius * min(shape))  # darker core
    noisy = _rician(clean.astype(np.float32), sigma, seed)
    vol, box = _pad(noisy, pads[:3], pads[3:])
    m_orig, m_pad = foreground_mask(noisy), foreground_mask(vol)
    # where the mask's outline can lie: the margin, the smoothing and the noise's bumps
    rim = (ndimage.distance_transform_edt(~obj) <= 4.5) & (ndimage.distance_transform_edt(obj) <= 2)
    face = np.ones(shape, bool)
    face[2:-2, 2:-2, 2:-2] = False
    assert not (m_pad[box] != m_orig)[~rim & ~face].any()
    assert m_pad[box][obj].mean() > 0.99 and m_pad[box][~_near(obj)].mean() < 0.01
    outside = np.ones(vol.shape, bool)
    outside[box] = False
    assert not m_pad[outside].any()  # the object stays inside its FOV here
