from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mood_detector.detector import load_detector
from mood_detector.inference.api import predict_folder
from mood_detector.inference.predictor import PredictConfig, Predictor
from mood_detector.preprocess import prepare
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


def _column_detector(size: int = 16, extra: dict | None = None):
    """A stand-in detector whose pixel score is the input times the column position (0..1): which volume axis
    a slice's columns run along shows in the map."""
    import torch

    from mood_detector.detector import SliceScores
    from tests.conftest import StandIn, stand_in_card

    class Column(StandIn):
        name = "column"

        def score_slices(self, x):
            cols = torch.linspace(0, 1, x.shape[-1])
            return SliceScores(pixel=x[:, 0] * cols)

    return Column(stand_in_card("column", size=size, extra=extra))


@pytest.mark.parametrize("source", ["config", "card"])
def test_all_axes_average_the_three_slicings(source):
    """``axes='all'`` (from the config, or from the card's train_axes) averages the maps of slicing along the
    model's axis and the two others; the sample score is the mean of the three axes' sample scores."""
    from mood_detector.inference.aggregate import sample_score

    n = 16
    vol = np.random.default_rng(0).random((n, n, n)).astype(np.float32) + 0.1
    vol /= vol.max()
    x = prepare(vol.copy())[0]  # what the network is given (outside the foreground the map is 0 as x is)
    model = _column_detector(n)
    one = Predictor(model, PredictConfig(device="cpu", axes="model")).score_volume(vol.copy())
    det = _column_detector(n, {"train_axes": "all"} if source == "card" else None)
    cfg = PredictConfig(device="cpu", axes="all" if source == "config" else None)
    fused = Predictor(det, cfg).score_volume(vol.copy())
    c = np.linspace(0, 1, n, dtype=np.float32)
    # columns of the slices: axis 1 for slice axis 2, axis 2 for slice axes 0 and 1
    by_axis = [x * c[None, :, None], x * c[None, None, :], x * c[None, None, :]]
    np.testing.assert_allclose(one.pixel, by_axis[0], atol=1e-5)
    np.testing.assert_allclose(fused.pixel, sum(by_axis) / 3, atol=1e-5)
    samples = [sample_score(np.moveaxis(m, a, 0).mean(axis=(1, 2))) for m, a in zip(by_axis, (2, 0, 1))]
    assert fused.sample == pytest.approx(float(np.mean(samples)), abs=1e-5)
    np.testing.assert_allclose(fused.slice_scores, one.slice_scores, atol=1e-6)


def test_axes_value_checked():
    with pytest.raises(ValueError, match="axes"):
        PredictConfig(axes="sideways")
    with pytest.raises(ValueError, match="train_axes"):
        Predictor(_column_detector(16, {"train_axes": "x"}), PredictConfig(device="cpu")).score_volume(
            np.ones((16, 16, 16), np.float32))


@pytest.mark.parametrize("source", ["config", "card"])
def test_mirror_averages_the_mirrored_pass_in_the_input_orientation(source):
    """``mirror='1'`` (from the config, or the card's tta_mirror) also scores the volume mirrored along axis 1
    and mirrors that map back before averaging: for the column detector (slice axis 2, columns along axis 1)
    the mirrored pass scores ``vol * (1 - c)``, so the average is ``vol / 2``. Mirroring along axis 0, which the
    column score does not depend on, leaves the map as it is."""
    from mood_detector.inference.aggregate import sample_score

    n = 16
    vol = np.random.default_rng(1).random((n, n, n)).astype(np.float32) + 0.1
    vol /= vol.max()
    x = prepare(vol.copy())[0]  # what the network is given
    c = np.linspace(0, 1, n, dtype=np.float32)[None, :, None]
    det = _column_detector(n, {"tta_mirror": "1"} if source == "card" else None)
    res = Predictor(det, PredictConfig(device="cpu", mirror="1" if source == "config" else None)).score_volume(
        vol.copy())
    np.testing.assert_allclose(res.pixel, x / 2, atol=1e-5)
    samples = [sample_score(np.moveaxis(m, 2, 0).mean(axis=(1, 2))) for m in (x * c, x * (1 - c))]
    assert res.sample == pytest.approx(float(np.mean(samples)), abs=1e-5)
    plain = Predictor(_column_detector(n), PredictConfig(device="cpu")).score_volume(vol.copy())
    same = Predictor(_column_detector(n), PredictConfig(device="cpu", mirror="0")).score_volume(vol.copy())
    np.testing.assert_allclose(same.pixel, plain.pixel, atol=1e-6)
    np.testing.assert_allclose(plain.pixel, x * c, atol=1e-5)


@pytest.mark.parametrize("spec", ["3", "x", "", "0,,1", "-1"])
def test_mirror_value_checked(spec):
    with pytest.raises(ValueError, match="mirror"):
        PredictConfig(mirror=spec)
    with pytest.raises(ValueError, match="tta_mirror"):
        Predictor(_column_detector(16, {"tta_mirror": spec}), PredictConfig(device="cpu")).score_volume(
            np.ones((16, 16, 16), np.float32))


def test_mirror_parsed():
    from mood_detector.inference.predictor import parse_mirror

    assert parse_mirror("none") == () and parse_mirror("0") == (0,) and parse_mirror("2,0,2") == (2, 0)


def test_cli_mirror(tmp_path: Path, tiny_fpi: Path):
    """``predict --mirror 0`` scores and writes as usual; a bad value is a usage error naming the option."""
    from tests.reliability.helpers import predict_args, run_cli

    inp = tmp_path / "in"
    inp.mkdir()
    save_nifti(inp / "a.nii.gz", blob_volume(seed=3))
    res = run_cli(*predict_args("sample", inp, tmp_path / "out", tiny_fpi, "--mirror", "0"))
    assert res.exit_code == 0, res.stderr
    assert 0.0 <= float((tmp_path / "out" / "a.nii.gz.txt").read_text()) <= 1.0
    bad = run_cli(*predict_args("sample", inp, tmp_path / "out2", tiny_fpi, "--mirror", "left"))
    assert bad.exit_code == 2 and "--mirror" in bad.stderr and not (tmp_path / "out2").exists()


def test_card_score_axes_overrides_train_axes():
    det = _column_detector(16, {"train_axes": "all", "score_axes": "model"})
    assert Predictor(det, PredictConfig(device="cpu")).axes_for(det) == [2]
    assert len(Predictor(det, PredictConfig(device="cpu", axes="all")).axes_for(det)) == 3
    det = _column_detector(16, {"train_axes": "all"})
    assert len(Predictor(det, PredictConfig(device="cpu")).axes_for(det)) == 3
