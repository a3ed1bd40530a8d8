"""The bundled weights (weights/<kind>/fpi.*): they load, their cards say what they are, and they mark a planted
sphere of added intensity in a fresh generated subject."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mood_detector.detector import load_detector
from mood_detector.inference.predictor import PredictConfig, Predictor

WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
KINDS = ("brain", "abdom")


def subject(kind: str, size: int) -> np.ndarray:
    """A fresh generated subject (index far from any training set)."""
    import tempfile

    from mood_detector.io.nifti import read_volume

    with tempfile.TemporaryDirectory() as tmp:
        if kind == "brain":
            from mood_detector.data.brain import make_brain_data

            (f,) = make_brain_data(tmp, 1, size=size, seed=123, start=77_000)
        else:
            from mood_detector.data.abdomen import make_abdomen_data

            (f,) = make_abdomen_data(tmp, 1, size=size, seed=123, start=77_000)
        return read_volume(f).data


@pytest.mark.parametrize("kind", KINDS)
def test_bundled_model_loads_with_its_card(kind):
    path = WEIGHTS / kind / "fpi.safetensors"
    assert path.is_file(), f"no bundled weights for {kind}"
    det = load_detector(path)
    card = det.card
    assert (card.detector, card.kind, card.mode, card.classes) == ("fpi", kind, "discrete", 5)
    assert card.size == 128 and card.extra["skips"] is True and card.extra["out_bias"] is True
    assert "generated" in card.training_data
    text = (WEIGHTS / kind / "MODEL_CARD.md").read_text()
    assert "generated" in text and "not" in text.lower()


# A darker sphere: uniform addition with a negative shift (evaluation outlier type 1). The bundled models mark
# intensity drops; a brightened sphere they do not (see the model cards). The abdomen's shift is smaller: at
# -0.5 soft tissue turns into air, which the phantom's bowel gas makes normal.
SHIFT = {"brain": -0.5, "abdom": -0.25}


@pytest.mark.parametrize("kind", KINDS)
def test_bundled_model_marks_a_planted_sphere(kind):
    vol = subject(kind, 96)
    g = np.indices(vol.shape)
    fg = vol > 0
    centre = np.round(np.array(np.nonzero(fg)).mean(1)).astype(int) + np.array([10, 0, 0])
    sphere = ((g - centre[:, None, None, None]) ** 2).sum(0) <= 8**2
    assert fg[sphere].mean() > 0.9                      # the sphere lies in the body / brain
    vol[sphere] = np.clip(vol[sphere] + SHIFT[kind], 0, 1)
    det = load_detector(WEIGHTS / kind / "fpi.safetensors")
    res = Predictor(det, PredictConfig(device="cpu", threads=1, progress=False)).score_volume(vol)
    inside, rest = res.pixel[sphere].mean(), res.pixel[fg & ~sphere].mean()
    assert inside > 2 * rest, (inside, rest)
