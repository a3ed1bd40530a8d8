"""Without --kind, a volume whose shape is not a canonical cube gets a guessed kind: CT in Hounsfield units goes to
the abdomen detector, and each such file gets one warning naming it, the kind and why."""

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mood_detector.detector import SliceScores
from mood_detector.inference.predictor import PredictConfig, Predictor
from tests.conftest import StandIn, blob_volume, save_nifti, stand_in_card
from tests.reliability.helpers import predict_args, run_cli


class Recording(StandIn):
    """A stand-in detector of one kind that counts the volumes it scores (slice batches at its slice axis)."""

    name = "recording"

    def score_slices(self, x):
        self.batches += 1
        return SliceScores(pixel=x[:, 0].clamp(0, 1))


def _recording(kind: str) -> Recording:
    det = Recording(stand_in_card("recording", kind))
    det.batches = 0
    return det


def _ct(shape=(40, 40, 24)) -> np.ndarray:
    """A raw CT-like volume in HU: a soft-tissue ellipsoid (40 HU) in air (-1024 HU)."""
    return np.where(blob_volume(shape) > 0, 40.0, -1024.0).astype(np.float32)


def _guesses(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "kind guessed" in r.getMessage()]


@pytest.mark.parametrize("adapt", ["none", "bn"])
def test_ct_like_volume_goes_to_abdom_with_one_warning_per_file(tmp_path: Path, caplog, adapt: str):
    """A CT-like non-canonical volume is scored by the abdomen detector although its shape says brain; a
    normalised one by the shape rule; one warning each, also when adaptation reads the inputs first."""
    inp = tmp_path / "in"
    inp.mkdir()
    save_nifti(inp / "ct.nii.gz", _ct())
    save_nifti(inp / "unit.nii.gz", blob_volume((40, 40, 24), seed=2))  # [0, 1]: the data do not tell
    brain, abdom = _recording("brain"), _recording("abdom")
    cfg = PredictConfig(tasks=("sample",), device="cpu", progress=False, adapt=adapt, adapt_budget=1.0)
    pred = Predictor({"brain": brain, "abdom": abdom}, cfg)
    with caplog.at_level(logging.WARNING, logger="mood_detector.inference.predictor"):
        ct = pred.predict_files([inp / "ct.nii.gz"], tmp_path / "out_ct")
        after_ct = (brain.batches, abdom.batches)
        unit = pred.predict_files([inp / "unit.nii.gz"], tmp_path / "out_unit")
    assert ct.exit_code == 0 and unit.exit_code == 0
    assert after_ct[0] == 0 and after_ct[1] > 0, "the CT went to the abdomen detector only"
    assert brain.batches > 0 and abdom.batches == after_ct[1], "the [0, 1] volume went to the brain detector"
    warned = _guesses(caplog)
    assert len(warned) == 2, warned
    ct_line, unit_line = warned
    assert "ct.nii.gz" in ct_line and "'abdom'" in ct_line and "40x40x24" in ct_line
    assert "Hounsfield" in ct_line and "--kind" in ct_line
    assert "unit.nii.gz" in unit_line and "'brain'" in unit_line and "do not tell" in unit_line


def test_one_detector_for_all_volumes_guesses_nothing(tmp_path: Path, caplog):
    """With one detector (a weights file, or --kind) the kind is chosen, not guessed: no warning."""
    inp = tmp_path / "in"
    inp.mkdir()
    save_nifti(inp / "ct.nii.gz", _ct())
    det = _recording("brain")
    pred = Predictor(det, PredictConfig(tasks=("sample",), device="cpu", progress=False))
    with caplog.at_level(logging.WARNING, logger="mood_detector.inference.predictor"):
        assert pred.predict_files([inp / "ct.nii.gz"], tmp_path / "out").exit_code == 0
    assert det.batches > 0 and not _guesses(caplog)


def test_missing_weights_for_the_guessed_kind_name_the_reason(tmp_path: Path):
    inp = tmp_path / "in"
    inp.mkdir()
    save_nifti(inp / "ct.nii.gz", _ct())
    pred = Predictor({"brain": _recording("brain")}, PredictConfig(tasks=("sample",), device="cpu", progress=False))
    rep = pred.predict_files([inp / "ct.nii.gz"], tmp_path / "out")
    assert rep.exit_code == 1
    assert "no weights for kind 'abdom'" in rep.failed[0][1] and "Hounsfield" in rep.failed[0][1]


def test_cli_warns_once_naming_the_file(tmp_path: Path, tiny_fpi: Path):
    """``mood-detector predict`` with a weights folder and no --kind: one warning line for the guessed file."""
    weights = tmp_path / "weights"
    for kind in ("brain", "abdom"):
        (weights / kind).mkdir(parents=True)
        for suffix in (".safetensors", ".json"):
            src = tiny_fpi.with_suffix(suffix)
            if src.exists():
                shutil.copy(src, weights / kind / f"fpi{suffix}")
    inp = tmp_path / "in"
    inp.mkdir()
    save_nifti(inp / "scan.nii.gz", _ct())
    res = run_cli(*predict_args("sample", inp, tmp_path / "out", weights, "--detector", "fpi"))
    assert res.exit_code == 0, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if "kind guessed" in ln]
    assert len(lines) == 1, res.stderr
    assert "scan.nii.gz" in lines[0] and "'abdom'" in lines[0] and "pass --kind" in lines[0]
