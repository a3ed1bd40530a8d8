"""Fuzzing the NIfTI reader: mutated headers, extensions, data and gzip streams.

Property: ``read_volume`` either returns a valid volume (3D float32, finite, within the caps, with a finite
affine, and writable back to disk) or raises :class:`InputError` naming the file in one line; nothing else is
raised, no case takes more than a few seconds (SIGALRM bound) and no case allocates more than a small bound
above the caps (tracemalloc peak).

1,000 cases run in the normal suite; ``MOOD_FUZZ_LONG=1`` adds a 20,000-case run (``-m fuzz_long``).
"""

from __future__ import annotations

import gzip
import io
import os
import signal
import tempfile
import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mood_detector.errors import InputError
from mood_detector.io.nifti import ReadLimits, _result_image, read_volume
from tests.io.nifti_bytes import header_size, nifti_bytes

LIMITS = ReadLimits(max_dim=64, max_voxels=4096, max_header_bytes=64 << 10)
# raw voxels (at most 16 bytes each) + float32 copy + bounded 1 MiB reads, with room for nibabel's objects
PEAK_BOUND = LIMITS.max_voxels * (16 + 4) + (1 << 20)
SECONDS_PER_CASE = 5.0
LONG = os.environ.get("MOOD_FUZZ_LONG", "") not in ("", "0")


def _seeds() -> list[bytes]:
    rng = np.random.default_rng(0)
    v = rng.random((4, 4, 4))
    i16 = nib.Nifti1Image((v * 1000 - 500).astype(np.int16), np.diag([1.5, 1.0, 2.0, 1.0]))
    i16.header.set_slope_inter(0.5, -3.0)
    out = [
        nifti_bytes(v.astype(np.float32)),
        nifti_bytes(v.astype(">f8"), nifti2=True),
        nifti_bytes((v * 255).astype(np.uint8), ext=b"comment extension" * 3),
        nifti_bytes(v.astype(np.float32)[..., None]),
    ]
    bio = io.BytesIO()
    i16.to_file_map(i16.make_file_map({"image": bio}))
    out.append(bio.getvalue())
    return out


SEEDS = _seeds()
INTS = [0, 1, -1, 2, 3, 4, 5, 7, 8, 16, 64, 65, 348, 352, 540, 544, 4096, 2**15 - 1, -2**15, 2**31 - 1, -2**31,
        2**40, 2**62]
FLOATS = [0.0, -0.0, 1.0, -1.0, 0.5, 352.0, 544.0, 1e-45, 1e30, 1e38, 3.4e38, 2.0**31, float("nan"), float("inf"),
          float("-inf")]


OPS = ("field", "field", "field", "byte", "ext_int32", "data", "truncate", "append")


def _pick(rng: np.random.Generator, values: list):
    return values[int(rng.integers(len(values)))]


def _set_field(buf: bytearray, rng: np.random.Generator) -> None:
    """Overwrite one element of one header field with an interesting or random value."""
    if len(buf) < 4:
        return
    dt = (nib.nifti2 if header_size(bytes(buf[:4])) == 540 else nib.nifti1).header_dtype.newbyteorder("<")
    if len(buf) < dt.itemsize:
        return
    view = np.ndarray((), dtype=dt, buffer=buf)
    name = _pick(rng, list(dt.names) + ["dim"] * 8 + ["datatype", "vox_offset", "scl_slope", "scl_inter"] * 2)
    sub = dt.fields[name][0]
    base, shape = (sub.base, sub.shape) if sub.shape else (sub, ())
    idx = tuple(int(rng.integers(n)) for n in shape)
    if base.kind in "iu":
        info = np.iinfo(base)
        val = _pick(rng, INTS) if rng.random() < 0.7 else int(rng.integers(info.min, info.max, endpoint=True))
        val = int(np.clip(val, info.min, info.max))
    elif base.kind == "f":
        val = _pick(rng, FLOATS) if rng.random() < 0.7 else float(rng.standard_normal() * 10.0 ** rng.integers(-3, 30))
    else:  # byte strings (magic, descrip, ...)
        val = rng.bytes(int(rng.integers(0, base.itemsize + 1)))
    if shape:
        view[name][idx] = val
    else:
        view[name] = val


def mutate(seed: bytes, ops: list[str], rs: int, container: int) -> bytes:
    """Apply ``ops`` to ``seed`` with positions/values from a RNG seeded by ``rs``; ``container``: 0 plain,
    1 gzip, 2 gzip with a flipped byte, 3 gzip cut short."""
    rng = np.random.default_rng(rs)
    buf = bytearray(seed)
    for op in ops:
        if op == "field":
            _set_field(buf, rng)
        elif op == "byte" and buf:
            buf[int(rng.integers(min(len(buf), 560)))] = int(rng.integers(256))
        elif op == "ext_int32" and len(buf) > 356:  # extension flag / esize / ecode region
            pos = _pick(rng, [348, 352, 356, 544, 548]) if rng.random() < 0.6 else int(rng.integers(340, len(buf)))
            pos = min(pos, len(buf) - 4)
            val = _pick(rng, INTS[:-2]) if rng.random() < 0.7 else int(rng.integers(-2**31, 2**31))
            buf[pos:pos + 4] = np.int32(val).astype("<i4").tobytes()
        elif op == "data" and buf:
            buf[int(rng.integers(len(buf)))] = int(rng.integers(256))
        elif op == "truncate":
            del buf[int(rng.integers(len(buf) + 1)):]
        elif op == "append":
            buf += rng.bytes(int(rng.integers(1, 65)))
    data = bytes(buf)
    if container == 0:
        return data
    data = bytearray(gzip.compress(data, compresslevel=1, mtime=0))
    if container == 2:
        data[int(rng.integers(len(data)))] ^= int(rng.integers(1, 256))
    elif container == 3:
        del data[int(rng.integers(len(data))):]
    return bytes(data)


@st.composite
def mutated_files(draw) -> tuple[bytes, int]:
    """(file bytes, number of changes applied). Hypothesis chooses the structure (seed file, list of mutation
    kinds, container); positions and values come from a drawn RNG seed, which keeps generation cheap."""
    seed = SEEDS[draw(st.integers(0, len(SEEDS) - 1))]
    ops = draw(st.lists(st.sampled_from(OPS), max_size=6))
    container = draw(st.sampled_from([0, 0, 1, 1, 2, 3]))
    rs = draw(st.integers(0, 2**32 - 1))
    return mutate(seed, ops, rs, container), len(ops) + (container >= 2)


class _Timeout(Exception):
    pass


def _alarm(*_):
    raise _Timeout(f"read_volume took more than {SECONDS_PER_CASE} s")


def check_case(folder: Path, data: bytes, n_mutations: int, nonfinite: str) -> None:
    """The fuzz property for one file (the SIGALRM bound covers reading and writing back)."""
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, SECONDS_PER_CASE)
    try:
        _check_case(folder, data, n_mutations, nonfinite)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _check_case(folder: Path, data: bytes, n_mutations: int, nonfinite: str) -> None:
    p = folder / "case.nii.gz"
    p.write_bytes(data)
    limits = ReadLimits(LIMITS.max_dim, LIMITS.max_voxels, nonfinite, LIMITS.max_header_bytes)
    tracemalloc.start()
    try:
        vol = read_volume(p, limits)
    except InputError as exc:
        vol = None
        msg = str(exc)
        assert "took more than" not in msg, msg  # the SIGALRM bound, caught and re-worded by the reader
        assert msg.startswith(str(p)) and "\n" not in msg, msg
        assert n_mutations > 0, f"an unmodified valid file was refused: {msg}"
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak <= PEAK_BOUND, f"reading allocated {peak} bytes (bound {PEAK_BOUND})"
    if vol is None:
        return
    d = vol.data
    assert d.dtype == np.float32 and d.ndim == 3
    assert max(d.shape) <= LIMITS.max_dim and d.size <= LIMITS.max_voxels and min(d.shape) >= 1
    assert np.isfinite(d).all()
    assert vol.affine.shape == (4, 4) and np.isfinite(vol.affine).all()
    # the writer accepts whatever header the reader accepted (in memory: write_volume adds only the atomic
    # temp-file-and-rename around this, and its fsync would dominate the run time)
    img = _result_image(d, vol.affine, vol.header)
    bio = io.BytesIO()
    img.to_file_map(img.make_file_map({"image": bio}))
    back = nib.Nifti1Image.from_bytes(bio.getvalue())
    assert back.shape == d.shape
    np.testing.assert_array_equal(np.asarray(back.dataobj), d)


@pytest.fixture(scope="module")
def fuzz_dir():
    with tempfile.TemporaryDirectory(prefix="mood-fuzz-") as d:
        yield Path(d)


FUZZ = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                  HealthCheck.filter_too_much])


# derandomized: the normal suite sees the same 1,000 cases on every machine, so a green run here is a green run
# in CI; the opt-in long run below draws fresh cases each time
@settings(max_examples=1000, derandomize=True, **FUZZ)
@given(case=mutated_files(), nonfinite=st.sampled_from(["zero", "error"]))
def test_fuzz_reader(fuzz_dir: Path, case: tuple[bytes, int], nonfinite: str) -> None:
    check_case(fuzz_dir, case[0], case[1], nonfinite)


@pytest.mark.fuzz_long
@pytest.mark.skipif(not LONG, reason="opt-in: MOOD_FUZZ_LONG=1")
@settings(max_examples=20000, **FUZZ)
@given(case=mutated_files(), nonfinite=st.sampled_from(["zero", "error"]))
def test_fuzz_reader_long(fuzz_dir: Path, case: tuple[bytes, int], nonfinite: str) -> None:
    check_case(fuzz_dir, case[0], case[1], nonfinite)


def test_seeds_are_valid(fuzz_dir: Path) -> None:
    """The unmutated seeds read fine (so refusals in the fuzz run come from the mutations)."""
    for raw in SEEDS:
        for gz in (False, True):
            check_case(fuzz_dir, gzip.compress(raw, mtime=0) if gz else raw, 0, "error")
