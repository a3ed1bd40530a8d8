import numpy as np
import pytest

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
