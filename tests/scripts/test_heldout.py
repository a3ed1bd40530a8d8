"""scripts/real_sources.py, heldout_real.py and heldout_table.py on tiny stand-ins for real scans."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np

from tests.conftest import blob_volume, save_nifti

SCRIPTS = Path(__file__).parents[2] / "scripts"


def _script(name: str):
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def test_to_cube_pads_to_a_cube_in_mm_and_resamples():
    vol = np.ones((20, 10, 8), np.float32)
    cube, affine = _script("real_sources").to_cube(vol, np.diag([1.0, 2.0, 2.5, 1.0]), 16)
    assert cube.shape == (16, 16, 16)
    np.testing.assert_allclose(np.diag(affine)[:3], 20 / 16)  # the largest extent: 20 mm on every axis


def test_heldout_real_end_to_end_and_merged_table(tmp_path: Path, tiny_fpi: Path):
    real = tmp_path / "real"
    real.mkdir()
    rng = np.random.default_rng(0)
    head = blob_volume((32, 32, 32), seed=7) * 800.0
    save_nifti(real / "scan.nii.gz", (head + np.abs(rng.normal(0, 20, head.shape))).astype(np.float32))
    heldout = _script("heldout_real")
    results = tmp_path / "res.json"
    argv = ["--real", str(real), "--sources", "scan", "--weights", str(tiny_fpi), "--out", str(tmp_path / "out"),
            "--cases", "4", "--results", str(results)]
    assert heldout.main(argv) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    (row,) = summary
    assert row["background_mean"] == 0.0  # outside the foreground every score is 0
    assert len(row["normal_scores"]) == len(row["anomalous_scores"]) == 2
    src = json.loads(results.read_text())
    assert src["rows"][0]["source"] == "scan" and "[" in src["rows"][0]["pixel AP"]  # with its interval
    merged = tmp_path / "merged.json"
    assert _script("heldout_table").main(["--out", str(merged), f"tiny={results}", f"again={results}"]) == 0
    table = json.loads(merged.read_text())
    assert table["columns"][0] == "model" and [r["model"] for r in table["rows"]] == ["tiny", "again"]
    per_type = tmp_path / "per_type.json"
    assert _script("heldout_table").main(["--per-type", "--out", str(per_type), f"tiny={tmp_path / 'out'}"]) == 0
    table = json.loads(per_type.read_text())
    (row,) = table["rows"]
    assert row["source"] == "scan" and table["columns"][-1] == "overall"
    pixel = summary[0]["pixel"]
    assert row["overall"] == round(pixel["overall"]["ap"], 3)
    assert all(c in row for c in table["columns"] if c.replace(" ", "_") in pixel)
