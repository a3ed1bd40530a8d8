import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from mood_detector.tasks.volumetric import (FAMILIES, VolumeTaskConfig, family_sample, make_example,
                                            make_example_info, random_shape)
from tests.conftest import blob_volume

VOL = blob_volume(seed=0)
OTHER = blob_volume(seed=1)
#: shapes of 4-8 voxels in a 32^3 volume (the default 0.04-0.16 would give 1-5)
CFG = VolumeTaskConfig(p_normal=0.0, radius=(0.12, 0.25))


def _cfg(family: str, **kw) -> VolumeTaskConfig:
    return VolumeTaskConfig(**{**CFG.__dict__, "families": (family,), **kw})


def _union(ex) -> tuple[np.ndarray, np.ndarray]:
    """(union of the regions' boxes as a boolean volume, maximum of their masks as a volume)."""
    inbox = np.zeros(ex.image.shape, bool)
    mask = np.zeros(ex.image.shape, np.float32)
    for reg in ex.regions:
        inbox[reg.box] = True
        np.maximum(mask[reg.box], reg.mask, out=mask[reg.box])
    return inbox, mask


def _expected_label(vol, ex, cfg) -> np.ndarray:
    """The label by its definition, on the whole volume: max mask * clip(G(|out - vol|) / tau, 0, 1)."""
    change = ndimage.gaussian_filter(np.abs(ex.image - vol), cfg.label_sigma, mode="nearest", truncate=4.0)
    return _union(ex)[1] * np.clip(change / cfg.tau, 0, 1)


@pytest.mark.parametrize("family", FAMILIES)
def test_family_contract(family):
    cfg = _cfg(family)
    changed = saturated = 0
    for seed in range(4):
        ex = make_example_info(VOL, OTHER, np.random.default_rng(seed), cfg)
        assert ex.image.shape == VOL.shape and ex.label.shape == VOL.shape
        assert ex.image.dtype == np.float32 and ex.label.dtype == np.float32
        assert 0 <= ex.image.min() and ex.image.max() <= 1 and 0 <= ex.label.min() and ex.label.max() <= 1
        if ex.family == "normal":
            assert np.array_equal(ex.image, VOL) and not ex.label.any()
            continue
        changed += 1
        assert ex.family == family and ex.regions
        inbox, mask = _union(ex)
        assert np.array_equal(ex.image[~inbox], VOL[~inbox])  # outside the boxes nothing changes
        assert not ex.label[mask == 0].any()                   # the label lives inside the shape
        diff = np.abs(ex.image - VOL)
        assert diff.max() > 0 and ex.label.max() >= cfg.min_label
        # zero far from any change: the smoothing (truncate 4 sigma) reaches 4 voxels along each axis
        far = ndimage.distance_transform_cdt(diff == 0, metric="chessboard") > 4
        assert not ex.label[far].any()
        # where the smoothed change reaches tau well inside the shape, the label is ~1
        smooth = ndimage.gaussian_filter(diff, cfg.label_sigma, mode="nearest")
        big = (smooth >= cfg.tau * 1.01) & (mask >= 0.99)
        assert ex.label[big].min(initial=1.0) >= 0.98
        saturated += bool(big.any())
        k = np.argmax(smooth * mask)  # the largest change within the shape is labelled
        assert ex.label.flat[k] > 0
        for reg in ex.regions:  # centres lie in the object
            assert VOL[tuple(np.round(reg.centre).astype(int))] > cfg.fg_threshold
    assert changed >= 3 and saturated >= 1


def test_intensity_darkens_and_brightens():
    signs = set()
    for seed in range(24):
        ex = make_example_info(VOL, OTHER, np.random.default_rng(seed), _cfg("intensity"))
        if ex.family == "normal":
            continue
        _, mask = _union(ex)
        d = float(((ex.image - VOL) * mask).sum())
        signs.add(np.sign(d))
    assert signs >= {-1.0, 1.0}


def test_intensity_can_make_a_black_hole():
    """A hole takes tissue down to ~0 inside the shape (the object's dark inside is an anomaly)."""
    found = False
    for seed in range(60):
        ex = make_example_info(VOL, OTHER, np.random.default_rng(seed), _cfg("intensity", p_hole=1.0))
        _, mask = _union(ex)
        core = (mask >= 0.999) & (VOL > 0.2)
        if core.any() and ex.image[core].max() <= 0.1 * VOL[core].max() + 1e-6:
            found = True
            break
    assert found


def test_p_normal_one_leaves_the_volume_unchanged():
    cfg = VolumeTaskConfig(p_normal=1.0)
    out, label, family = make_example(VOL, OTHER, np.random.default_rng(0), cfg)
    assert family == "normal" and np.array_equal(out, VOL) and not label.any()
    assert out is not VOL and label.dtype == np.float32


def test_invisible_changes_give_up_as_normal():
    """A blur of a constant volume (noise switched off) never changes anything: after max_tries redraws the
    example is a normal one."""
    vol = np.full((24, 24, 24), 0.5, np.float32)
    cfg = VolumeTaskConfig(families=("texture",), p_normal=0.0, noise_sigma=(0.0, 0.0), max_tries=3)
    out, label, family = make_example(vol, None, np.random.default_rng(0), cfg)
    assert family == "normal" and np.array_equal(out, vol) and not label.any()


def test_determinism():
    cfg = VolumeTaskConfig(p_normal=0.0, radius=(0.12, 0.25), max_shapes=2)
    for seed in range(4):
        a = make_example(VOL, OTHER, np.random.default_rng(seed), cfg)
        b = make_example(VOL, OTHER, np.random.default_rng(seed), cfg)
        assert a[2] == b[2] and np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    c = make_example(VOL, OTHER, np.random.default_rng(99), cfg)
    assert not np.array_equal(a[0], c[0])


def test_blend_without_other_uses_a_far_location():
    ex = make_example_info(VOL, None, np.random.default_rng(3), _cfg("blend", p_match=0.0))
    assert ex.family == "blend" and np.abs(ex.image - VOL).max() > 0


def test_inputs_and_config_are_checked():
    with pytest.raises(ValueError):
        make_example(VOL, OTHER[:-1], np.random.default_rng(0), CFG)
    with pytest.raises(ValueError):
        make_example(VOL[0], None, np.random.default_rng(0), CFG)
    with pytest.raises(ValueError):
        VolumeTaskConfig(families=("sphere",))
    with pytest.raises(ValueError):
        VolumeTaskConfig(radius=(0.2, 0.1))
    with pytest.raises(ValueError):
        VolumeTaskConfig(p_normal=1.5)


def test_family_sample():
    rng = np.random.default_rng(0)
    assert {family_sample(CFG, rng) for _ in range(400)} == set(FAMILIES)
    cfg = VolumeTaskConfig(families=("flip", "warp"))
    assert {family_sample(cfg, rng) for _ in range(50)} == {"flip", "warp"}


def test_random_shape_is_an_irregular_smooth_blob():
    ratios = []
    for seed in range(12):
        rng = np.random.default_rng(seed)
        centre = (30, 31, 29)
        box, mask = random_shape((64, 64, 64), centre, 8.0, rng)
        assert mask.dtype == np.float32 and mask.shape == tuple(s.stop - s.start for s in box)
        assert all(0 <= s.start < s.stop <= 64 for s in box)
        assert 0 <= mask.min() and mask.max() <= 1
        assert mask[tuple(c - s.start for c, s in zip(centre, box))] == 1.0
        assert ((mask > 0.05) & (mask < 0.95)).any()  # a soft edge
        for a in range(3):  # trimmed to the support
            other = tuple(i for i in range(3) if i != a)
            prof = mask.any(axis=other)
            assert prof[0] and prof[-1]
        # not a sphere: the principal spreads differ
        z = np.argwhere(mask > 0.5).astype(float)
        ev = np.linalg.eigvalsh(np.cov(z.T))
        ratios.append(ev[-1] / ev[0])
    assert np.median(ratios) > 1.3
    # clipped at the volume's border
    box, mask = random_shape((32, 32, 32), (0, 31, 16), 6.0, np.random.default_rng(0))
    assert box[0].start == 0 and box[1].stop == 32 and mask.shape == tuple(s.stop - s.start for s in box)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), family=st.sampled_from(FAMILIES), shapes=st.integers(1, 3),
       with_other=st.booleans())
def test_label_is_the_masked_smoothed_change(seed, family, shapes, with_other):
    """label > 0 only where the smoothed change is > 0 within the shapes' support; in fact it equals its
    definition computed on the whole volume."""
    cfg = _cfg(family, max_shapes=shapes)
    ex = make_example_info(VOL, OTHER if with_other else None, np.random.default_rng(seed), cfg)
    assert 0 <= ex.image.min() and ex.image.max() <= 1
    if ex.family == "normal":
        assert np.array_equal(ex.image, VOL) and not ex.label.any()
        return
    inbox, mask = _union(ex)
    smooth = ndimage.gaussian_filter(np.abs(ex.image - VOL), cfg.label_sigma, mode="nearest")
    pos = ex.label > 0
    assert (smooth[pos] > 0).all() and (mask[pos] > 0).all()
    assert np.array_equal(ex.image[~inbox], VOL[~inbox])
    np.testing.assert_allclose(ex.label, _expected_label(VOL, ex, cfg), atol=1e-5)


def test_fortran_ordered_input_gives_the_same_example():
    """NIfTI arrays are often Fortran-ordered; the example does not depend on the memory layout."""
    cfg = VolumeTaskConfig(p_normal=0.0, radius=(0.12, 0.25), max_shapes=2)
    for seed in range(3):
        a = make_example(VOL, OTHER, np.random.default_rng(seed), cfg)
        b = make_example(np.asfortranarray(VOL), np.asfortranarray(OTHER), np.random.default_rng(seed), cfg)
        assert a[2] == b[2] and np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
