"""make-testset writes the MOOD toy layout whose labels match the changes made to the normal volumes."""

from __future__ import annotations

import json
import logging
from collections import Counter

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from mood_detector.cli import main
from mood_detector.evaluation.outliers import OUTLIER_TYPES
from mood_detector.evaluation.testset import TestsetConfig, case_name, make_testset, plan_cases, type_counts


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


@settings(max_examples=200, deadline=None)
@given(n=st.integers(0, 300), fraction=st.floats(0.0, 1.0),
       types=st.lists(st.sampled_from(OUTLIER_TYPES), min_size=1, max_size=5, unique=True),
       seed=st.integers(0, 2 ** 32 - 1))
def test_every_type_gets_the_same_number_of_cases_up_to_one(n, fraction, types, seed):
    cfg = TestsetConfig(anomalous_fraction=fraction, types=tuple(types), seed=seed)
    plan = plan_cases(n, cfg)
    n_anom = int(round(fraction * n))
    per_type = [sum(p == t for p in plan) for t in types]
    assert sum(per_type) == n_anom and plan.count(None) == n - n_anom
    assert max(per_type) - min(per_type) <= 1
    assert sorted(type_counts(n_anom, types).values()) == sorted(per_type)


def test_uneven_split_warns_once_and_is_deterministic(caplog):
    cfg = TestsetConfig(anomalous_fraction=0.75, seed=0)
    with caplog.at_level(logging.WARNING, logger="mood_detector.evaluation.testset"):
        plan = plan_cases(8, cfg)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "6 anomalous cases are not a multiple of 5 outlier types" in warnings[0]
    # the same plan as test sets made before the per-type counts were spelled out (no test set changes)
    assert plan == ['uniform_addition', 'noise_addition', None, 'uniform_shift', 'sink_source', None, 'reflection',
                    'uniform_addition']
    assert plan == plan_cases(8, cfg)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mood_detector.evaluation.testset"):
        plan_cases(10, TestsetConfig(anomalous_fraction=1.0))
    assert not caplog.records
    assert type_counts(7, ("a", "b", "c")) == {"a": 3, "b": 2, "c": 2}
