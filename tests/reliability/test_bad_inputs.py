"""The bad-input corpus through the real CLI, exit codes, --strict, output folders."""

from __future__ import annotations

import errno
import gzip
import os
import re
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import mood_detector.io.folders as folders
from mood_detector.detector import load_detector
from mood_detector.inference.predictor import PredictConfig, Predictor
from mood_detector.io.nifti import ReadLimits, read_volume
from tests.conftest import blob_volume, save_nifti
from tests.reliability.corpus import build_corpus
from tests.reliability.helpers import predict_args, run_cli


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory, tiny_fpi):
    """The corpus scored once for both tasks: (corpus, click result, output folder)."""
    root = tmp_path_factory.mktemp("corpus")
    corpus = build_corpus(root)
    out = root / "out" / "nested"  # missing, two levels deep: created
    res = run_cli(*predict_args("both", corpus.folder, out, tiny_fpi))
    return corpus, res, out


def test_help_documents_exit_codes():
    res = run_cli("predict", "--help")
    assert res.exit_code == 0
    text = " ".join(res.stdout.split())
    for part in ("Exit codes:", "0 every input scored", "1 some inputs failed", "--strict", "2 usage error",
                 "--nonfinite", "--skip-existing"):
        assert part in text, part


def test_exit_code_1_and_one_line_per_failure(corpus_run):
    corpus, res, _ = corpus_run
    assert res.exit_code == 1, res.stderr
    assert f"scored {len(corpus.scored)}, skipped 0, failed {len(corpus.failed)}" in res.stdout
    listing = res.stderr.split("failed inputs:\n", 1)[1].splitlines()
    assert len(listing) == len(corpus.failed)
    for line in listing:
        path, reason = line.strip().split(": ", 1)
        name = Path(path).name
        assert name in corpus.failed, line
        assert re.search(corpus.failed[name], reason), (name, reason)


def test_every_scorable_input_scored_and_nothing_else_written(corpus_run):
    corpus, _, out = corpus_run
    expected = {n for n in corpus.scored} | {f"{n}.txt" for n in corpus.scored}
    assert {p.name for p in out.iterdir()} == expected  # no temp files, nothing for failed/ignored entries
    for name, shape in corpus.scored.items():
        src = read_volume(corpus.folder / name, ReadLimits(nonfinite="zero"))
        img = nib.load(str(out / name))
        data = np.asarray(img.dataobj)
        assert img.shape == shape and data.dtype == np.float32
        assert np.isfinite(data).all() and data.min() >= 0.0 and data.max() <= 1.0
        np.testing.assert_allclose(img.affine, src.affine, atol=1e-5)
        assert not (out / name).is_symlink()
        assert (out / name).read_bytes()[:2] == b"\x1f\x8b" if name.endswith(".gz") else True
        score = float((out / f"{name}.txt").read_text())
        assert 0.0 <= score <= 1.0


def test_ignored_entries_are_logged_not_failed(corpus_run):
    corpus, res, out = corpus_run
    line = next(ln for ln in res.stderr.splitlines() if "ignored" in ln and "not volumes to score" in ln)
    for name in ("notes.txt", "sub", "folder_named.nii.gz"):
        assert name in line
    assert "1 hidden" in line
    assert not (out / "nested.nii.gz").exists() and not (out / ".hidden.nii.gz").exists()


def test_extension_ignored_and_not_copied(corpus_run):
    """Same voxels and geometry with and without a header extension: byte-identical outputs, no payload."""
    _, _, out = corpus_run
    a, b = (out / "with_extension.nii.gz").read_bytes(), (out / "good.nii.gz").read_bytes()
    assert a == b
    assert b"SECRET-EXTENSION-PAYLOAD" not in gzip.decompress(a)
    assert len(nib.load(str(out / "with_extension.nii.gz")).header.extensions) == 0
    assert (out / "with_extension.nii.gz.txt").read_text() == (out / "good.nii.gz.txt").read_text()


def test_all_zero_and_constant_volumes_score_the_same(corpus_run):
    _, _, out = corpus_run
    assert (out / "all_zero.nii.gz").read_bytes() == (out / "constant.nii.gz").read_bytes()


def test_normalisation_rules(tmp_path: Path, tiny_fpi: Path):
    """NaN/Inf -> 0 (the predictor's default policy); anything outside [0, 1] (HU, negative) is min-max scaled,
    so the scores do not depend on the intensity unit; a constant volume scores like an all-zero one."""
    pred = Predictor(load_detector(tiny_fpi), PredictConfig(device="cpu", progress=False))
    vol = blob_volume((16, 16, 16), seed=3)
    bad = vol.copy()
    bad[2:5, 3:6, 4:7], bad[9, 9, 9], bad[10, 1, 1] = np.nan, np.inf, -np.inf
    p = save_nifti(tmp_path / "nan.nii.gz", bad)
    data = read_volume(p, PredictConfig().limits).data  # default policy: replace, do not refuse
    filled = np.where(np.isfinite(bad), bad, 0).astype(np.float32)
    np.testing.assert_array_equal(data, filled)
    a, b = pred.score_volume(data), pred.score_volume(filled)
    assert np.array_equal(a.pixel, b.pixel) and a.sample == b.sample

    hu = np.round(vol * 2024 - 1024).astype(np.float32)  # CT in Hounsfield units
    unit = (hu - hu.min()) / (hu.max() - hu.min())
    s_hu, s_unit, s_neg = pred.score_volume(hu), pred.score_volume(unit), pred.score_volume(unit * 8 - 5)
    np.testing.assert_allclose(s_hu.pixel, s_unit.pixel, atol=1e-5)
    np.testing.assert_allclose(s_neg.pixel, s_unit.pixel, atol=1e-5)
    assert abs(s_hu.sample - s_unit.sample) < 1e-5
    z, c = pred.score_volume(np.zeros_like(vol)), pred.score_volume(np.full_like(vol, 7.5))
    assert np.array_equal(z.pixel, c.pixel) and z.sample == c.sample


def test_nonfinite_error_option_fails_that_input(tmp_path: Path, tiny_fpi: Path):
    inp = tmp_path / "in"
    inp.mkdir()
    bad = blob_volume((16, 16, 16))
    bad[3, 3, 3] = np.nan
    save_nifti(inp / "nan.nii.gz", bad)
    save_nifti(inp / "ok.nii.gz", blob_volume((16, 16, 16)))
    res = run_cli(*predict_args("sample", inp, tmp_path / "out", tiny_fpi, "--nonfinite", "error"))
    assert res.exit_code == 1
    assert "nan.nii.gz: 1 non-finite (NaN/Inf) voxel values" in res.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ok.nii.gz.txt"]


def test_strict_stops_at_first_failure(tmp_path: Path, tiny_fpi: Path):
    inp = tmp_path / "in"
    inp.mkdir()
    for name in ("a_good.nii.gz", "c_good.nii.gz", "d_good.nii.gz"):
        save_nifti(inp / name, blob_volume((16, 16, 16)))
    (inp / "b_bad.nii.gz").write_bytes(b"garbage")
    out = tmp_path / "out"
    res = run_cli(*predict_args("sample", inp, out, tiny_fpi, "--strict"))
    assert res.exit_code == 1
    assert "error (--strict)" in res.stderr and "b_bad.nii.gz" in res.stderr
    assert sorted(p.name for p in out.iterdir()) == ["a_good.nii.gz.txt"]  # stopped before c and d


@pytest.fixture
def read_only(monkeypatch):
    """Make a folder read-only. chmod does not stop root, so as root the write probe is refused the way a
    read-only folder refuses it (EACCES)."""
    def apply(folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            folder.chmod(0o555)
            monkeypatch.undo = lambda f=folder: f.chmod(0o755)  # type: ignore[method-assign]
            return
        real = tempfile.mkstemp

        def mkstemp(*args, dir=None, **kwargs):  # noqa: A002 - tempfile's own keyword
            if dir is not None and Path(dir).resolve() == folder.resolve():
                raise PermissionError(errno.EACCES, "Permission denied", str(folder))
            return real(*args, dir=dir, **kwargs)
        monkeypatch.setattr(folders.tempfile, "mkstemp", mkstemp)
    yield apply
    monkeypatch.undo()


@pytest.mark.parametrize("case,message", [
    ("missing_input", "input folder does not exist"),
    ("empty_input", "no .nii or .nii.gz files"),
    ("only_non_nifti", "no .nii or .nii.gz files"),
    ("output_is_file", "is a file|not a folder"),
    ("output_is_input", "would overwrite the inputs"),
    ("read_only_output", "not writable"),
    ("bad_weights", "cannot load weights"),
])
def test_usage_errors_exit_2_before_reading(tmp_path: Path, tiny_fpi: Path, read_only, case: str, message: str):
    inp, out, weights = tmp_path / "in", tmp_path / "out", tiny_fpi
    inp.mkdir()
    if case not in ("empty_input", "only_non_nifti"):
        save_nifti(inp / "x.nii.gz", blob_volume((16, 16, 16)))
    if case == "missing_input":
        inp = tmp_path / "nope"
    elif case == "only_non_nifti":
        (inp / "readme.txt").write_text("x")
        (inp / "sub").mkdir()
    elif case == "output_is_file":
        out.write_text("I am a file")
    elif case == "output_is_input":
        out = inp
    elif case == "read_only_output":
        read_only(out)
    elif case == "bad_weights":
        weights = tmp_path / "w" / "fpi.safetensors"
        weights.parent.mkdir()
        weights.write_bytes(b"\x00" * 64)
        weights.with_suffix(".json").write_text((tiny_fpi.with_suffix(".json")).read_text())
    before = sorted(inp.iterdir()) if inp.is_dir() else []
    res = run_cli(*predict_args("pixel", inp, out, weights))
    assert res.exit_code == 2, (res.stdout, res.stderr)
    assert re.search(message, res.stderr), res.stderr
    assert (sorted(inp.iterdir()) if inp.is_dir() else []) == before  # inputs untouched
    if out.is_dir() and out != inp:
        assert list(out.iterdir()) == []  # nothing written, not even a probe or temp file


def test_existing_outputs_replaced_or_skipped_and_stale_temps_cleaned(tmp_path: Path, tiny_fpi: Path):
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    out.mkdir()
    for name in ("a.nii.gz", "b.nii"):
        save_nifti(inp / name, blob_volume((16, 16, 16), seed=len(name)))
    (out / "a.nii.gz").write_bytes(b"stale output from some other run")
    (out / "unrelated.txt").write_text("keep me")
    ours = [out / ".a.nii.gz.k3j_x9q2.tmp", out / ".b.nii.txt.abcdefgh.tmp"]
    theirs = [out / ".other.nii.gz.k3j_x9q2.tmp", out / ".a.nii.gz.tmp", out / ".a.nii.gz.toolongname.tmp"]
    for p in ours + theirs:
        p.write_bytes(b"partial")

    res = run_cli(*predict_args("both", inp, out, tiny_fpi))
    assert res.exit_code == 0, res.stderr
    assert "existing outputs are replaced" in res.stderr
    assert nib.load(str(out / "a.nii.gz")).shape == (16, 16, 16)  # replaced by a complete output
    assert (out / "unrelated.txt").read_text() == "keep me"
    assert not any(p.exists() for p in ours) and all(p.exists() for p in theirs)

    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    res = run_cli(*predict_args("both", inp, out, tiny_fpi, "--skip-existing"))
    assert res.exit_code == 0 and "scored 0, skipped 2, failed 0" in res.stdout
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps  # nothing rewritten
