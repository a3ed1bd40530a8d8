"""The reader against hostile files: caps enforced from the header before any allocation, bombs, odd files.

Allocation is measured with tracemalloc (numpy and bytes buffers are traced), and "before any voxel byte is
read" is proven by making the data-reading function fail the test if it is ever called.
"""

from __future__ import annotations

import gzip
import os
import signal
import tracemalloc
import zlib
from contextlib import contextmanager
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import mood_detector.io.nifti as nifti_mod
from mood_detector.errors import InputError
from mood_detector.io.nifti import ReadLimits, read_volume, write_volume
from tests.conftest import blob_volume
from tests.io.nifti_bytes import nifti_bytes, patch, put_int32, write

MiB = 1 << 20


@contextmanager
def peak_alloc():
    """Yields a list that receives the peak traced allocation (bytes) of the block."""
    out: list[int] = []
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        yield out
    finally:
        out.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()


@contextmanager
def time_limit(seconds: float):
    """Fail (TimeoutError) instead of hanging."""
    def boom(*_):
        raise TimeoutError(f"did not finish within {seconds} s")
    old = signal.signal(signal.SIGALRM, boom)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture
def no_voxel_read(monkeypatch):
    """Any attempt to read voxel data fails the test."""
    def forbidden(*args, **kwargs):
        raise AssertionError("voxel data was read although the header should have been refused")
    monkeypatch.setattr(nifti_mod, "read_data", forbidden)


SMALL = np.ones((4, 4, 4), np.float64)


@pytest.mark.parametrize("name,nifti2,dim,limits", [
    # NIfTI-1 dims are int16: 32767^3 float64 voxels = 281 TB
    ("tb1.nii.gz", False, [3, 32767, 32767, 32767, 1, 1, 1, 1], ReadLimits()),
    # NIfTI-2 dims are int64: 2^40 per axis
    ("tb2.nii", True, [3, 2**40, 2**40, 2**40, 1, 1, 1, 1], ReadLimits()),
    # only the voxel-count cap applies, and the product 2^64 would wrap to 0 in int64 arithmetic
    ("wrap.nii.gz", True, [3, 2**21, 2**21, 2**22, 1, 1, 1, 1], ReadLimits(max_dim=2**40)),
    # 1024^3 passes the per-axis check but not the voxel cap
    ("g1024.nii.gz", False, [3, 1024, 1024, 1024, 1, 1, 1, 1], ReadLimits()),
])
def test_terabyte_header_refused_before_any_allocation(tmp_path: Path, no_voxel_read, name, nifti2, dim, limits):
    p = write(tmp_path / name, patch(nifti_bytes(SMALL, nifti2=nifti2), dim=dim))
    with peak_alloc() as peak, pytest.raises(InputError, match="exceed") as info:
        read_volume(p, limits)
    assert peak[0] < 1 * MiB, f"{peak[0]} bytes allocated for a refused header"
    assert str(p) in str(info.value)


def _gzip_member_of_zeros(n_mib: int) -> bytes:
    co = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = bytes(MiB)
    return b"".join(co.compress(chunk) for _ in range(n_mib)) + co.flush()


def test_gzip_bomb_tail_is_never_decompressed(tmp_path: Path):
    """A small valid image followed by 1 GiB of compressed zeros (concatenated gzip members): only the bytes
    the header implies are decompressed."""
    data = blob_volume((4, 4, 4))
    member = _gzip_member_of_zeros(16)
    p = tmp_path / "bomb.nii.gz"
    p.write_bytes(gzip.compress(nifti_bytes(data), mtime=0) + member * 64)  # 64 x 16 MiB = 1 GiB of zeros
    assert p.stat().st_size < 2 * MiB
    with time_limit(10), peak_alloc() as peak:
        vol = read_volume(p)
    np.testing.assert_array_equal(vol.data, data)
    assert peak[0] < 4 * MiB


@pytest.mark.parametrize("esize", [2**31 - 16, -8, 0, 8, 17])
def test_hostile_extension_sizes_cost_nothing(tmp_path: Path, esize: int):
    """nibabel would allocate ``esize`` bytes (2 GiB here) or read to the end of the stream (esize <= 8);
    extensions are skipped by offset instead, so the image is read with a small, bounded allocation."""
    data = blob_volume((4, 4, 4))
    raw = put_int32(nifti_bytes(data, ext=b"x" * 40), 352, esize)
    p = tmp_path / "ext.nii.gz"
    p.write_bytes(gzip.compress(raw, mtime=0) + _gzip_member_of_zeros(16) * 16)
    with time_limit(10), peak_alloc() as peak:
        vol = read_volume(p)
    np.testing.assert_array_equal(vol.data, data)
    assert peak[0] < 4 * MiB


def test_huge_data_offset_refused(tmp_path: Path, no_voxel_read):
    raw = patch(nifti_bytes(SMALL, ext=b"x" * 40), vox_offset=3e8)
    p = write(tmp_path / "off.nii.gz", raw)
    with peak_alloc() as peak, pytest.raises(InputError, match="over the cap"):
        read_volume(p)
    assert peak[0] < 1 * MiB


def test_fifo_and_device_refused_without_blocking(tmp_path: Path):
    fifo = tmp_path / "fifo.nii"
    os.mkfifo(fifo)
    dev = tmp_path / "zero.nii.gz"
    dev.symlink_to("/dev/zero")
    for p in (fifo, dev):
        with time_limit(5), pytest.raises(InputError, match="not a regular file"):
            read_volume(p)


def test_missing_empty_broken_link_and_folder(tmp_path: Path):
    (tmp_path / "empty.nii").write_bytes(b"")
    (tmp_path / "broken.nii.gz").symlink_to(tmp_path / "nowhere.nii.gz")
    (tmp_path / "folder.nii").mkdir()
    for name, reason in [("empty.nii", "empty file"), ("broken.nii.gz", "broken symbolic link"),
                         ("folder.nii", "directory"), ("missing.nii", "does not exist")]:
        with pytest.raises(InputError, match=reason):
            read_volume(tmp_path / name)


@pytest.mark.parametrize("gz", [True, False])
def test_truncation_anywhere_is_a_clear_error(tmp_path: Path, gz: bool):
    data = np.random.default_rng(0).random((6, 5, 4)).astype(np.float32)  # incompressible
    raw = nifti_bytes(data)
    full = gzip.compress(raw, mtime=0) if gz else raw
    cuts = sorted({1, 3, 10, 200, 347, 351, 360, len(full) // 2, len(full) - 9, len(full) - 1})
    for cut in cuts:
        p = tmp_path / f"cut{cut}.nii{'.gz' if gz else ''}"
        p.write_bytes(full[:cut])
        try:
            vol = read_volume(p)
        except InputError as exc:
            assert str(p) in str(exc) and "\n" not in str(exc)
            assert any(w in exc.reason for w in ("truncated", "too short", "corrupt")), exc.reason
        else:  # a gzip stream cut inside its trailer still holds every voxel byte: then the data must be right
            assert gz and cut > len(full) - 10, cut
            np.testing.assert_array_equal(vol.data, data)


def test_compression_detected_from_content_not_name(tmp_path: Path):
    data = blob_volume((5, 6, 7))
    raw = nifti_bytes(data)
    a = write(tmp_path / "plain_named.nii.gz", raw, gz=False)
    b = write(tmp_path / "gzip_named.nii", raw, gz=True)
    for p in (a, b):
        np.testing.assert_array_equal(read_volume(p).data, data)


@pytest.mark.parametrize("dtype,slope,inter,endian", [
    (np.uint8, 1.0, 0.0, "<"), (np.int16, 0.5, -1024.0, "<"), (np.int16, 2.0, 3.0, ">"),
    (np.float64, 1.0, 0.0, ">"), (np.int32, 1.0, 0.0, "<"), (np.float32, 0.0, 0.0, "<"),
])
def test_values_match_nibabel(tmp_path: Path, dtype, slope, inter, endian):
    rng = np.random.default_rng(0)
    data = (rng.random((7, 6, 5)) * 200).astype(np.dtype(dtype).newbyteorder(endian))
    img = nib.Nifti1Image(data, np.diag([1.5, 1.0, 2.0, 1.0]))
    img.header.set_slope_inter(slope if slope else None, inter if slope else None)
    if slope == 0.0:
        img.header["scl_slope"] = 0.0  # "no scaling" per the NIfTI standard
    for name in ("v.nii", "v.nii.gz"):
        p = tmp_path / name
        nib.save(img, str(p))
        ref = nib.load(str(p))
        vol = read_volume(p)
        assert vol.data.dtype == np.float32 and vol.shape == (7, 6, 5)
        np.testing.assert_array_equal(vol.data, ref.get_fdata(dtype=np.float32))
        np.testing.assert_array_equal(vol.affine, ref.affine)


@pytest.mark.parametrize("fields,reason", [
    ({"dim": [2, 8, 8, 1, 1, 1, 1, 1]}, "expected a 3D volume, header says 2D"),
    ({"dim": [4, 4, 4, 4, 3, 1, 1, 1]}, "expected a 3D volume, header says 4D"),
    ({"dim": [3, 4, 0, 4, 1, 1, 1, 1]}, "zero-length dimension"),
    ({"dim": [3, 4, -4, 4, 1, 1, 1, 1]}, "negative dimension"),
    ({"dim": [0, 4, 4, 4, 1, 1, 1, 1]}, "dim\\[0\\]=0"),
    ({"dim": [9, 4, 4, 4, 1, 1, 1, 1]}, "dim\\[0\\]=9"),
    ({"datatype": 1234}, "data code 1234 not recognized"),
    ({"datatype": 32, "bitpix": 64}, "unsupported voxel data type"),  # complex64
    ({"datatype": 128, "bitpix": 24}, "unsupported voxel data type"),  # RGB
    ({"magic": b"ni1"}, "pair"),
    ({"magic": b"xyz"}, "wrong NIfTI magic"),
    ({"sizeof_hdr": 999}, "expected 348 or 540"),
    ({"scl_slope": 1.0, "scl_inter": np.nan}, "invalid intensity scaling"),
    ({"vox_offset": np.nan}, "vox_offset"),
])
def test_bad_header_fields_are_one_line_errors(tmp_path: Path, fields: dict, reason: str):
    p = write(tmp_path / "bad.nii.gz", patch(nifti_bytes(np.ones((4, 4, 4), np.float32)), **fields))
    with pytest.raises(InputError, match=reason) as info:
        read_volume(p)
    assert str(info.value).startswith(str(p)) and "\n" not in str(info.value)


def test_trailing_singleton_dims_are_3d(tmp_path: Path):
    data = blob_volume((5, 6, 7))
    p = write(tmp_path / "t.nii.gz", nifti_bytes(data[..., None, None]))
    np.testing.assert_array_equal(read_volume(p).data, data)


def test_unusable_orientation_falls_back_and_output_is_writable(tmp_path: Path):
    raw = patch(nifti_bytes(blob_volume((4, 5, 6))), sform_code=1, srow_x=[np.nan, 0, 0, 0])
    p = write(tmp_path / "nan_sform.nii.gz", raw)
    vol = read_volume(p)
    assert np.isfinite(vol.affine).all()
    out = write_volume(tmp_path / "out.nii.gz", vol.data, vol.affine, vol.header)
    img = nib.load(str(out))
    assert img.shape == (4, 5, 6) and np.isfinite(img.affine).all()


def test_nonfinite_policy(tmp_path: Path):
    data = blob_volume((4, 4, 4))
    data[0, 0, 0], data[1, 1, 1], data[2, 2, 2] = np.nan, np.inf, -np.inf
    p = write(tmp_path / "nan.nii.gz", nifti_bytes(data))
    with pytest.raises(InputError, match="3 non-finite"):
        read_volume(p)
    vol = read_volume(p, ReadLimits(nonfinite="zero"))
    expected = np.where(np.isfinite(data), data, 0)
    np.testing.assert_array_equal(vol.data, expected)
    # a huge slope overflowing float32 is caught the same way
    big = write(tmp_path / "slope.nii.gz", patch(nifti_bytes(blob_volume((4, 4, 4)) + 10), scl_slope=1e38,
                                                  scl_inter=0.0))
    with pytest.raises(InputError, match="non-finite"):
        read_volume(big)


# An orientation matrix mixing subnormal and huge entries: numpy's SVD (called by nibabel's set_qform) never
# returns on it. Found by the fuzz test; run in a subprocess because a hang in C cannot be interrupted.
HANGING_SFORM = [[-2.1947858967388374e-198, -7.377431585676764e-200, -7.377431585676764e-200, -7.4e-200],
                 [2.426418321323e-312, 6.554971421188629e+68, -7.377431585676764e-200, 10.294117647058822],
                 [-7.185310971466432e-200, -7.377431585676764e-200, 0.9, 5.0], [0.0, 0.0, 0.0, 1.0]]


def test_pathological_orientation_neither_hangs_nor_survives(tmp_path: Path):
    import subprocess
    import sys

    hdr = nib.Nifti2Header()
    hdr.set_data_shape((8, 8, 8))
    hdr.set_data_dtype(np.float32)
    for i, row in enumerate(("srow_x", "srow_y", "srow_z")):  # raw fields: set_sform would not touch LAPACK,
        hdr[row] = HANGING_SFORM[i]                              # but keep the file exactly as written
    hdr["sform_code"], hdr["qform_code"] = 1, 0
    img = nib.Nifti2Image(blob_volume((8, 8, 8)), None, header=hdr)
    src = tmp_path / "odd.nii"
    nib.save(img, str(src))
    code = (
        "import logging, sys, numpy as np\n"
        "logging.basicConfig()\n"
        "from mood_detector.io.nifti import read_volume, write_volume\n"
        "v = read_volume(sys.argv[1])\n"
        "write_volume(sys.argv[2], v.data, v.affine, v.header)\n"
        "print(repr(v.affine.tolist()))\n"
    )
    out = tmp_path / "out.nii.gz"
    res = subprocess.run([sys.executable, "-c", code, str(src), str(out)], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    aff = np.array(eval(res.stdout))  # noqa: S307 - our own repr of a list of floats
    assert np.abs(aff).max() < 1e4, aff  # the implausible sform was refused, a plausible fallback used
    assert "unusable orientation" in res.stderr
    assert nib.load(str(out)).shape == (8, 8, 8)
