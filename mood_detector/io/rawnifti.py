"""Bounded, extension-free parsing of single-file NIfTI-1/2 images (plain or gzip-compressed).

Why not ``nibabel.load``: nibabel parses header *extensions* with sizes taken from the file and reads each
one with ``fileobj.read(esize - 8)`` without checking it against anything. A ``.nii.gz`` of a few kB whose
extension claims ``esize = 2**31 - 1`` makes it allocate 2 GiB before failing, and a huge ``vox_offset``
with the extension flag set does the same. We never use extensions (they are ignored, never copied to an
output), so this module reads exactly the fixed-size header, lets nibabel's own header class interpret and
check it, skips to the data with small bounded reads and reads exactly the number of bytes the (already
validated) header implies. Every read is bounded by :class:`~mood_detector.io.nifti.ReadLimits`:

* header: 348 (NIfTI-1) or 540 (NIfTI-2) bytes;
* skipped bytes between the header and the data (extensions): at most ``max_header_bytes``, read in chunks of
  at most 1 MiB;
* voxel data: exactly ``prod(shape) * itemsize`` bytes, with ``prod(shape) <= max_voxels``; trailing bytes are
  never read, so a gzip "bomb" that decompresses far beyond the header's size costs nothing.

Compression is detected from the content (gzip magic ``1f 8b``), not from the name, so a plain NIfTI named
``.nii.gz`` (or the reverse) is still read.
"""

from __future__ import annotations

import gzip
import logging
import stat
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

import nibabel as nib
import numpy as np
from nibabel.batteryrunners import BatteryRunner

from mood_detector.errors import InputError

log = logging.getLogger(__name__)

GZIP_MAGIC = b"\x1f\x8b"
CHUNK = 1 << 20  # largest single read (bytes); reads are never sized by an unchecked number from the file
# sizeof_hdr -> (header class, single-file magic, end of the header block incl. the 4 extension-flag bytes)
_FORMATS = {
    348: (nib.Nifti1Header, b"n+1", 352),
    540: (nib.Nifti2Header, b"n+2", 544),
}
# Errors a corrupt stream can raise while reading (gzip.BadGzipFile is an OSError).
STREAM_ERRORS = (OSError, EOFError, zlib.error, ValueError, OverflowError)


@dataclass(frozen=True)
class RawHeader:
    """A parsed NIfTI header (extensions dropped) and where its data starts.

    Attributes:
        header: nibabel ``Nifti1Header`` / ``Nifti2Header`` with no extensions.
        offset: byte offset of the voxel data in the (decompressed) stream.
        gz: whether the file is gzip-compressed.
    """

    header: nib.Nifti1Header
    offset: int
    gz: bool


def check_regular_file(path: Path) -> None:
    """Refuse anything but an existing regular file (symlinks are followed), without opening it: a FIFO or
    device named ``x.nii`` would otherwise block or stream forever."""
    try:
        st = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            raise InputError(path, "broken symbolic link (its target does not exist)") from None
        raise InputError(path, "file does not exist") from None
    except OSError as exc:
        raise InputError(path, f"cannot access file ({exc.strerror or exc})") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(path, "is a directory, not a NIfTI file")
    if not stat.S_ISREG(st.st_mode):
        raise InputError(path, "not a regular file (device, FIFO or socket)")
    if st.st_size == 0:
        raise InputError(path, "empty file (0 bytes)")


@contextmanager
def open_stream(path: Path) -> Iterator[tuple[BinaryIO, bool]]:
    """Open ``path`` for reading, transparently decompressing gzip content (detected by its magic bytes);
    yields ``(stream, is_gzip)``."""
    try:
        raw = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise InputError(path, f"cannot open file ({exc.strerror or exc})") from None
    try:
        gz = raw.read(2) == GZIP_MAGIC
        raw.seek(0)
        if gz:
            with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                yield stream, True  # type: ignore[misc]
        else:
            yield raw, False
    finally:
        raw.close()


def read_exact(stream: BinaryIO, n: int, path: Path, what: str) -> bytearray:
    """Read exactly ``n`` bytes (``n`` must already be validated) in bounded chunks.

    Raises:
        InputError: the stream ends early ("truncated") or is corrupt.
    """
    buf = bytearray(n)
    view = memoryview(buf)
    pos = 0
    try:
        while pos < n:
            got = stream.readinto(view[pos:pos + min(CHUNK, n - pos)])
            if not got:
                break
            pos += got
    except EOFError:
        raise InputError(path, f"file is truncated: the gzip stream ends inside the {what}") from None
    except STREAM_ERRORS as exc:
        raise InputError(path, f"corrupt or truncated file while reading the {what} "
                               f"({type(exc).__name__}: {exc})") from None
    finally:
        view.release()
    if pos < n:
        raise InputError(path, f"file is truncated: {what} needs {n} bytes, only {pos} present")
    return buf


def skip(stream: BinaryIO, n: int, path: Path) -> None:
    """Skip ``n`` bytes (already bounded by the caller) by reading and discarding bounded chunks."""
    left = n
    try:
        while left > 0:
            chunk = stream.read(min(CHUNK, left))
            if not chunk:
                raise InputError(path, f"file is truncated: it ends {left} bytes before the voxel data starts")
            left -= len(chunk)
    except STREAM_ERRORS as exc:
        raise InputError(path, f"corrupt or truncated file before the voxel data ({type(exc).__name__}: {exc})") \
            from None


def parse_header(stream: BinaryIO, path: Path, gz: bool, max_header_bytes: int) -> RawHeader:
    """Read and check the fixed-size NIfTI-1/2 header at the start of ``stream`` (extensions are skipped
    later, never parsed).

    Raises:
        InputError: not a single-file NIfTI-1/2 header, or one nibabel's own checks reject.
    """
    try:
        first = stream.read(4)
    except STREAM_ERRORS as exc:
        kind = "gzip stream" if gz else "file"
        raise InputError(path, f"corrupt {kind} ({type(exc).__name__}: {exc})") from None
    if len(first) < 4:
        raise InputError(path, f"too short to be a NIfTI file ({len(first)} bytes)")
    fmt = endian = None
    for e in ("<", ">"):
        size = int(np.frombuffer(first, dtype=f"{e}i4")[0])
        if size in _FORMATS:
            fmt, endian = size, e
            break
    if fmt is None:
        what = "gzip-compressed data" if gz else "file"
        raise InputError(path, f"not a NIfTI-1/2 {what}: header size field is "
                               f"{int(np.frombuffer(first, dtype='<i4')[0])}, expected 348 or 540")
    klass, magic, header_end = _FORMATS[fmt]
    block = bytes(first + read_exact(stream, fmt - 4, path, "NIfTI header"))
    try:
        hdr = klass(binaryblock=block, endianness=endian, check=False)
    except Exception as exc:  # noqa: BLE001 - nibabel raises several types for malformed blocks
        raise InputError(path, f"unreadable NIfTI header ({type(exc).__name__}: {exc})") from None
    got = bytes(hdr["magic"].item()).rstrip(b"\x00")
    if got != magic:
        if got == magic.replace(b"+", b"i"):
            raise InputError(path, "header of a .hdr/.img pair; only single-file .nii / .nii.gz is supported")
        raise InputError(path, f"wrong NIfTI magic {got!r} (expected {magic!r})")
    try:
        _, reports = BatteryRunner(klass._get_checks()).check_fix(hdr)
    except Exception as exc:  # noqa: BLE001
        raise InputError(path, f"invalid NIfTI header ({type(exc).__name__}: {exc})") from None
    for rep in reports:
        if rep.problem_level >= 40:
            raise InputError(path, f"invalid NIfTI header: {rep.problem_msg}")
        if rep.problem_msg:
            log.debug("%s: header fixed: %s", path, rep.message)
    raw_off = float(hdr["vox_offset"])
    if not np.isfinite(raw_off) or raw_off < 0:
        raise InputError(path, f"invalid data offset vox_offset={raw_off}")
    offset = max(int(raw_off), header_end)  # vox_offset 0 (seen in old files) means "right after the header"
    if offset - header_end > max_header_bytes:
        raise InputError(path, f"data offset {offset} leaves {offset - header_end} bytes of extensions, over the "
                               f"cap of {max_header_bytes}")
    hdr.extensions.clear()
    return RawHeader(header=hdr, offset=offset, gz=gz)


def read_data(stream: BinaryIO, raw: RawHeader, shape: tuple[int, ...], dtype: np.dtype, path: Path) -> np.ndarray:
    """Read the voxel array (``shape``, ``dtype`` and their product already validated against the caps)
    that starts at ``raw.offset``; the stream must be positioned right after the fixed header."""
    header_len = int(raw.header["sizeof_hdr"])
    skip(stream, raw.offset - header_len, path)
    n_bytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
    buf = read_exact(stream, n_bytes, path, "voxel data")
    return np.ndarray(shape, dtype=dtype, buffer=buf, order="F")
