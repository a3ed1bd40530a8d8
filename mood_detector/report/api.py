"""``build_report``: the library entry of ``mood-detector report``.

For every input volume: load input, predictions and labels, render one PNG (+ thumbnail), add its voxels to the
pixel-level curves, keep only a small summary; then ROC / PR PNGs and the metric table (with labels) and one
static ``index.html``. Volumes are processed one at a time, so memory stays at about one volume's worth.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mood_detector.errors import MoodError
from mood_detector.io.nifti import ReadLimits, write_text_atomic
from mood_detector.report.cases import find_cases, focus_point, load_case
from mood_detector.evaluation.evaluate import evaluate, fmt
from mood_detector.evaluation.metrics import Float16Histogram, counts_from_scores
from mood_detector.report.curves import Curves, curve_points
from mood_detector.report.html import MetricTable, PageData, VolumeEntry, relative, render_html
from mood_detector.report.render import RenderConfig, matplotlib_sandbox, render_curves, render_volume

log = logging.getLogger(__name__)

VOLUME_DIR = "volumes"


@dataclass
class ReportConfig:
    """Options of one report.

    Attributes:
        inputs: folder of input volumes.
        predictions: folder of pixel (``<name>``) and/or sample (``<name>.txt``) predictions.
        out: report folder (created; existing files of the same names are replaced, others left alone).
        labels: optional MOOD ``toy_label`` folder (``pixel/<name>``, ``sample/<name>.txt``).
        render: figure options.
        limits: header checks for every NIfTI read.
        thumbnails: also write a small thumbnail PNG per volume for index.html.
        progress: show a progress bar.
        slice_score: how the per-slice curve (and a sample score computed from the pixel map) is made:
            ``mean`` or ``top:Q``, as the model card's ``slice_score``.
    """

    inputs: Path
    predictions: Path
    out: Path
    labels: Path | None = None
    render: RenderConfig = field(default_factory=RenderConfig)
    limits: ReadLimits = field(default_factory=ReadLimits)
    thumbnails: bool = True
    progress: bool = True
    slice_score: str = "mean"


@dataclass
class ReportResult:
    """What the report contains and what could not be reported."""

    index: Path
    volumes: list[VolumeEntry]
    failed: list[tuple[Path, str]] = field(default_factory=list)
    curves: dict[str, Curves] = field(default_factory=dict)
    table: MetricTable | None = None

    @property
    def exit_code(self) -> int:
        """0 when every volume was reported, 1 when some failed."""
        return 1 if self.failed else 0


def harness_table(predictions: Path, labels: Path, samples: dict[str, float], out: Path) -> MetricTable | None:
    """The evaluation harness's metric table (:func:`mood_detector.evaluation.evaluate.evaluate`) for each task
    whose label folder exists: per outlier type (with a ``manifest.json`` next to ``toy_label``) and overall.

    The pixel task reads PREDICTIONS as the MOOD evaluator does. The sample task is evaluated on the sample
    scores the report shows (``samples``: read from ``<name>.txt`` or computed from the pixel map), written to
    a temporary folder inside ``out`` that is removed afterwards, so table and curves agree.
    """
    rows: list[list[str]] = []
    notes: list[str] = []
    for task in ("pixel", "sample"):
        if not (labels / task).is_dir():
            continue
        tmp = None
        try:
            pred_dir = predictions
            if task == "sample":
                tmp = pred_dir = Path(tempfile.mkdtemp(prefix=".sample-scores-", dir=out))
                for name, score in samples.items():
                    (tmp / f"{name}.txt").write_text(f"{score:.8f}\n", encoding="utf-8")
            res = evaluate(pred_dir, labels, task, progress=False)
        except MoodError as exc:
            log.warning("metric table, %s task: %s", task, exc)
            notes.append(f"{task}: not evaluated ({exc})")
            continue
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
        for name, m in res.rows.items():
            a, n = res.n_cases[name]
            rows.append([task, name, f"{a} / {n}", fmt(m.ap), fmt(m.auroc), fmt(m.dice) if task == "pixel" else ""])
        if res.problems:
            notes.append(f"{task}: {len(res.problems)} prediction(s) missing or unreadable, counted as zeros "
                         "(as the MOOD evaluator does)")
    if not rows and not notes:
        return None
    source = ("Metrics from mood_detector.evaluation (the evaluation harness): per outlier type pooled with all "
              "normal cases, and overall; DICE = greedy-threshold DICE over all voxels. " + " ".join(notes))
    return MetricTable(columns=["task", "outliers", "anomalous / normal cases", "AP", "AUROC", "DICE"], rows=rows,
                       source=source.strip())


def build_report(cfg: ReportConfig) -> ReportResult:
    """Write the report into ``cfg.out``; returns what it holds.

    Raises:
        MoodError: missing folders, no input volumes, a bad LABELS layout, matplotlib not installed.
    """
    cases = find_cases(cfg.inputs, cfg.predictions, cfg.labels)
    out = Path(cfg.out)
    vol_dir = out / VOLUME_DIR
    entries: list[VolumeEntry] = []
    failed: list[tuple[Path, str]] = []
    sample_scores: list[float] = []
    sample_labels: list[bool] = []
    samples: dict[str, float] = {}
    pixel = Float16Histogram()
    n_pixel = 0
    n_from_pixel = 0
    with matplotlib_sandbox(out):
        vol_dir.mkdir(parents=True, exist_ok=True)
        for files in tqdm(cases, desc="report", unit="vol", disable=not cfg.progress):
            try:
                case = load_case(files, cfg.limits, cfg.slice_score)
                centre = focus_point(case)
                png = vol_dir / f"{files.name}.png"
                thumb = vol_dir / f"{files.name}.thumb.png" if cfg.thumbnails else None
                render_volume(case, centre, png, thumb, cfg.render)
            except MoodError as exc:
                reason = getattr(exc, "reason", str(exc))
                failed.append((files.input, reason))
                log.error("%s: %s", files.input, reason)
                continue
            except Exception as exc:  # noqa: BLE001 - one bad volume must not stop the report
                log.debug("report of %s failed", files.input, exc_info=True)
                failed.append((files.input, f"could not be rendered ({type(exc).__name__}: {exc})"))
                log.error("%s: could not be rendered (%s: %s)", files.input, type(exc).__name__, exc)
                continue
            if case.label_sample is not None:
                sample_scores.append(case.sample)
                sample_labels.append(case.label_sample)
            if case.label_mask is not None and case.pixel is not None:
                pixel.add(case.pixel, case.label_mask)
                n_pixel += 1
            samples[case.name] = case.sample
            n_from_pixel += case.sample_source == "pixel map"
            entries.append(VolumeEntry(
                name=case.name, sample=case.sample, sample_source=case.sample_source,
                label_sample=case.label_sample,
                max_score=None if case.pixel is None else float(case.pixel.max()), centre=tuple(map(int, centre)),
                png=relative(png, out), thumb=relative(thumb, out) if thumb else None))
            del case
        curves: dict[str, Curves] = {}
        table = None
        roc = pr = None
        if cfg.labels is not None:
            if sample_labels:
                c = curve_points(counts_from_scores(np.asarray(sample_scores), np.asarray(sample_labels)))
                if c is not None:
                    curves["sample"] = c
            if n_pixel:
                c = curve_points(pixel.counts())
                if c is not None:
                    curves["pixel"] = c
            table = harness_table(Path(cfg.predictions), Path(cfg.labels), samples, out)
            if curves:
                roc, pr = out / "roc.png", out / "pr.png"
                render_curves(curves, roc, pr, cfg.render)
            else:
                log.warning("labels given, but no level has both normal and anomalous cases: no curves drawn")
    entries.sort(key=lambda e: (-e.sample, e.name))
    notes = []
    if n_from_pixel:
        notes.append(f"{n_from_pixel} volume(s) had no <name>.txt: their sample score was computed from the pixel "
                     "map (per-slice means along the slicing axis, Savitzky-Golay filter, mean of the top 25%).")
    page = PageData(inputs=str(cfg.inputs), predictions=str(cfg.predictions),
                    labels=str(cfg.labels) if cfg.labels is not None else None, volumes=entries,
                    failed=[(p.name, r) for p, r in failed], roc_png=relative(roc, out) if roc else None,
                    pr_png=relative(pr, out) if pr else None, table=table, notes=notes)
    index = write_text_atomic(out / "index.html", render_html(page))
    log.info("report: %d volumes, %d failed; open %s", len(entries), len(failed), index)
    return ReportResult(index=index, volumes=entries, failed=failed, curves=curves, table=table)
