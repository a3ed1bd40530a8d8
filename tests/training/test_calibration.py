"""The one score-calibration helper."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mood_detector.training.calibration import quantile_scale


def test_quantile_of_all_values_with_floor_and_default():
    parts = [np.array([1.0, 2.0]), torch.tensor([3.0, 4.0])]
    assert quantile_scale(parts, 0.5) == pytest.approx(2.5)
    assert quantile_scale([np.zeros(3)], 0.9, floor=1e-8) == 1e-8
    assert quantile_scale([], 0.9, default=1.0) == 1.0
    with pytest.raises(ValueError):
        quantile_scale([], 0.9)


def test_lower_median_equals_torch_median():
    x = torch.rand(1000, generator=torch.Generator().manual_seed(0))
    assert quantile_scale([x[:500], x[500:]], 0.5, floor=0.0, method="lower") == float(x.median())
