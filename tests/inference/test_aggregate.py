import numpy as np
from scipy.signal import savgol_filter

from mood_detector.inference.aggregate import sample_score, savgol_window


def test_window_rule():
    assert savgol_window(256) == 27  # round(25.6) = 26 -> odd 27
    assert savgol_window(512) == 51
    assert savgol_window(30) == 5  # at least 5 (> polynomial order 3)
    assert savgol_window(4) == 3 and savgol_window(5) == 5


def test_hand_computed_example():
    # 40 slices: zeros except a bump of 0.8 on slices 18..21. Window = 5 (10% of 40 = 4 -> 5), order 3.
    s = np.zeros(40)
    s[18:22] = 0.8
    filtered = savgol_filter(s, 5, 3)
    expected = np.sort(filtered)[-10:].mean()  # top 25% of 40 = 10 values
    assert abs(sample_score(s) - expected) < 1e-12
    # by hand: the filter is linear; a constant sequence is preserved exactly
    assert abs(sample_score(np.full(40, 0.3)) - 0.3) < 1e-12


def test_clipped_to_unit_interval():
    assert abs(sample_score(np.full(50, 1.0)) - 1.0) < 1e-12
    assert sample_score(np.full(50, 7.0)) == 1.0  # clipped
    assert 0.0 <= sample_score(np.r_[np.zeros(20), np.ones(3), np.zeros(20)]) <= 1.0
    assert sample_score(np.array([])) == 0.0


def test_slice_rules():
    import pytest
    import torch

    from mood_detector.inference.aggregate import parse_slice_rule, slice_scores

    p = torch.zeros(2, 10, 10)
    p[0, :2, :2] = 1.0                                     # a small bright spot in slice 0
    p[1] = 0.05                                            # a faint floor over all of slice 1
    mean = slice_scores(p, 100, "mean")
    top = slice_scores(p, 100, "top:0.04")
    assert torch.allclose(mean, torch.tensor([0.04, 0.05]))   # the mean ranks the floor above the spot
    assert torch.allclose(top, torch.tensor([1.0, 0.05]))     # the top 4% rank the spot first
    # a crop of a larger slice: the pixels outside count as 0
    assert torch.allclose(slice_scores(p[:1, :2, :2], 100, "top:0.08"), torch.tensor([0.5]))
    for bad in ("top", "top:0", "top:2", "max", "top:x"):
        with pytest.raises(ValueError):
            parse_slice_rule(bad)
