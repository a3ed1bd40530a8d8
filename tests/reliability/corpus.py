"""The bad-input corpus, generated on the fly: one input folder holding every kind of bad input
next to good ones, with the documented behaviour of each (the table in docs/reliability.md)."""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from tests.conftest import blob_volume, save_nifti
from tests.io.nifti_bytes import nifti_bytes, patch, write

S = (16, 16, 16)


@dataclass
class Corpus:
    """``folder`` with the inputs; what must happen to each entry (by file name)."""

    folder: Path
    scored: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # name -> 3D shape of the output
    failed: dict[str, str] = field(default_factory=dict)  # name -> regex the one-line reason must match
    ignored: list[str] = field(default_factory=list)


def build_corpus(root: Path) -> Corpus:
    """Create the corpus under ``root`` (the input folder is ``root/in``; link targets live in ``root/outside``)."""
    d = root / "in"
    d.mkdir(parents=True)
    outside = root / "outside"
    outside.mkdir()
    c = Corpus(d)
    vol = blob_volume(S, seed=3)

    def scored(name: str, data: np.ndarray, **kw) -> None:
        save_nifti(d / name, data, **kw)
        c.scored[name] = tuple(data.shape[:3])

    # --- scored ---------------------------------------------------------------------------------------
    scored("good.nii.gz", vol)
    scored("plain.nii", blob_volume((12, 18, 10), seed=4))
    nan = vol.copy()
    nan[4:6, 4:6, 4:6] = np.nan
    nan[8, 8, 8] = np.inf
    scored("nan_inf.nii.gz", nan)  # NaN/Inf -> 0 (warning), then scored
    hu = nib.Nifti1Image(np.round(vol * 2024 - 1024).astype(np.int16), np.eye(4))
    hu.header.set_slope_inter(1.0, 0.0)
    nib.save(hu, str(d / "ct_hounsfield_int16.nii.gz"))  # min-max scaled to [0, 1]
    c.scored["ct_hounsfield_int16.nii.gz"] = S
    scored("negative.nii.gz", vol * 8.0 - 5.0)  # min-max scaled
    scored("all_zero.nii.gz", np.zeros(S, np.float32))
    scored("constant.nii.gz", np.full(S, 7.5, np.float32))  # constant -> all zeros after normalisation
    scored("ünïcödé name with spaces.nii.gz", blob_volume(S, seed=5))
    scored(os.fsdecode(b"non-utf8 \xff\xfe bytes.nii.gz"), blob_volume(S, seed=10))
    scored("odd_shape.nii.gz", blob_volume((9, 21, 13), seed=6))
    scored("trailing_singleton_4d.nii.gz", blob_volume(S, seed=7)[..., None])
    write(d / "with_extension.nii.gz", nifti_bytes(vol, ext=b"SECRET-EXTENSION-PAYLOAD" * 4))
    c.scored["with_extension.nii.gz"] = S
    write(d / "plain_content_gz_name.nii.gz", nifti_bytes(blob_volume(S, seed=8)), gz=False)
    c.scored["plain_content_gz_name.nii.gz"] = S
    save_nifti(outside / "target.nii.gz", blob_volume(S, seed=9))
    (d / "symlink_outside.nii.gz").symlink_to(outside / "target.nii.gz")  # links are followed
    c.scored["symlink_outside.nii.gz"] = S

    # --- failed (one line each, the other inputs still scored) ------------------------------------------
    (d / "not_gzip.nii.gz").write_text("this is a text file, not NIfTI and not gzip\n")
    c.failed["not_gzip.nii.gz"] = "not a NIfTI-1/2 file"
    full = gzip.compress(nifti_bytes(np.random.default_rng(0).random(S).astype(np.float32)), mtime=0)
    (d / "truncated.nii.gz").write_bytes(full[: len(full) // 2])
    c.failed["truncated.nii.gz"] = "truncated"
    write(d / "wrong_magic.nii.gz", patch(nifti_bytes(vol), magic=b"abc"))
    c.failed["wrong_magic.nii.gz"] = "wrong NIfTI magic"
    save_nifti(d / "image_2d.nii.gz", blob_volume(S)[:, :, 0])
    c.failed["image_2d.nii.gz"] = "expected a 3D volume, header says 2D"
    save_nifti(d / "image_4d.nii.gz", np.stack([vol, vol], axis=-1))
    c.failed["image_4d.nii.gz"] = "expected a 3D volume, header says 4D"
    write(d / "zero_length_dim.nii.gz", patch(nifti_bytes(vol), dim=[3, 16, 0, 16, 1, 1, 1, 1]))
    c.failed["zero_length_dim.nii.gz"] = "zero-length dimension"
    write(d / "terabyte_header.nii.gz", patch(nifti_bytes(vol), dim=[3, 32767, 32767, 32767, 1, 1, 1, 1]))
    c.failed["terabyte_header.nii.gz"] = "exceeds the maximum"
    (d / "empty.nii").write_bytes(b"")
    c.failed["empty.nii"] = "empty file"
    (d / "broken_link.nii.gz").symlink_to(outside / "does_not_exist.nii.gz")
    c.failed["broken_link.nii.gz"] = "broken symbolic link"
    os.mkfifo(d / "fifo.nii")
    c.failed["fifo.nii"] = "not a regular file"

    # --- ignored (one log line), never scored, never failures ------------------------------------------
    (d / "notes.txt").write_text("not an image")
    (d / "sub").mkdir()
    save_nifti(d / "sub" / "nested.nii.gz", vol)  # sub-folders are not searched
    (d / "folder_named.nii.gz").mkdir()
    save_nifti(d / ".hidden.nii.gz", vol)
    c.ignored += ["notes.txt", "sub", "folder_named.nii.gz", ".hidden.nii.gz"]
    return c
