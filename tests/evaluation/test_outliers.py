"""The five synthetic outlier types: changes stay inside the sphere, labels are exactly the changed voxels."""

from __future__ import annotations

import numpy as np
import pytest

from mood_detector.evaluation.outliers import (OUTLIER_TYPES, OutlierConfig, Sphere, apply_outlier, draw_sphere)
from tests.conftest import blob_volume


@pytest.fixture(scope="module")
def vol() -> np.ndarray:
    v = blob_volume((40, 36, 32), seed=3)
    v += 0.05 * np.random.default_rng(0).random(v.shape).astype(np.float32) * (v > 0)  # texture: no flat regions
    return np.clip(v, 0, 1)


@pytest.mark.parametrize("kind", OUTLIER_TYPES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_changes_only_inside_sphere_and_label_is_changed_voxels(vol, kind, seed):
    res = apply_outlier(vol, kind, np.random.default_rng(seed), OutlierConfig(radius_frac=(0.1, 0.2)))
    info = res.info
    sphere = Sphere(tuple(info["centre"]), info["radius"]).full_mask(vol.shape)  # recomputed independently
    changed = res.volume != vol
    assert changed.any()
    assert not (changed & ~sphere).any(), "voxels outside the sphere changed"
    np.testing.assert_array_equal(res.label.astype(bool), changed)
    assert res.label.dtype == np.uint8 and info["n_changed"] == int(changed.sum())
    assert info["n_sphere"] == int(sphere.sum())
    assert res.volume.dtype == np.float32 and res.volume.min() >= 0.0 and res.volume.max() <= 1.0
    assert vol[tuple(info["centre"])] > 0, "sphere centre must be a foreground voxel"
    r = int(np.floor(info["radius"]))
    assert all(r <= c < s - r for c, s in zip(info["centre"], vol.shape)), "sphere must lie inside the array"


def test_formulas(vol):
    cfg = OutlierConfig(radius_frac=(0.15, 0.15))
    sph = Sphere((20, 18, 16), 5.0)
    m = sph.full_mask(vol.shape)
    # Eq. 8: one constant added (then clipped)
    res = apply_outlier(vol, "uniform_addition", np.random.default_rng(1), cfg, sphere=sph)
    n = res.info["params"]["n"]
    np.testing.assert_allclose(res.volume[m], np.clip(vol[m] + np.float32(n), 0, 1), atol=1e-6)
    # Eq. 11: integer shift, values copied
    res = apply_outlier(vol, "uniform_shift", np.random.default_rng(2), cfg, sphere=sph)
    a, b, c = res.info["params"]["shift"]
    assert all(round(0.02 * d) <= abs(s) <= round(0.05 * d) + 1 for s, d in zip((a, b, c), vol.shape))
    idx = np.argwhere(m)
    src = np.clip(idx + [a, b, c], 0, np.array(vol.shape) - 1)
    np.testing.assert_array_equal(res.volume[tuple(idx.T)], vol[tuple(src.T)])
    # Eq. 12: mirrored along the reflection axis (0)
    res = apply_outlier(vol, "reflection", np.random.default_rng(3), cfg, sphere=sph)
    mir = idx.copy()
    mir[:, 0] = vol.shape[0] - 1 - mir[:, 0]
    np.testing.assert_array_equal(res.volume[tuple(idx.T)], vol[tuple(mir.T)])
    # Eq. 10: identity at the centre for source (s = 0 -> V = h_c); sink samples 2x further out near the centre
    src_res = apply_outlier(vol, "sink_source", np.random.default_rng(4), cfg, sphere=sph)
    assert src_res.volume[20, 18, 16] == pytest.approx(vol[20, 18, 16], abs=1e-6)


def test_noise_addition_is_voxelwise(vol):
    sph = Sphere((20, 18, 16), 4.0)
    res = apply_outlier(vol, "noise_addition", np.random.default_rng(0), OutlierConfig(noise_sigma=0.05), sphere=sph)
    diff = (res.volume - vol)[sph.full_mask(vol.shape) & (vol > 0.1) & (vol < 0.9)]
    assert diff.std() > 0.02 and np.unique(np.round(diff, 5)).size > diff.size // 2


def test_deterministic_and_radius_range(vol):
    cfg = OutlierConfig(radius_frac=(0.05, 0.1))
    a = apply_outlier(vol, "sink_source", np.random.default_rng(7), cfg)
    b = apply_outlier(vol, "sink_source", np.random.default_rng(7), cfg)
    np.testing.assert_array_equal(a.volume, b.volume)
    assert a.info == b.info
    for seed in range(10):
        s = draw_sphere(vol, np.random.default_rng(seed), cfg)
        assert 0.05 * 32 <= s.radius <= 0.1 * 32


def test_unknown_type_is_refused(vol):
    with pytest.raises(ValueError, match="unknown outlier type"):
        apply_outlier(vol, "blur", np.random.default_rng(0))
