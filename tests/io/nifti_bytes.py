"""Helpers that build NIfTI files byte by byte, so tests can write headers no well-behaved writer produces."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import nibabel as nib
import numpy as np

AFFINE = np.array([[1.5, 0, 0, -20.0], [0, 1.2, 0, 10.0], [0, 0, 0.9, 5.0], [0, 0, 0, 1]])


def nifti_bytes(data: np.ndarray, nifti2: bool = False, ext: bytes | None = None,
                affine: np.ndarray | None = None) -> bytes:
    """A valid single-file NIfTI-1 (or -2) image as bytes, optionally with one comment extension."""
    cls = nib.Nifti2Image if nifti2 else nib.Nifti1Image
    img = cls(data, AFFINE if affine is None else affine)
    if ext is not None:
        img.header.extensions.append(nib.nifti1.Nifti1Extension(6, ext))
    bio = io.BytesIO()
    img.to_file_map(img.make_file_map({"image": bio}))
    return bio.getvalue()


def header_size(raw: bytes) -> int:
    """348 for NIfTI-1, 540 for NIfTI-2 (little-endian files, as nibabel writes them on x86)."""
    return int(np.frombuffer(raw[:4], "<i4")[0])


def patch(raw: bytes, **fields) -> bytes:
    """``raw`` with header fields (nibabel names, e.g. ``dim=[3, 9, 9, 9, 1, 1, 1, 1]``) overwritten."""
    buf = bytearray(raw)
    dt = nib.nifti2.header_dtype if header_size(raw) == 540 else nib.nifti1.header_dtype
    view = np.ndarray((), dtype=dt.newbyteorder("<"), buffer=buf)
    for k, v in fields.items():
        view[k] = v
    return bytes(buf)


def put_int32(raw: bytes, offset: int, value: int) -> bytes:
    """``raw`` with a little-endian int32 written at ``offset``."""
    buf = bytearray(raw)
    buf[offset:offset + 4] = np.int32(value).astype("<i4").tobytes()
    return bytes(buf)


def write(path: Path, raw: bytes, gz: bool | None = None) -> Path:
    """Write ``raw`` to ``path``, gzip-compressed when ``gz`` (default: when the name ends in .gz)."""
    if gz is None:
        gz = path.name.endswith(".gz")
    path.write_bytes(gzip.compress(raw, compresslevel=1, mtime=0) if gz else raw)
    return path
