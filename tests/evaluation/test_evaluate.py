"""evaluate() reads predictions like the MOOD evaluator and reports per-type and overall tables + JSON."""

from __future__ import annotations

import json
import os

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.metrics import average_precision_score, roc_auc_score

from mood_detector.cli import main
from mood_detector.evaluation.evaluate import evaluate, evaluate_tasks
from mood_detector.evaluation.testset import TestsetConfig, make_testset
from tests.conftest import blob_volume, save_nifti


def mood_reference(pred_dir, label_dir, mode):
    """The MOOD challenge evaluator's semantics (evalresults.py), written out with sklearn, for comparison."""
    preds, labels = [], []
    for f in sorted(os.listdir(label_dir)):
        if mode == "pixel":
            y = np.clip(np.rint(nib.load(str(label_dir / f)).get_fdata()).astype(int), 0, 1) == 1
            p = pred_dir / f
            arr = None
            if p.exists():
                arr = nib.load(str(p)).get_fdata(dtype=np.float16)
                arr = np.clip(arr, 0.0, 1.0) if arr.shape == y.shape else None
            preds.append(arr.ravel() if arr is not None else np.zeros(y.size))
            labels.append(y.ravel())
        else:
            labels.append([int((label_dir / f).read_text().splitlines()[0])])
            p = pred_dir / f
            preds.append([float(np.clip(float(p.read_text().splitlines()[0]), 0, 1)) if p.exists() else 0.0])
    y, s = np.concatenate(labels), np.concatenate(preds)
    return average_precision_score(y, s), roc_auc_score(y, s)


@pytest.fixture(scope="module")
def testset(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    normals = root / "normals"
    normals.mkdir()
    for i in range(6):
        save_nifti(normals / f"{i:05d}.nii.gz", blob_volume((24, 24, 24), seed=20 + i))
    make_testset(normals, root / "test", TestsetConfig(anomalous_fraction=0.5, seed=0,
                                                       types=("uniform_addition", "sink_source", "reflection")))
    return root / "test"


def _write_predictions(testset, pred, rng, drop=(), misshape=()):
    pred.mkdir(exist_ok=True)
    man = json.loads((testset / "manifest.json").read_text())
    for case in man["cases"]:
        name = case["name"]
        lab = nib.load(str(testset / "toy_label" / "pixel" / name))
        y = lab.get_fdata().astype(bool)
        if name not in drop:
            score = np.clip(0.3 * y + rng.random(y.shape) * 0.8 - 0.05, -0.1, 1.2).astype(np.float32)  # ties+clip
            score = np.round(score, 2)
            if name in misshape:
                score = score[:-1]
            nib.save(nib.Nifti1Image(score, lab.affine), str(pred / name))
            (pred / f"{name}.txt").write_text(f"{float(case['anomalous']) * 0.4 + rng.random() * 0.7:.6f}\n")
    return man


def test_matches_mood_reference_with_missing_and_misshaped(testset, tmp_path):
    man = _write_predictions(testset, tmp_path / "pred", np.random.default_rng(0), drop=("toy_001.nii.gz",),
                             misshape=("toy_003.nii.gz",))
    for task in ("pixel", "sample"):
        res = evaluate(tmp_path / "pred", testset / "toy_label", task, out_json=tmp_path / f"{task}.json",
                       progress=False)
        ap, auc = mood_reference(tmp_path / "pred", testset / "toy_label" / task, task)
        assert res.rows["overall"].ap == pytest.approx(ap, abs=1e-6)
        assert res.rows["overall"].auroc == pytest.approx(auc, abs=1e-6)
        status = {c["name"]: c["prediction"] for c in res.cases}
        assert status["toy_001.nii.gz"] == "missing"
        if task == "pixel":
            assert status["toy_003.nii.gz"].startswith("shape")
        # per-type rows: that type's cases plus all normal cases
        types = {c["type"] for c in man["cases"] if c["type"]}
        assert set(res.rows) == types | {"overall"}
        n_normal = sum(not c["anomalous"] for c in man["cases"])
        for t in types:
            assert res.n_cases[t] == (sum(c["type"] == t for c in man["cases"]), n_normal)
        saved = json.loads((tmp_path / f"{task}.json").read_text())
        assert saved["rows"]["overall"]["ap"] == pytest.approx(ap, abs=1e-6)
        assert len(saved["problems"]) == (2 if task == "pixel" else 1)


def test_perfect_predictions(testset, tmp_path):
    pred = tmp_path / "perfect"
    pred.mkdir()
    man = json.loads((testset / "manifest.json").read_text())
    for case in man["cases"]:
        name = case["name"]
        lab = nib.load(str(testset / "toy_label" / "pixel" / name))
        nib.save(nib.Nifti1Image(lab.get_fdata().astype(np.float32), lab.affine), str(pred / name))
        (pred / f"{name}.txt").write_text(f"{int(case['anomalous'])}\n")
    results, md = evaluate_tasks(pred, testset, tmp_path / "ev", progress=False)
    px, sm = results["pixel"].rows["overall"], results["sample"].rows["overall"]
    assert (px.ap, px.auroc, px.dice) == (1.0, 1.0, 1.0)
    assert (sm.ap, sm.auroc, sm.dice) == (1.0, 1.0, None)
    text = md.read_text()
    assert "| overall |" in text and "DICE" in text


def test_cli_prints_table_and_writes_json(testset, tmp_path):
    _write_predictions(testset, tmp_path / "pred", np.random.default_rng(1))
    res = CliRunner().invoke(main, ["evaluate", "--pred", str(tmp_path / "pred"), "--labels",
                                    str(testset / "toy_label"), "--task", "pixel", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "| overall |" in res.output and "| reflection |" in res.output
    saved = json.loads((tmp_path / "pred" / "evaluation_pixel.json").read_text())
    ap, _ = mood_reference(tmp_path / "pred", testset / "toy_label" / "pixel", "pixel")
    assert saved["rows"]["overall"]["ap"] == pytest.approx(ap, abs=1e-6)
    (tmp_path / "empty").mkdir()
    bad = CliRunner().invoke(main, ["evaluate", "--pred", str(tmp_path / "pred"), "--labels", str(tmp_path / "empty"),
                                    "--task", "sample"])
    assert bad.exit_code == 2 and "no sample label files" in bad.output
    # prediction files are not labels: a clear one-line error naming the file
    bad = CliRunner().invoke(main, ["evaluate", "--pred", str(tmp_path / "pred"), "--labels", str(tmp_path / "pred"),
                                    "--task", "sample", "--no-progress"])
    assert bad.exit_code == 2 and "toy_000.nii.gz.txt: unreadable sample label" in bad.output
