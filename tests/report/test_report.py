"""The visual report: PNGs and index.html for a small case set, with and without labels."""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
from html import unescape
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from click.testing import CliRunner

from mood_detector.cli import main
from mood_detector.errors import MoodError
from mood_detector.inference.aggregate import sample_score
from mood_detector.report import RenderConfig, ReportConfig, build_report
from mood_detector.report.cases import find_cases, focus_point, load_case
from mood_detector.report.render import MPL_TMP_PREFIX
from tests.conftest import blob_volume, save_nifti

# names with a space, unicode and HTML-special characters
NAMES = ["case 1.nii.gz", "fäll_2.nii.gz", "x&<y>.nii.gz"]
SMALL = RenderConfig(figsize=(8.0, 5.0), dpi=40, thumb_dpi=12, curve_figsize=(4.0, 4.0))


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR header."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> Path:
    """3 volumes at 32^3: pixel predictions for all, a sample txt for the first only, toy labels (one normal)."""
    root = tmp_path_factory.mktemp("report_cases")
    for sub in ("in", "pred", "lab/pixel", "lab/sample"):
        (root / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, name in enumerate(NAMES):
        vol = blob_volume(seed=i)
        mask = np.zeros_like(vol)
        if i != 1:  # volume 1 is normal
            mask[8 + 4 * i:14 + 4 * i, 12:18, 10:16] = 1.0
        pred = np.clip(0.05 * rng.random(vol.shape) + 0.9 * mask, 0, 1).astype(np.float32)
        save_nifti(root / "in" / name, vol)
        save_nifti(root / "pred" / name, pred)
        save_nifti(root / "lab" / "pixel" / name, mask)
        (root / "lab" / "sample" / f"{name}.txt").write_text(f"{int(mask.any())}\n")
    (root / "pred" / f"{NAMES[0]}.txt").write_text("0.9\n")
    return root


def _linked(html_text: str) -> set[str]:
    return {unquote(unescape(m)) for m in re.findall(r'(?:src|href)="([^"]+)"', html_text)}


@pytest.mark.parametrize("with_labels", [False, True])
def test_report_renders(cases: Path, tmp_path: Path, with_labels: bool) -> None:
    out = tmp_path / "report"
    res = build_report(ReportConfig(inputs=cases / "in", predictions=cases / "pred", out=out,
                                    labels=cases / "lab" if with_labels else None, render=SMALL, progress=False))
    assert res.exit_code == 0 and not res.failed
    assert sorted(v.name for v in res.volumes) == sorted(NAMES)
    scores = [v.sample for v in res.volumes]
    assert scores == sorted(scores, reverse=True)
    text = res.index.read_text(encoding="utf-8")
    links = _linked(text)
    for name in NAMES:
        png, thumb = out / "volumes" / f"{name}.png", out / "volumes" / f"{name}.thumb.png"
        assert png_size(png) == SMALL.pixels() == (320, 200)
        assert png_size(thumb) == SMALL.pixels(thumb=True) == (96, 60)
        assert f"volumes/{name}.png" in links and f"volumes/{name}.thumb.png" in links
        assert f"<td>{name.replace('&', '&amp;').replace('<', '&lt;').replace('>', '&gt;')}</td>" in text
    assert "x&<y>" not in text  # raw name never reaches the HTML
    assert "<script" not in text.lower() and "http://" not in text and "https://" not in text
    # volumes appear in the page in sample-score order
    order = [text.find(f"alt=\"{v.name.replace('&', '&amp;').replace('<', '&lt;').replace('>', '&gt;')}\"")
             for v in res.volumes]
    assert order == sorted(order) and min(order) > 0
    curves = {out / "roc.png", out / "pr.png"}
    expected = {out / "index.html", out / "volumes"} | {out / "volumes" / f"{n}{s}" for n in NAMES
                                                        for s in (".png", ".thumb.png")}
    if with_labels:
        expected |= curves
        for c in curves:
            assert png_size(c) == SMALL.curve_pixels() == (160, 160)
        assert {"roc.png", "pr.png"} <= links
        assert set(res.curves) == {"sample", "pixel"}
        assert res.curves["sample"].auroc == 1.0  # both anomalous volumes outscore the normal one
        assert res.curves["pixel"].ap > 0.9
        # the metric table is the evaluation harness's, on the same scores as the curves
        assert res.table is not None and "AUROC" in text
        rows = {(r[0], r[1]): r for r in res.table.rows}
        for level in ("sample", "pixel"):
            assert rows[(level, "overall")][2] == "2 / 1"
            assert rows[(level, "overall")][3] == f"{res.curves[level].ap:.4f}"
            assert rows[(level, "overall")][4] == f"{res.curves[level].auroc:.4f}"
            assert f"<td>{rows[(level, 'overall')][3]}</td>" in text
    else:
        assert not res.curves and res.table is None and "roc.png" not in text
    assert set(out.rglob("*")) == expected  # in particular no MPLCONFIGDIR left behind
    # sample txt used where present, otherwise the common aggregation of the pixel map
    by_name = {v.name: v for v in res.volumes}
    assert by_name[NAMES[0]].sample == pytest.approx(0.9) and by_name[NAMES[0]].sample_source == "txt"
    case = load_case(find_cases(cases / "in", cases / "pred")[1])
    assert by_name[case.name].sample_source == "pixel map"
    assert by_name[case.name].sample == pytest.approx(sample_score(case.pixel.mean(axis=(0, 1))))
    assert "computed from the pixel map" in text


def test_focus_point_finds_the_anomaly(cases: Path) -> None:
    files = find_cases(cases / "in", cases / "pred", cases / "lab")[2]
    case = load_case(files)
    c = focus_point(case)
    assert case.label_mask is not None and case.label_mask[c]
    assert case.slice_axis == 2 and case.slice_scores is not None and case.slice_scores.shape == (32,)


def test_bad_inputs_are_reported(cases: Path, tmp_path: Path) -> None:
    pred = tmp_path / "pred"
    pred.mkdir()
    save_nifti(pred / NAMES[0], np.zeros((16, 16, 16), np.float32))  # wrong shape
    (pred / f"{NAMES[1]}.txt").write_text("not a number\n")  # unreadable sample score; NAMES[2]: nothing
    res = build_report(ReportConfig(inputs=cases / "in", predictions=pred, out=tmp_path / "r", render=SMALL,
                                    progress=False))
    assert res.exit_code == 1 and not res.volumes
    reasons = {p.name: r for p, r in res.failed}
    assert "shape" in reasons[NAMES[0]] and "one number" in reasons[NAMES[1]] and "no prediction" in reasons[NAMES[2]]
    assert "Not reported" in res.index.read_text(encoding="utf-8")
    with pytest.raises(MoodError, match="toy_label"):
        build_report(ReportConfig(inputs=cases / "in", predictions=pred, out=tmp_path / "r2", labels=tmp_path))


def test_cli_under_read_only_home(cases: Path, tmp_path: Path) -> None:
    """A fresh process (as in the container): nothing written outside REPORT_DIR, no temporary matplotlib
    folder left, and importing the CLI does not import matplotlib."""
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0o500)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MPL", "XDG_"))}
    env.update(HOME=str(home), PYTHONDONTWRITEBYTECODE="1")
    out = tmp_path / "rep"
    code = ("import sys; import mood_detector.cli as c; assert 'matplotlib' not in sys.modules; "
            "c.main(prog_name='mood-detector')")
    try:
        proc = subprocess.run([sys.executable, "-c", code, "--log-level", "WARNING", "report", "-i",
                               str(cases / "in"), "-p", str(cases / "pred"), "-o", str(out),
                               "--dpi", "30", "--no-thumbnails", "--no-progress"],
                              env=env, capture_output=True, text=True, timeout=120)
    finally:
        home.chmod(0o700)
    assert proc.returncode == 0, proc.stderr
    assert "report of 3 volumes (0 failed)" in proc.stdout
    assert "temporary cache directory" not in proc.stderr and "not a writable directory" not in proc.stderr
    assert list(home.iterdir()) == []
    assert sorted(p.name for p in out.iterdir()) == ["index.html", "volumes"]
    assert not any(p.name.startswith(MPL_TMP_PREFIX) for p in out.rglob("*"))
    assert png_size(out / "volumes" / f"{NAMES[0]}.png") == (360, 210)  # 12 x 7 inches at --dpi 30
    assert sorted(p.name for p in (out / "volumes").iterdir()) == sorted(f"{n}.png" for n in NAMES)
    assert {f"volumes/{n}.png" for n in NAMES} <= _linked((out / "index.html").read_text(encoding="utf-8"))


def test_missing_matplotlib_is_a_clear_error(cases: Path, tmp_path: Path, monkeypatch) -> None:
    for mod in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    result = CliRunner().invoke(main, ["report", "-i", str(cases / "in"), "-p", str(cases / "pred"),
                                       "-o", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "pip install 'mood-detector[report]'" in result.output
    assert not any(p.name.startswith(MPL_TMP_PREFIX) for p in (tmp_path / "r").iterdir())


def test_curve_points_match_scikit_learn() -> None:
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

    from mood_detector.evaluation.metrics import counts_from_scores
    from mood_detector.report.curves import curve_points

    rng = np.random.default_rng(1)
    y = rng.random(300) < 0.3
    s = np.round(rng.random(300) * 0.6 + 0.3 * y, 2)  # many ties
    c = curve_points(counts_from_scores(s, y))
    assert c is not None and (c.positives, c.negatives) == (int(y.sum()), int((~y).sum()))
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(c.fpr, fpr)
    np.testing.assert_allclose(c.tpr, tpr)
    prec, rec, _ = precision_recall_curve(y, s)  # recall decreasing, ends at (0, 1)
    np.testing.assert_allclose(c.recall, rec[::-1])
    np.testing.assert_allclose(c.precision, prec[::-1])
    assert c.ap == pytest.approx(average_precision_score(y, s))
    assert c.auroc == pytest.approx(roc_auc_score(y, s))
    assert curve_points(counts_from_scores(s, np.zeros_like(y))) is None
