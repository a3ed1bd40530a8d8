import numpy as np

from mood_detector.evaluation.zscore import ZScoreModel, predict_zscore
from mood_detector.io.nifti import read_volume
from tests.conftest import blob_volume, save_nifti


def test_zscore_marks_a_planted_sphere(tmp_path):
    train = tmp_path / "train"
    train.mkdir()
    files = [save_nifti(train / f"{i}.nii.gz", blob_volume(seed=0) * (0.95 + 0.01 * i)) for i in range(5)]
    vol = blob_volume(seed=0)
    g = np.indices(vol.shape)
    sphere = ((g - 16) ** 2).sum(0) <= 16
    vol[sphere] = np.clip(vol[sphere] + 0.5, 0, 1)
    inp = tmp_path / "in"
    inp.mkdir()
    save_nifti(inp / "case.nii.gz", vol)
    predict_zscore(files, inp, tmp_path / "out", size=32, kind="brain")
    score = read_volume(tmp_path / "out" / "case.nii.gz").data
    assert score.shape == vol.shape and score.min() >= 0 and score.max() <= 1
    assert score[sphere].mean() > 3 * score[~sphere].mean()
    assert 0 <= float((tmp_path / "out" / "case.nii.gz.txt").read_text()) <= 1


def test_fit_needs_two_volumes(tmp_path):
    import pytest

    with pytest.raises(ValueError):
        ZScoreModel.fit([save_nifti(tmp_path / "a.nii.gz", blob_volume())], 32, "brain")
