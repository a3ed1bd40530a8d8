"""Adapting a model once to a site's normal scans (mood_detector/inference/site.py)."""

from pathlib import Path

import pytest
import torch

from mood_detector.detector import load_detector
from mood_detector.errors import MoodError
from mood_detector.inference.adapt import FinetuneConfig
from mood_detector.inference.site import SiteConfig, adapt_to_site
from tests.conftest import StandIn, blob_volume, save_nifti, stand_in_card


def site_folder(tmp_path: Path, n: int = 3) -> list[Path]:
    d = tmp_path / "site"
    d.mkdir()
    return [save_nifti(d / f"s{i}.nii.gz", blob_volume(seed=60 + i) * 700.0) for i in range(n)]


def test_adapt_to_site_changes_the_weights_and_says_so_in_the_card(tmp_path: Path, tiny_fpi: Path):
    files = site_folder(tmp_path)
    (tmp_path / "site" / "broken.nii.gz").write_bytes(b"not a volume")
    det = load_detector(tiny_fpi)
    before = {k: v.clone() for k, v in det.state_tensors().items()}
    cfg = SiteConfig(finetune=FinetuneConfig(steps=3, batch_size=4, seed=5, guard=False), device="cpu")
    res = adapt_to_site([*files, tmp_path / "site" / "broken.nii.gz"], det, cfg, base_name="fpi.safetensors",
                        folder_name="site")
    assert res.used == files and [p.name for p, _ in res.failed] == ["broken.nii.gz"]
    assert "\n" not in res.failed[0][1]
    assert any(not torch.equal(before[k], v) for k, v in det.state_tensors().items())
    info = det.card.extra["site_adaptation"]
    assert info["scans"] == 3 and info["folder"] == "site" and info["steps"] == 3 and info["seed"] == 5
    assert info["base"]["name"] == "fpi.safetensors" and info["base"]["detector"] == "fpi"
    assert "adapted to 3 normal scans of the folder 'site'" in det.card.training_data
    assert det.card.extra["adapt"] == "none"


def test_adapt_to_site_refuses_a_detector_without_a_task(tmp_path: Path):
    class Plain(StandIn):
        name = "plain"

        def score_slices(self, x):
            raise AssertionError("not scored")

    with pytest.raises(MoodError, match="no self-supervised task"):
        adapt_to_site(site_folder(tmp_path), Plain(stand_in_card("plain")), SiteConfig(device="cpu"))


def test_adapt_to_site_with_no_usable_scan_is_an_error(tmp_path: Path, tiny_fpi: Path):
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"junk")
    with pytest.raises(MoodError, match="no usable scan"):
        adapt_to_site([bad], load_detector(tiny_fpi), SiteConfig(device="cpu"))
