"""NIfTI reader and writer built on nibabel.

The reader validates the header before any voxel data is read (rank, each dimension, total voxel count,
data type), so a hostile header cannot make us allocate terabytes. The writer keeps the input's geometry
(shape, affine, qform/sform codes, zooms) and writes atomically: a hidden temporary file in the target folder,
flushed and fsynced, then renamed over the final name.
"""

from __future__ import annotations

import gzip
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from mood_detector.errors import InputError

log = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii", ".nii.gz")


@dataclass(frozen=True)
class ReadLimits:
    """Limits checked against the header before reading data.

    Attributes:
        max_dim: largest allowed size of any one dimension.
        max_voxels: largest allowed number of voxels (512**3 fits; a 1024**3 volume does not by default).
        nonfinite: ``"error"`` refuses NaN/Inf values; ``"zero"`` replaces them by 0 with a warning.
    """

    max_dim: int = 1024
    max_voxels: int = 512**3
    nonfinite: str = "error"


@dataclass
class Volume:
    """A volume as float32 plus what is needed to write a result with the same geometry."""

    data: np.ndarray
    affine: np.ndarray
    header: Any
    path: Path
    props: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)


def is_nifti(path: Path) -> bool:
    """True for names ending in ``.nii`` or ``.nii.gz`` (case-insensitive)."""
    name = path.name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def list_volumes(folder: str | Path) -> list[Path]:
    """All ``*.nii`` / ``*.nii.gz`` files directly in ``folder``, sorted by name; hidden files are skipped."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if is_nifti(p) and not p.name.startswith(".") and not p.is_dir())


def output_name(input_path: Path) -> str:
    """The pixel-task output name: exactly the input's file name (MOOD contract)."""
    return input_path.name


def _load_header(path: Path) -> nib.Nifti1Image:
    if not path.exists():
        raise InputError(path, "file does not exist")
    if path.is_dir():
        raise InputError(path, "is a directory, not a NIfTI file")
    try:
        img = nib.load(str(path))  # lazy: reads the header only
    except Exception as exc:  # nibabel raises many types for malformed files
        raise InputError(path, f"not a readable NIfTI file ({type(exc).__name__}: {exc})") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputError(path, f"not a NIfTI-1/2 image ({type(img).__name__})")
    return img


def _check_header(path: Path, img: nib.Nifti1Image, limits: ReadLimits) -> tuple[int, ...]:
    shape = tuple(int(s) for s in img.header.get_data_shape())
    # A trailing singleton 4th dimension (x, y, z, 1) is a 3D volume written by some tools.
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) != 3:
        raise InputError(path, f"expected a 3D volume, header says {len(shape)}D with shape {shape}")
    if min(shape) < 1:
        raise InputError(path, f"zero-length dimension in shape {shape}")
    if max(shape) > limits.max_dim:
        raise InputError(path, f"dimension {max(shape)} exceeds the maximum {limits.max_dim} (shape {shape})")
    n = int(np.prod(np.asarray(shape, dtype=np.int64)))
    if n > limits.max_voxels:
        raise InputError(path, f"{n} voxels exceed the cap of {limits.max_voxels} (shape {shape})")
    dtype = img.header.get_data_dtype()
    if dtype.fields is not None or dtype.kind not in "biuf":
        raise InputError(path, f"unsupported voxel data type {dtype}")
    return shape


def read_volume(path: str | Path, limits: ReadLimits | None = None) -> Volume:
    """Read a 3D NIfTI volume as float32, validating the header first.

    Raises:
        InputError: naming the file and the reason, for anything that is not a readable, finite 3D volume
            within ``limits``.
    """
    path = Path(path)
    limits = limits or ReadLimits()
    img = _load_header(path)
    shape = _check_header(path, img, limits)
    try:
        data = np.asarray(img.get_fdata(dtype=np.float32), dtype=np.float32).reshape(shape)
    except Exception as exc:
        raise InputError(path, f"could not read voxel data ({type(exc).__name__}: {exc})") from None
    finite = np.isfinite(data)
    if not finite.all():
        bad = int(data.size - np.count_nonzero(finite))
        if limits.nonfinite == "zero":
            log.warning("%s: %d non-finite voxels replaced by 0", path, bad)
            data[~finite] = 0.0
        else:
            raise InputError(path, f"{bad} non-finite (NaN/Inf) voxel values")
    header = img.header.copy()
    props = {"shape": shape, "zooms": tuple(float(z) for z in header.get_zooms()[:3]),
             "dtype": str(img.header.get_data_dtype())}
    return Volume(data=data, affine=np.asarray(img.affine, dtype=np.float64), header=header, path=path, props=props)


def _result_image(data: np.ndarray, affine: np.ndarray, header: Any | None) -> nib.Nifti1Image:
    data = np.asarray(data, dtype=np.float32)
    if header is not None and isinstance(header, (nib.Nifti1Header, nib.Nifti2Header)):
        hdr = nib.Nifti1Header()
        hdr.set_data_shape(data.shape)
        hdr.set_zooms(tuple(header.get_zooms()[:3]))
        hdr.set_xyzt_units(*header.get_xyzt_units())
        img = nib.Nifti1Image(data, affine, header=hdr)
        qform, qcode = header.get_qform(coded=True)
        sform, scode = header.get_sform(coded=True)
        img.set_qform(qform if qcode else affine, int(qcode) if qcode else 1)
        img.set_sform(sform if scode else affine, int(scode) if scode else 1)
    else:
        img = nib.Nifti1Image(data, affine)
    img.set_data_dtype(np.float32)
    img.header["scl_slope"] = 1.0
    img.header["scl_inter"] = 0.0
    return img


def publish(tmp: str | Path, path: Path) -> None:
    """Make a finished temporary file readable (0644) and rename it to its final name atomically."""
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def write_volume(path: str | Path, data: np.ndarray, affine: np.ndarray, header: Any | None = None,
                 compresslevel: int = 1) -> Path:
    """Write ``data`` as a float32 NIfTI with the given geometry, atomically.

    ``.nii.gz`` names are gzip-compressed (``mtime=0``, so equal data give equal bytes); the file appears under
    its final name only once it is complete.
    """
    path = Path(path)
    img = _result_image(data, affine, header)
    gz = path.name.lower().endswith(".gz")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as raw:
            stream: Any = gzip.GzipFile(filename="", fileobj=raw, mode="wb", compresslevel=compresslevel, mtime=0) \
                if gz else raw
            try:
                img.to_file_map(img.make_file_map({"image": stream}))
            finally:
                if gz:
                    stream.close()
            raw.flush()
            os.fsync(raw.fileno())
        publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write a small text file atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
