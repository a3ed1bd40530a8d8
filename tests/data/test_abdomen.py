"""The procedural abdominal phantom: range, zero background, per-subject variation, determinism."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner

from mood_detector.cli import main
from mood_detector.data.abdomen import abdomen_affine, make_abdomen_data, make_abdomen_volume

SIZE = 48


@pytest.fixture(scope="module")
def vols() -> dict[tuple[int, int], np.ndarray]:
    return {(s, k): make_abdomen_volume(SIZE, s, k) for s, k in [(0, 0), (0, 1), (1, 0)]}


def test_range_and_background(vols):
    for v in vols.values():
        assert v.shape == (SIZE,) * 3 and v.dtype == np.float32
        assert v.min() >= 0.0 and v.max() <= 1.0
        for corner in np.ndindex(2, 2, 2):  # air around the body is exactly 0
            sl = tuple(slice(0, 3) if c == 0 else slice(SIZE - 3, SIZE) for c in corner)
            assert (v[sl] == 0).all()
        body = v > 0
        assert 0.25 < body.mean() < 0.75
        assert v.max() > 0.9  # cortical bone
        soft = v[body]
        assert 0.4 < np.median(soft) < 0.6  # soft tissue and fat dominate (CT numbers around 0 HU)
        # gas pockets: near-zero voxels inside the body's extent on a central axial slice
        mid = v[:, SIZE // 2 - 4: SIZE // 2 + 4, :]
        assert ((mid < 0.1) & (mid > 0)).sum() + ((mid == 0)[8:-8, :, 8:-8]).sum() > 0


def test_per_subject_variation_and_determinism(vols):
    a, b, c = vols[(0, 0)], vols[(0, 1)], vols[(1, 0)]
    np.testing.assert_array_equal(a, make_abdomen_volume(SIZE, 0, 0))
    for other in (b, c):
        assert np.abs(a - other).mean() > 0.02
        assert ((a > 0) != (other > 0)).mean() > 0.01  # body outline differs
    # size / position: the body's extent along the left-right axis differs between subjects
    extent = lambda v: np.flatnonzero((v > 0).any(axis=(1, 2)))  # noqa: E731
    assert not np.array_equal(extent(a), extent(b)) or not np.array_equal(extent(a), extent(c))


def test_make_data_files_and_cli(tmp_path):
    files = make_abdomen_data(tmp_path / "a", 2, size=24, seed=3)
    assert [f.name for f in files] == ["00000.nii.gz", "00001.nii.gz"]
    img = nib.load(str(files[1]))
    np.testing.assert_allclose(img.affine, abdomen_affine(24))
    res = CliRunner().invoke(main, ["make-data", "abdom", "--n", "1", "--out", str(tmp_path / "b"), "--size", "24",
                                    "--seed", "3", "--start", "1"])
    assert res.exit_code == 0, res.output
    # subject k depends only on (seed, k)
    np.testing.assert_array_equal(nib.load(str(tmp_path / "b" / "00001.nii.gz")).get_fdata(), img.get_fdata())
