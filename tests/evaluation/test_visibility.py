"""What any detector could see: per outlier type, the share of labelled voxels changed by more than a threshold
(mood_detector/evaluation/visibility.py), added intensity split by sign, here and in evaluate --split-sign."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner

from mood_detector.cli import main
from mood_detector.evaluation.evaluate import evaluate
from mood_detector.evaluation.outliers import OUTLIER_TYPES
from mood_detector.evaluation.testset import TestsetConfig, make_testset
from mood_detector.evaluation.visibility import (BRIGHTER, DARKER, case_visibility, manifest_sign, parse_thresholds,
                                                 signed_type, visibility)
from mood_detector.io.nifti import read_volume
from mood_detector.preprocess import scale_unit
from tests.conftest import blob_volume, save_nifti


@pytest.fixture(scope="module")
def testset(tmp_path_factory):
    """Ten normal 32^3 objects, every case anomalous: each of the five types twice; the seed gives one
    brightening and one darkening added intensity."""
    root = tmp_path_factory.mktemp("vis")
    normals = root / "normals"
    normals.mkdir()
    for i in range(10):
        save_nifti(normals / f"{i:05d}.nii.gz", blob_volume((32, 32, 32), seed=40 + i))
    man = make_testset(normals, root / "test", TestsetConfig(anomalous_fraction=1.0, seed=2), progress=False)
    signs = sorted(manifest_sign(c) for c in man["cases"] if c["type"] == "uniform_addition")
    assert signs == [BRIGHTER, DARKER], signs  # the fixture covers both signs
    return root


def _direct(root, case, thresholds):
    """The counts of one case computed here from the files."""
    clean = scale_unit(read_volume(case["source"]).data)
    vol = read_volume(root / "test" / "toy" / case["name"]).data
    lab = nib.load(str(root / "test" / "toy_label" / "pixel" / case["name"])).get_fdata() > 0.5
    change = np.abs(vol - clean)[lab]
    return int(lab.sum()), {t: int((change > t).sum()) for t in thresholds}


def test_shares_per_type_and_sign(testset):
    man = json.loads((testset / "test" / "manifest.json").read_text())
    res = visibility(testset / "test", progress=False)
    assert list(res.rows) == ["uniform_addition", BRIGHTER, DARKER, *OUTLIER_TYPES[1:], "all"]
    assert all(res.rows[t].cases == 2 for t in OUTLIER_TYPES) and res.rows["all"].cases == 10
    assert res.rows[BRIGHTER].cases == res.rows[DARKER].cases == 1
    for case in res.cases:  # every count as computed directly, and the sign row as the manifest's offset n
        mcase = next(c for c in man["cases"] if c["name"] == case["name"])
        labelled, above = _direct(testset, mcase, (0.02, 0.05))
        assert case["labelled_voxels"] == labelled == mcase["n_changed"]
        assert (case["above_0.02"], case["above_0.05"]) == (above[0.02], above[0.05])
        assert case["row"] == (manifest_sign(mcase) or mcase["type"])
    for name, row in res.rows.items():
        assert row.above[0.02] >= row.above[0.05]
        parts = [BRIGHTER, DARKER] if name == "uniform_addition" else []
        if parts:
            assert row.labelled == sum(res.rows[p].labelled for p in parts)
    assert res.rows["all"].labelled == sum(res.rows[t].labelled for t in OUTLIER_TYPES)
    assert res.rows["noise_addition"].share(0.05) > 0.9  # N(0, 1) noise: nearly every voxel visibly changed
    text = res.table()
    assert text.splitlines()[0] == "| outliers | cases | labelled voxels | share > 0.02 | share > 0.05 |"
    assert f"| {DARKER} | 1 |" in text


def test_case_visibility_and_helpers():
    clean = np.zeros((4, 4, 4), np.float32)
    vol = clean.copy()
    lab = np.zeros(clean.shape, bool)
    lab[0, 0, :3] = True
    vol[0, 0, :3] = [0.01, -0.03, 0.2]
    r = case_visibility(vol, clean, lab, (0.02, 0.05))
    assert r["labelled"] == 3 and r["above"] == {0.02: 2, 0.05: 1} and r["changed_outside"] == 0
    assert r["mean_change"] == pytest.approx(0.06)
    vol[3, 3, 3] = 0.5
    assert case_visibility(vol, clean, lab)["changed_outside"] == 1
    assert signed_type("uniform_addition", -0.2) == DARKER and signed_type("uniform_addition", 0.1) == BRIGHTER
    assert signed_type("noise_addition", -0.2) is None and signed_type("uniform_addition", 0.0) is None
    assert parse_thresholds("0.05, 0.02") == (0.02, 0.05)
    for bad in ("x", "0", "1.5", ""):
        with pytest.raises(ValueError):
            parse_thresholds(bad)


def test_moved_and_wrong_sources(testset, tmp_path):
    """Sources found by file name in another folder; a source that is not the case's volume is an error."""
    moved = tmp_path / "moved"
    shutil.copytree(testset / "test", moved / "test")
    man_path = moved / "test" / "manifest.json"
    man = json.loads(man_path.read_text())
    for c in man["cases"]:
        c["source"] = str(tmp_path / "gone" / c["source"].rsplit("/", 1)[-1])
    man_path.write_text(json.dumps(man))
    from mood_detector.errors import InputError

    with pytest.raises(InputError, match="--normals"):
        visibility(moved / "test", progress=False)
    res = visibility(moved / "test", normals=testset / "normals", progress=False)
    assert res.rows["all"].labelled == visibility(testset / "test", progress=False).rows["all"].labelled
    swapped = tmp_path / "swapped"
    shutil.copytree(testset / "normals", swapped)
    a, b = swapped / "00000.nii.gz", swapped / "00001.nii.gz"
    a.rename(tmp_path / "t.nii.gz")
    b.rename(a)
    (tmp_path / "t.nii.gz").rename(b)
    with pytest.raises(InputError, match="not the volume the case was made from"):
        visibility(moved / "test", normals=swapped, progress=False)


def test_cli_table_json_and_bad_options(testset, tmp_path):
    out = tmp_path / "vis.json"
    res = CliRunner().invoke(main, ["visibility", "-t", str(testset / "test"), "--json", str(out), "--no-progress",
                                    "--thresholds", "0.1,0.02"])
    assert res.exit_code == 0, res.output
    assert "| share > 0.02 | share > 0.1 |" in res.output and f"| {BRIGHTER} |" in res.output
    saved = json.loads(out.read_text())
    assert saved["thresholds"] == [0.02, 0.1] and saved["rows"]["all"]["cases"] == 10
    assert 0.0 <= saved["rows"]["sink_source"]["share_above_0.1"] <= 1.0
    bad = CliRunner().invoke(main, ["visibility", "-t", str(testset / "normals")])
    assert bad.exit_code == 2 and "'-t' / '--testset'" in bad.output and "no manifest.json" in bad.output
    bad = CliRunner().invoke(main, ["visibility", "-t", str(testset / "test"), "--thresholds", "5"])
    assert bad.exit_code == 2 and "'--thresholds'" in bad.output


def _perfect_predictions(root, pred):
    pred.mkdir()
    man = json.loads((root / "test" / "manifest.json").read_text())
    for case in man["cases"]:
        lab = nib.load(str(root / "test" / "toy_label" / "pixel" / case["name"]))
        nib.save(nib.Nifti1Image(lab.get_fdata().astype(np.float32), lab.affine), str(pred / case["name"]))
        (pred / f"{case['name']}.txt").write_text(f"{int(case['anomalous'])}\n")


def test_evaluate_split_sign(testset, tmp_path):
    """Rows by sign after uniform_addition, only with split_sign; the other rows and the cases' entries as
    without it."""
    _perfect_predictions(testset, tmp_path / "pred")
    for task in ("pixel", "sample"):
        plain = evaluate(tmp_path / "pred", testset / "test" / "toy_label", task, progress=False)
        split = evaluate(tmp_path / "pred", testset / "test" / "toy_label", task, progress=False, split_sign=True)
        assert BRIGHTER not in plain.rows and all("sign_row" not in c for c in plain.cases)
        names = list(split.rows)
        assert names[names.index("uniform_addition") + 1: names.index("uniform_addition") + 3] == [BRIGHTER, DARKER]
        assert [n for n in names if n not in (BRIGHTER, DARKER)] == list(plain.rows)
        assert split.n_cases[BRIGHTER] == split.n_cases[DARKER] == (1, 0)
        assert split.rows[DARKER].ap == 1.0
        for name in plain.rows:
            assert split.rows[name].ap == plain.rows[name].ap
    res = CliRunner().invoke(main, ["evaluate", "--pred", str(tmp_path / "pred"), "--labels",
                                    str(testset / "test" / "toy_label"), "--task", "pixel", "--split-sign",
                                    "--bootstrap", "20", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert f"| {DARKER} | 1 / 0 |" in res.output
    saved = json.loads((tmp_path / "pred" / "evaluation_pixel.json").read_text())
    assert {BRIGHTER, DARKER} <= set(saved["rows"]) and "ap_lo" in saved["rows"][DARKER]
