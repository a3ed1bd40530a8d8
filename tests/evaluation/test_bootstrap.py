"""Case-bootstrap intervals: exact replicates, sensible intervals, reproducible, cheap on tiny volumes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.metrics import average_precision_score, roc_auc_score

from mood_detector.cli import main
from mood_detector.evaluation import metrics as M
from mood_detector.evaluation.bootstrap import (BootstrapConfig, CaseTable, average_precision_rows, bootstrap_row,
                                                replicate_metrics, resample_weights, roc_auc_rows)
from mood_detector.evaluation.evaluate import evaluate
from tests.evaluation.test_evaluate import _write_predictions, testset  # noqa: F401 - the shared test set

SHAPE = (16, 16, 16)


def _case(rng: np.random.Generator, anomalous: bool) -> tuple[np.ndarray, np.ndarray]:
    """A 16^3 case: noise scores, and for an anomalous case a cube of positives scored higher on average."""
    y = np.zeros(SHAPE, dtype=bool)
    if anomalous:
        x, z = rng.integers(0, 12, 2)
        y[x:x + 4, 4:8, z:z + 4] = True
    s = rng.beta(2, 5, SHAPE) + 0.35 * y * rng.random(SHAPE)
    return s.astype(np.float32), y


def _cases(seed: int, n: int = 8) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [_case(rng, anomalous=i % 2 == 0) for i in range(n)]


def _table(cases) -> tuple[CaseTable, M.Counts]:
    """Per-case float16 counts as the evaluation builds them, and the pooled counts of the point estimate."""
    per_case, pooled = [], M.Float16Histogram()
    for s, y in cases:
        h = M.Float16Histogram()
        h.add(s, y)
        per_case.append(h.counts())
        pooled = pooled.merged(h)
    return CaseTable.from_counts(per_case), pooled.counts()


def test_every_case_once_reproduces_the_point_estimate():
    table, pooled = _table(_cases(0))
    ones = np.ones((1, table.n_cases))
    pos, neg = ones @ table.pos, ones @ table.neg
    assert average_precision_rows(pos, neg)[0] == pytest.approx(M.average_precision(pooled), abs=1e-12)
    assert roc_auc_rows(pos, neg)[0] == pytest.approx(M.roc_auc(pooled), abs=1e-12)
    assert M.greedy_dice(table.pooled(ones[0])) == M.greedy_dice(pooled)


def test_vectorised_replicates_equal_the_exact_metrics_of_the_drawn_cases():
    table, _ = _table(_cases(1))
    cfg = BootstrapConfig(replicates=20, seed=3)
    reps = replicate_metrics(table, cfg, with_dice=True)
    weights = resample_weights(table.n_cases, cfg.replicates, np.random.default_rng(cfg.seed))
    for r, w in enumerate(weights):
        c = table.pooled(w)
        if c.n_pos == 0 or c.n_neg == 0:
            assert np.isnan(reps.auroc[r]) and np.isnan(reps.ap[r]) and np.isnan(reps.dice[r])
            continue
        assert reps.ap[r] == pytest.approx(M.average_precision(c), abs=1e-12)
        assert reps.auroc[r] == pytest.approx(M.roc_auc(c), abs=1e-12)
        assert reps.dice[r] == M.greedy_dice(c)[0]


def test_resample_weights_draw_every_row_full():
    w = resample_weights(7, 50, np.random.default_rng(0))
    assert w.shape == (50, 7) and (w.sum(axis=1) == 7).all() and (w >= 0).all()


@pytest.mark.parametrize("seed", range(4))
def test_interval_contains_the_point_estimate(seed):
    table, pooled = _table(_cases(seed, n=10))
    iv = bootstrap_row(table, BootstrapConfig(replicates=200, seed=seed), with_dice=True)
    point = M.compute_metrics(pooled)
    for name in ("ap", "auroc", "dice"):
        lo, hi = getattr(iv, name).lo, getattr(iv, name).hi
        assert lo <= getattr(point, name) <= hi, name
        assert lo < hi, name  # different cases: some spread
    assert iv.replicates == 200 and 0 < iv.valid <= 200


def test_identical_cases_give_zero_width():
    s, y = _case(np.random.default_rng(5), anomalous=True)
    table, pooled = _table([(s, y)] * 6)
    iv = bootstrap_row(table, BootstrapConfig(replicates=100), with_dice=True)
    point = M.compute_metrics(pooled)
    for name in ("ap", "auroc", "dice"):
        assert getattr(iv, name).lo == pytest.approx(getattr(point, name), abs=1e-12)
        assert getattr(iv, name).hi == pytest.approx(getattr(point, name), abs=1e-12)
    assert iv.valid == 100


def test_seed_reproducibility():
    table, _ = _table(_cases(2))
    run = lambda seed: bootstrap_row(table, BootstrapConfig(replicates=100, seed=seed), with_dice=True)  # noqa: E731
    assert run(7) == run(7)
    assert run(7) != run(8)


def test_one_class_replicates_are_left_out():
    # one anomalous case among five normal ones: about (5/6)^6 = 33% of the replicates draw no positive
    table, _ = _table([_case(np.random.default_rng(i), anomalous=i == 0) for i in range(6)])
    iv = bootstrap_row(table, BootstrapConfig(replicates=300), with_dice=False)
    assert 150 < iv.valid < 260
    assert np.isfinite([iv.ap.lo, iv.ap.hi, iv.auroc.lo, iv.auroc.hi]).all()


@pytest.mark.parametrize("seed", range(6))
def test_float16_bins_match_exact_float64_metrics(seed):
    """The bins are the float16 values the MOOD reading keeps; on continuous float64 scores (no float16 ties
    in the reference) AP and AUROC from the bins agree with the exact ones to 1e-3."""
    rng = np.random.default_rng(seed)
    cases = _cases(seed, n=6)
    s = np.concatenate([c[0].ravel() for c in cases]).astype(np.float64) + rng.random(6 * 16 ** 3) * 1e-3
    y = np.concatenate([c[1].ravel() for c in cases])
    table, _ = _table([(s[i::6], y[i::6]) for i in range(6)])
    ones = np.ones((1, 6))
    pos, neg = ones @ table.pos, ones @ table.neg
    assert abs(average_precision_rows(pos, neg)[0] - average_precision_score(y, s)) < 1e-3
    assert abs(roc_auc_rows(pos, neg)[0] - roc_auc_score(y, s)) < 1e-3


def test_evaluate_writes_intervals_and_prints_them(testset, tmp_path):  # noqa: F811
    _write_predictions(testset, tmp_path / "pred", np.random.default_rng(2))
    res = evaluate(tmp_path / "pred", testset / "toy_label", "pixel", progress=False,
                   bootstrap=BootstrapConfig(replicates=50, seed=1))
    assert set(res.intervals) == set(res.rows)
    again = evaluate(tmp_path / "pred", testset / "toy_label", "pixel", progress=False,
                     bootstrap=BootstrapConfig(replicates=50, seed=1))
    assert again.intervals == res.intervals
    cli = CliRunner().invoke(main, ["evaluate", "--pred", str(tmp_path / "pred"), "--labels",
                                    str(testset / "toy_label"), "--task", "sample", "--no-progress",
                                    "--bootstrap", "50", "--bootstrap-seed", "1", "--json", str(tmp_path / "s.json")])
    assert cli.exit_code == 0, cli.output
    overall = next(line for line in cli.output.splitlines() if line.startswith("| overall |"))
    assert "[" in overall and "," in overall
    saved = json.loads((tmp_path / "s.json").read_text())
    row = saved["rows"]["overall"]
    assert row["ap_lo"] <= row["ap"] <= row["ap_hi"] or row["ap_lo"] is None
    assert {"auroc_lo", "auroc_hi", "dice_lo", "dice_hi", "bootstrap_valid"} <= set(row)
    assert saved["bootstrap"]["replicates"] == 50 and saved["bootstrap"]["seed"] == 1
    off = CliRunner().invoke(main, ["evaluate", "--pred", str(tmp_path / "pred"), "--labels",
                                    str(testset / "toy_label"), "--task", "sample", "--no-progress",
                                    "--bootstrap", "0", "--json", str(tmp_path / "off.json")])
    assert off.exit_code == 0 and "[" not in off.output.split("| overall |")[1].splitlines()[0]
    assert "ap_lo" not in json.loads((tmp_path / "off.json").read_text())["rows"]["overall"]
