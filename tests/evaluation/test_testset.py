"""make-testset writes the MOOD toy layout whose labels match the changes made to the normal volumes."""

from __future__ import annotations

import json
from collections import Counter

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner

from mood_detector.cli import main
from mood_detector.evaluation.outliers import OUTLIER_TYPES
from mood_detector.evaluation.testset import TestsetConfig, case_name, make_testset, plan_cases


def test_plan_is_balanced_and_exact():
    plan = plan_cases(10, TestsetConfig(anomalous_fraction=1.0))
    assert Counter(plan) == {t: 2 for t in OUTLIER_TYPES}
    plan = plan_cases(7, TestsetConfig(anomalous_fraction=0.5, seed=3))
    assert sum(p is not None for p in plan) == 4
    assert plan == plan_cases(7, TestsetConfig(anomalous_fraction=0.5, seed=3))
    assert set(plan_cases(6, TestsetConfig(anomalous_fraction=1.0, types=("reflection",)))) == {"reflection"}
    with pytest.raises(ValueError):
        plan_cases(4, TestsetConfig(types=("nope",)))


def test_layout_labels_and_manifest(volume_dir, tmp_path):
    out = tmp_path / "test"
    man = make_testset(volume_dir, out, TestsetConfig(anomalous_fraction=0.5, seed=1))
    assert man == json.loads((out / "manifest.json").read_text())
    assert man["n_cases"] == 4 and man["n_anomalous"] == 2
    sources = sorted(volume_dir.glob("*.nii.gz"))
    for i, case in enumerate(man["cases"]):
        name = case_name(i)
        assert case["name"] == name and case["source"] == str(sources[i])
        img = nib.load(str(out / "toy" / name))
        lab = nib.load(str(out / "toy_label" / "pixel" / name))
        src = nib.load(str(sources[i]))
        np.testing.assert_allclose(img.affine, src.affine)
        data, label, orig = img.get_fdata(), lab.get_fdata(), src.get_fdata(dtype=np.float32)
        assert data.shape == label.shape == orig.shape
        assert data.min() >= 0 and data.max() <= 1
        assert set(np.unique(label)) <= {0.0, 1.0}
        sample = (out / "toy_label" / "sample" / f"{name}.txt").read_text().strip()
        assert sample == str(int(case["anomalous"]))
        changed = data != orig
        np.testing.assert_array_equal(label.astype(bool), changed)  # label == changed voxels
        if case["anomalous"]:
            assert case["type"] in OUTLIER_TYPES and label.sum() == case["n_changed"] > 0
        else:
            assert case["type"] is None and label.sum() == 0


def test_cli_one_type_subset(volume_dir, tmp_path):
    out = tmp_path / "val"
    res = CliRunner().invoke(main, ["make-testset", "--kind", "brain", "-i", str(volume_dir), "-o", str(out),
                                    "--anomalous-fraction", "1", "--types", "sink_source", "--seed", "2"])
    assert res.exit_code == 0, res.output
    man = json.loads((out / "manifest.json").read_text())
    assert [c["type"] for c in man["cases"]] == ["sink_source"] * 4
    bad = CliRunner().invoke(main, ["make-testset", "-i", str(volume_dir), "-o", str(out), "--types", "blur"])
    assert bad.exit_code == 2 and "blur" in bad.output
