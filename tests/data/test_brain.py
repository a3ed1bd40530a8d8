import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from mood_detector.data import brain
from mood_detector.io.nifti import read_volume


def test_default_template_subjects_differ_and_are_normalised(tmp_path):
    files = brain.make_brain_data(tmp_path, 2, size=32, seed=0)
    a, b = (read_volume(f).data for f in files)
    for v in (a, b):
        assert v.shape == (32, 32, 32) and v.min() == 0 and v.max() <= 1 and (v > 0).mean() > 0.05
    assert np.abs(a - b).mean() > 0.01


def test_unknown_and_missing_templates_give_clear_errors(monkeypatch):
    with pytest.raises(ValueError, match="unknown brain template"):
        brain.resolve_templates("nope")
    monkeypatch.setitem(brain.TEMPLATES, "ghost", brain.Template("ghost", "debian:ghost-data", "x",
                                                                 ("/nonexistent/ghost.nii.gz",)))
    with pytest.raises(RuntimeError, match="apt-get install ghost-data"):
        brain.template_path("ghost")
    assert "ghost" not in brain.available_templates()


@pytest.mark.parametrize("name", [n for n in brain.TEMPLATES if n in brain.available_templates()])
def test_each_installed_template_loads_as_a_brain(name):
    data, affine = brain.load_template(name)
    assert data.ndim == 3 and data.min() == 0 and data.max() == 1
    assert 0.05 < (data > 0).mean() < 0.6 and affine.shape == (4, 4)


def test_subjects_cycle_through_the_templates(tmp_path):
    names = brain.available_templates()
    files = brain.make_brain_data(tmp_path, len(names), size=24, seed=1, templates="all")
    assert len(files) == len(names)


@settings(max_examples=25, deadline=None)
@given(grid=st.integers(2, 7), size=st.integers(2, 40))
def test_smooth_field_is_the_spline_zoom_of_its_lattice(grid, size):
    """The fast separable field equals scipy's cubic-spline zoom of the same random lattice."""
    field = brain.smooth_field(np.random.default_rng(3), grid, size, 2.0)
    coarse = np.random.default_rng(3).normal(0.0, 2.0, (grid,) * 3).astype(np.float32)
    want = ndimage.zoom(coarse, size / grid, order=3, mode="nearest", grid_mode=True)[:size, :size, :size]
    assert field.shape == (size,) * 3 and field.dtype == np.float32
    np.testing.assert_allclose(field, want, rtol=0, atol=1e-5)
