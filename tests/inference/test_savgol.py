"""The NumPy Savitzky-Golay filter of ``inference.aggregate`` equals scipy's (which it replaces to keep
``scipy.signal`` out of the start-up)."""

import numpy as np
import pytest
from scipy.signal import savgol_filter as scipy_savgol

from mood_detector.inference.aggregate import savgol_filter, savgol_window


@pytest.mark.parametrize("n", [5, 6, 7, 30, 64, 256, 512])
def test_equals_scipy(n: int):
    rng = np.random.default_rng(n)
    x = rng.random(n) * (rng.random(n) > 0.5)
    w = savgol_window(n)
    np.testing.assert_allclose(savgol_filter(x, w, 3), scipy_savgol(x, w, 3), rtol=0, atol=1e-12)


def test_rejects_bad_window():
    with pytest.raises(ValueError):
        savgol_filter(np.zeros(10), 4, 3)
    with pytest.raises(ValueError):
        savgol_filter(np.zeros(4), 5, 3)
