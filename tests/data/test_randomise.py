"""Domain randomisation (mood_detector/data/randomise.py, brain_random.py, abdomen_random.py)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mood_detector.data.randomise import FAMILIES, Appearance, acquire, class_means, random_curve, thick_slices


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2), st.integers(2, 4), st.integers(8, 20))
def test_thick_slices_keep_shape_and_constants(axis, factor, n):
    vol = np.full((n, n + 1, n + 2), 0.25, np.float32)
    out = thick_slices(vol, axis, factor)
    assert out.shape == vol.shape
    np.testing.assert_allclose(out, 0.25, atol=1e-6)


def test_thick_slices_lose_detail_along_their_axis_only():
    vol = np.zeros((16, 16, 16), np.float32)
    vol[:, :, ::2] = 1.0  # a 2-voxel period along axis 2
    assert thick_slices(vol, 2, 2).std() < 0.05  # averaged away along that axis
    np.testing.assert_array_equal(thick_slices(vol, 0, 2), vol)  # unchanged along another


def test_contrast_families_are_orderings():
    for _ in range(5):
        for fam, r in FAMILIES.items():
            assert all(lo < hi for lo, hi in r.values()), fam
    # T1-like: white matter brighter than CSF; T2-like: the reverse
    assert FAMILIES["t1"]["wm"][0] > FAMILIES["t1"]["csf"][1]
    assert FAMILIES["t2"]["csf"][0] > FAMILIES["t2"]["wm"][1]
    seen = {class_means(np.random.default_rng(i))[0] for i in range(60)}
    assert seen == {"random", *FAMILIES}


@pytest.mark.parametrize("seed", range(6))
def test_random_curve_shapes(seed):
    shape, x, y = random_curve(np.random.default_rng(seed))
    assert x[0] == 0 and x[-1] == 1 and ((0 <= y) & (y <= 1)).all()
    if shape == "monotone":
        assert (np.diff(y) >= 0).all()
    elif shape == "reversed":
        assert (np.diff(y) <= 0).all()


@pytest.mark.parametrize("seed", range(4))
def test_acquire_range_and_background(seed):
    rng = np.random.default_rng(seed)
    vol = np.zeros((24, 24, 24), np.float32)
    fg = np.zeros(vol.shape, bool)
    fg[6:18, 6:18, 6:18] = True
    vol[fg] = rng.uniform(0.2, 0.8, int(fg.sum()))
    out, info = acquire(vol, fg, np.ones_like(vol), rng, Appearance(p_background=0.5))
    assert out.shape == vol.shape and out.min() >= 0.0 and out.max() <= 1.0
    if "background" in info:
        assert (out[~fg] > 0).mean() > 0.9  # Rayleigh noise is positive almost everywhere
    else:
        assert not out[~fg].any()


def test_random_brain_subject_varies_contrast():
    pytest.importorskip("nilearn")
    from mood_detector.data.brain_random import TISSUE, load_tissue_maps, make_random_subject

    maps = load_tissue_maps()
    assert maps.csf.shape == maps.gm.shape == maps.outside_mm.shape
    assert float((maps.csf + maps.gm + maps.wm).max()) <= 1.0 + 1e-5
    vols = [make_random_subject(TISSUE, 32, np.random.default_rng([0, k, 7]))[0] for k in range(3)]
    for v in vols:
        assert v.shape == (32, 32, 32) and v.dtype == np.float32 and 0.0 <= v.min() and v.max() <= 1.0
        assert (v > 0).mean() > 0.05
    # the subjects differ in appearance, not only in noise
    assert np.corrcoef(vols[0].ravel(), vols[1].ravel())[0, 1] < 0.95


def test_random_brain_data_writes_what_was_drawn(tmp_path):
    pytest.importorskip("nilearn")
    import json

    from mood_detector.data.brain_random import make_random_brain_data

    files = make_random_brain_data(tmp_path, 2, size=24, seed=3)
    again = make_random_brain_data(tmp_path / "again", 1, size=24, seed=3, start=1)
    meta = json.loads((tmp_path / "subjects.json").read_text())
    assert sorted(meta) == ["00000.nii.gz", "00001.nii.gz"] and "contrast" in meta["00000.nii.gz"]
    import nibabel as nib

    np.testing.assert_array_equal(nib.load(str(files[1])).get_fdata(), nib.load(str(again[0])).get_fdata())


def test_random_abdomen_varies_tissue_values_and_background():
    from mood_detector.data.abdomen_random import CT_RANGES, make_random_abdomen, tissue_range

    assert tissue_range("liver") == CT_RANGES["soft"] and tissue_range("sinus_fat") == CT_RANGES["fat"]
    vols = [make_random_abdomen(32, 0, k) for k in range(6)]
    for v, info in vols:
        assert v.shape == (32, 32, 32) and 0.0 <= v.min() and v.max() <= 1.0
    scanner = [v for v, info in vols if "table_hu" in info]
    empty = [v for v, info in vols if "table_hu" not in info]
    assert scanner and empty  # both backgrounds occur in six draws of this seed
    assert all((v == 0).mean() > 0.2 for v in empty)
    assert all((v == 0).mean() < (e == 0).mean() for v in scanner for e in empty)
