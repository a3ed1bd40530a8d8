import logging

import nibabel as nib
import numpy as np

from tests.conftest import save_nifti
from mood_detector.training.api import warn_if_smaller_than_scored


def _vols(tmp_path, shapes):
    files = []
    for i, shape in enumerate(shapes):
        files.append(save_nifti(tmp_path / f"{i:05d}.nii.gz", np.zeros(shape, np.float32)))
    return files


def test_warns_once_counting_volumes_smaller_than_the_kinds_scoring_size(tmp_path, caplog):
    files = _vols(tmp_path, [(32, 32, 32), (40, 40, 40)])
    (tmp_path / "broken.nii.gz").write_bytes(b"not a nifti")  # skipped here: the loader reports it
    with caplog.at_level(logging.WARNING, logger="mood_detector.training.api"):
        assert warn_if_smaller_than_scored(files + [tmp_path / "broken.nii.gz"], "brain") == 2
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "2 of 3" in warnings[0].getMessage() and "256^3" in warnings[0].getMessage()


def test_silent_for_volumes_at_the_scoring_size(tmp_path, caplog):
    # a 256^3 header without its 64 MB of data: only the header is read
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((256, 256, 256))
    hdr.set_data_dtype(np.float32)
    hdr["vox_offset"] = 352
    files = [tmp_path / "00000.nii"]
    files[0].write_bytes(hdr.binaryblock + b"\0" * 4)
    with caplog.at_level(logging.WARNING, logger="mood_detector.training.api"):
        assert warn_if_smaller_than_scored(files, "brain") == 0
        assert warn_if_smaller_than_scored(files, "abdom") == 1  # the abdomen is scored at 512^3
    assert sum(r.levelno == logging.WARNING for r in caplog.records) == 1
