from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mood_detector.detector import load_detector
from mood_detector.inference.api import predict_folder
from mood_detector.inference.predictor import PredictConfig, Predictor
from tests.conftest import blob_volume, save_nifti


def test_output_names_for_nii_and_niigz(tmp_path: Path, tiny_fpi: Path):
    inp = tmp_path / "in"
    inp.mkdir()
    save_nifti(inp / "toy_0.nii.gz", blob_volume(seed=1))
    save_nifti(inp / "toy_1.nii", blob_volume(seed=2))
    out = tmp_path / "out"
    rep = predict_folder(inp, out, PredictConfig(tasks=("pixel", "sample"), device="cpu", progress=False),
                         weights=tiny_fpi)
    assert rep.exit_code == 0 and len(rep.scored) == 2
    assert sorted(p.name for p in out.iterdir()) == ["toy_0.nii.gz", "toy_0.nii.gz.txt", "toy_1.nii",
                                                     "toy_1.nii.txt"]
    assert (out / "toy_0.nii.gz").read_bytes()[:2] == b"\x1f\x8b"  # gz name -> gzip content
    assert (out / "toy_1.nii").read_bytes()[:2] != b"\x1f\x8b"
    for txt in out.glob("*.txt"):
        v = float(txt.read_text())
        assert 0.0 <= v <= 1.0
    img = nib.load(str(out / "toy_1.nii"))
    assert img.get_data_dtype() == np.float32 and img.shape == (32, 32, 32)
    np.testing.assert_allclose(img.affine, nib.load(str(inp / "toy_1.nii")).affine)


def test_odd_shape_resampled_back(tmp_path: Path, tiny_fpi: Path):
    det = load_detector(tiny_fpi)
    pred = Predictor(det, PredictConfig(device="cpu", progress=False))
    data = blob_volume((27, 41, 19)) * 300.0 - 50.0  # odd shape, non-[0,1] intensities
    res = pred.score_volume(data)
    assert res.pixel.shape == (27, 41, 19) and res.pixel.dtype == np.float32
    assert float(res.pixel.min()) >= 0.0 and float(res.pixel.max()) <= 1.0
    assert 0.0 <= res.sample <= 1.0 and res.slice_scores.shape == (32,)


def test_bad_file_reported_others_scored(tmp_path: Path, tiny_fpi: Path):
    inp = tmp_path / "in"
    inp.mkdir()
    save_nifti(inp / "good.nii.gz", blob_volume())
    (inp / "bad.nii.gz").write_bytes(b"garbage")
    rep = predict_folder(inp, tmp_path / "out", PredictConfig(tasks=("sample",), device="cpu", progress=False),
                         weights=tiny_fpi)
    assert rep.exit_code == 1 and [p.name for p in rep.scored] == ["good.nii.gz"]
    assert rep.failed[0][0].name == "bad.nii.gz"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.nii.gz.txt"]


def test_cpu_inference_is_deterministic(tiny_fpi: Path):
    det = load_detector(tiny_fpi)
    pred = Predictor(det, PredictConfig(device="cpu", progress=False))
    data = blob_volume(seed=5)
    a, b = pred.score_volume(data), pred.score_volume(data)
    assert np.array_equal(a.pixel, b.pixel) and a.sample == b.sample
