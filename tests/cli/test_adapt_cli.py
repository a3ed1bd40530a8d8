"""``mood-detector adapt``: weights fine-tuned once on a site's normal scans, a card that says so, one-line
errors."""

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from mood_detector.cli import main
from mood_detector.weights import load_weights
from tests.conftest import blob_volume, save_nifti

#: enough steps for the tiny model's fine-tune to lower its task loss on held-out slices (the guard keeps it)
STEPS = "40"


@pytest.fixture
def site(tmp_path: Path) -> Path:
    d = tmp_path / "site_a"
    d.mkdir()
    for i in range(3):
        save_nifti(d / f"s{i}.nii.gz", blob_volume(seed=70 + i) * 800.0)
    return d


def run(*args: str):
    return CliRunner().invoke(main, ["adapt", *args])


def test_adapt_writes_adapted_weights_that_predict_uses(site: Path, tiny_fpi: Path, tmp_path: Path):
    out = tmp_path / "site.safetensors"
    res = run("-i", str(site), "-o", str(out), "-w", str(tiny_fpi), "--device", "cpu", "--steps", STEPS,
              "--seed", "3")
    assert res.exit_code == 0, res.output
    assert "adapted on 3 scans" in res.output
    tensors, card = load_weights(out)
    base, base_card = load_weights(tiny_fpi)
    assert any(not torch.equal(tensors[k], base[k]) for k in base)
    info = card.extra["site_adaptation"]
    assert (info["scans"], info["folder"], info["steps"], info["seed"]) == (3, "site_a", int(STEPS), 3)
    assert info["base"] == {"name": tiny_fpi.name, "detector": "fpi", "kind": "brain", "commit": base_card.commit,
                            "adapt": base_card.extra.get("adapt", "none")}
    assert card.training_data.startswith(base_card.training_data) and "adapted to 3 normal scans" in card.training_data
    pred = CliRunner().invoke(main, ["predict", "both", "-i", str(site), "-o", str(tmp_path / "pred"), "-w", str(out),
                                     "--device", "cpu", "--no-progress"])
    assert pred.exit_code == 0, pred.output
    assert sorted(p.name for p in (tmp_path / "pred").iterdir()) == [
        "s0.nii.gz", "s0.nii.gz.txt", "s1.nii.gz", "s1.nii.gz.txt", "s2.nii.gz", "s2.nii.gz.txt"]


def test_a_bad_scan_is_one_line_and_the_others_are_used(site: Path, tiny_fpi: Path, tmp_path: Path):
    (site / "zz_broken.nii.gz").write_bytes(b"not a volume")
    out = tmp_path / "site.safetensors"
    res = run("-i", str(site), "-o", str(out), "-w", str(tiny_fpi), "--device", "cpu", "--steps", STEPS)
    assert res.exit_code == 1
    assert "adapted on 3 scans" in res.output
    # the summary's line (the log's line goes to stderr too when the command runs with its logging set up)
    lines = [ln for ln in res.output.splitlines() if "zz_broken.nii.gz" in ln and "ERROR" not in ln]
    assert len(lines) == 1 and str(site / "zz_broken.nii.gz") in lines[0] and "not a NIfTI" in lines[0]
    assert load_weights(out)[1].extra["site_adaptation"]["scans"] == 3


@pytest.mark.parametrize("args, message, code", [
    (["--kind", "abdom"], "'--kind': abdom: the weights", 2),
    (["--detector", "nsa"], "'--detector': nsa: the weights", 2),
    (["--device", "foo"], "foo", 2),
])
def test_usage_errors_are_one_line(site: Path, tiny_fpi: Path, tmp_path: Path, args, message, code):
    res = run("-i", str(site), "-o", str(tmp_path / "x.safetensors"), "-w", str(tiny_fpi), *args)
    assert res.exit_code == code, res.output
    errors = [ln for ln in res.output.splitlines() if ln.startswith("Error")]
    assert len(errors) == 1 and message in res.output
    assert not (tmp_path / "x.safetensors").exists()


def test_empty_folder_and_bundled_output_are_refused(tmp_path: Path, tiny_fpi: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    res = run("-i", str(empty), "-o", str(tmp_path / "x.safetensors"), "-w", str(tiny_fpi))
    assert res.exit_code == 2 and "no .nii or .nii.gz scans" in res.output
    bundled = Path(__file__).resolve().parents[2] / "weights" / "brain" / "nsa.safetensors"
    before = bundled.read_bytes()
    res = run("-i", str(empty), "-o", str(bundled), "-w", str(tiny_fpi))
    assert res.exit_code == 2 and "is a bundled model" in res.output
    assert bundled.read_bytes() == before


def test_a_detector_without_a_task_is_refused(site: Path, tiny_fpi: Path, tmp_path: Path, monkeypatch):
    from mood_detector.models.fpi.detector import FPIDetector

    monkeypatch.setattr(FPIDetector, "supports_finetune", False)
    res = run("-i", str(site), "-o", str(tmp_path / "x.safetensors"), "-w", str(tiny_fpi), "--device", "cpu")
    assert res.exit_code == 1
    assert res.output.strip().splitlines()[-1] == ("Error: the fpi detector has no self-supervised task to "
                                                   "fine-tune; adapt takes fpi and nsa weights")
    assert not (tmp_path / "x.safetensors").exists()


def test_help_gives_every_option_with_its_default():
    res = CliRunner().invoke(main, ["adapt", "--help"])
    assert res.exit_code == 0
    for opt in ("--input", "--output", "--weights", "--kind", "--detector", "--device", "--steps", "--seed"):
        assert opt in res.output
    text = " ".join(res.output.split())
    for default in ("[default: auto]", "[default: 600; x>=1]", "[default: 0; 0<=x<=4294967295]", "[default: nsa]",
                    "[default: $MOOD_WEIGHTS_DIR or the bundled weights/"):
        assert default in text
