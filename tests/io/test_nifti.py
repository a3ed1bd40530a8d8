from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mood_detector.errors import InputError
from mood_detector.io.nifti import ReadLimits, read_shape, read_volume, write_text_atomic, write_volume
from tests.conftest import blob_volume, save_nifti


@pytest.mark.parametrize("name", ["a.nii", "b.nii.gz"])
def test_round_trip_keeps_shape_affine_dtype(tmp_path: Path, name: str) -> None:
    data = blob_volume((20, 24, 28))
    src = save_nifti(tmp_path / ("in_" + name), data)
    vol = read_volume(src)
    assert vol.data.dtype == np.float32 and vol.shape == (20, 24, 28)
    out = write_volume(tmp_path / name, vol.data * 0.5, vol.affine, vol.header)
    img = nib.load(str(out))
    assert img.shape == (20, 24, 28)
    assert img.get_data_dtype() == np.float32
    np.testing.assert_allclose(img.affine, nib.load(str(src)).affine)
    assert not np.allclose(img.affine, np.eye(4))
    np.testing.assert_allclose(img.get_fdata(), data * 0.5, atol=1e-7)
    # atomic write leaves no temporary file behind
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, "in_" + name])


def test_gzip_output_is_really_gzip_and_deterministic(tmp_path: Path) -> None:
    data = blob_volume()
    a = write_volume(tmp_path / "a.nii.gz", data, np.eye(4))
    b = write_volume(tmp_path / "b.nii.gz", data, np.eye(4))
    assert a.read_bytes()[:2] == b"\x1f\x8b"
    assert a.read_bytes() == b.read_bytes()


def test_refuses_too_large_header_before_reading(tmp_path: Path) -> None:
    p = save_nifti(tmp_path / "big.nii.gz", np.zeros((40, 40, 40), np.float32))
    with pytest.raises(InputError, match="exceed"):
        read_volume(p, ReadLimits(max_dim=1024, max_voxels=30**3))
    with pytest.raises(InputError, match="dimension 40 exceeds"):
        read_volume(p, ReadLimits(max_dim=32))


def test_refuses_4d_and_nonfinite(tmp_path: Path) -> None:
    p4 = save_nifti(tmp_path / "v4.nii.gz", np.zeros((8, 8, 8, 3), np.float32))
    with pytest.raises(InputError, match="3D"):
        read_volume(p4)
    bad = blob_volume((8, 8, 8))
    bad[1, 1, 1] = np.nan
    pn = save_nifti(tmp_path / "nan.nii.gz", bad)
    with pytest.raises(InputError, match="non-finite"):
        read_volume(pn)
    assert np.isfinite(read_volume(pn, ReadLimits(nonfinite="zero")).data).all()


def test_error_names_file_in_one_line(tmp_path: Path) -> None:
    p = tmp_path / "junk.nii.gz"
    p.write_bytes(b"not a nifti at all\nsecond line")
    with pytest.raises(InputError) as info:
        read_volume(p)
    assert str(p) in str(info.value) and "\n" not in str(info.value)


def test_text_atomic(tmp_path: Path) -> None:
    write_text_atomic(tmp_path / "x.txt", "0.5\n")
    assert [p.name for p in tmp_path.iterdir()] == ["x.txt"]


def test_read_shape_reads_the_header_only_and_checks_it_like_read_volume(tmp_path):
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((300, 200, 100))
    hdr.set_data_dtype(np.float32)
    hdr["vox_offset"] = 352
    path = tmp_path / "header_only.nii"
    path.write_bytes(hdr.binaryblock + b"\0" * 4)  # no voxel data: read_volume would call it truncated
    assert read_shape(path) == (300, 200, 100)
    with pytest.raises(InputError, match="truncated"):
        read_volume(path)
    with pytest.raises(InputError, match="header_only.nii"):  # the same limits as read_volume
        read_shape(path, ReadLimits(max_dim=256))
