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
