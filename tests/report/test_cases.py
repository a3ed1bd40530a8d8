"""Report case loading: the per-slice curve follows the predictor's slice-score rule."""

import numpy as np
import pytest


def test_slice_means_top_rule_matches_predictor_rule():
    import torch

    from mood_detector.inference.aggregate import slice_scores
    from mood_detector.report.cases import slice_means

    rng = np.random.default_rng(0)
    pixel = rng.random((6, 10, 12)).astype(np.float32)
    for axis in (0, 1, 2):
        got = slice_means(pixel, axis, "top:0.1")
        sl = torch.from_numpy(np.ascontiguousarray(np.moveaxis(pixel, axis, 0)))
        want = slice_scores(sl, sl.shape[1] * sl.shape[2], "top:0.1").numpy()
        np.testing.assert_allclose(got, want, rtol=1e-5)
        np.testing.assert_allclose(slice_means(pixel, axis), np.moveaxis(pixel, axis, 0).mean(axis=(1, 2)), rtol=1e-5)
    with pytest.raises(ValueError):
        slice_means(pixel, 0, "top:2")
