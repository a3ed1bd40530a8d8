"""``mood-detector evaluate``: score a prediction folder against a MOOD-style label folder.

Reading follows the MOOD challenge's evaluator (``evalresults.py``) case by case:

* The cases are the label files, sorted by name; the prediction of label ``<f>`` is ``PRED/<f>``
  (pixel: ``toy_000.nii.gz``; sample: ``toy_000.nii.gz.txt``, which is what ``mood-detector predict`` writes).
* pixel labels: ``rint`` of the stored values, clipped to [0, 1], positive where 1. pixel predictions: read
  with nibabel as float16 (``get_fdata(dtype=float16)``) and clipped to [0, 1]. A missing, unreadable or
  mis-shaped prediction counts as all zeros.
* sample labels: ``int`` of the file's first line; predictions: ``float`` of the first line, clipped to
  [0, 1]; missing or unparsable -> 0.
* AP (and AUROC, DICE) over all voxels (or all cases) of all cases concatenated.

Deviations, both about inputs the MOOD evaluator would crash on: NaN predictions count as 0 (and are
reported), and an unreadable *label* stops the evaluation with an error naming the file.

Per outlier type (read from the test set's ``manifest.json``), a row pools the cases of that type with all
normal cases (the paper's per-type scores); the ``overall`` row pools every case. With ``split_sign``, added
intensity (``uniform_addition``, one offset n ~ N(0, 1) per sphere) also gets a row per sign of n,
``uniform_addition+`` (brighter) and ``uniform_addition-`` (darker, often black), each with all normal cases
(:mod:`mood_detector.evaluation.visibility`). The pixel metrics are
computed exactly from per-float16-value counts (:mod:`mood_detector.evaluation.metrics`), so 10^8 voxels
need a few hundred KiB beyond one case's arrays.

With a :class:`~mood_detector.evaluation.bootstrap.BootstrapConfig`, every row also gets percentile
intervals from resampling its cases; each case's counts are then kept as well (at most 15,361 bins per case).
The printed estimates stay the exact pooled metrics above, so they do not change with the bootstrap settings.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from tqdm import tqdm

from mood_detector.errors import InputError, OptionError
from mood_detector.evaluation.bootstrap import BootstrapConfig, CaseTable, Interval, RowIntervals, bootstrap_row
from mood_detector.evaluation.metrics import (Counts, Float16Histogram, GreedySearch, Metrics, compute_metrics,
                                              counts_from_scores)
from mood_detector.evaluation.outliers import OUTLIER_TYPES
from mood_detector.evaluation.testset import MANIFEST, read_manifest
from mood_detector.evaluation.visibility import BRIGHTER, DARKER, SIGNED_TYPE, manifest_sign
from mood_detector.io.nifti import is_nifti, write_text_atomic

log = logging.getLogger(__name__)

TASKS = ("pixel", "sample")
NORMAL = "normal"
OVERALL = "overall"


@dataclass
class EvalResult:
    """Metrics per row (outlier types, then ``overall``), per-case notes and problems."""

    task: str
    rows: dict[str, Metrics]
    cases: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    n_cases: dict[str, tuple[int, int]] = field(default_factory=dict)
    intervals: dict[str, RowIntervals] = field(default_factory=dict)
    bootstrap: BootstrapConfig | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"task": self.task, "rows": {k: self._row_dict(k) for k in self.rows},
                               "cases": self.cases, "problems": self.problems}
        if self.bootstrap is not None:
            out["bootstrap"] = {"replicates": self.bootstrap.replicates, "seed": self.bootstrap.seed,
                                "level": self.bootstrap.level, "resampled": "cases, with replacement"}
        return out

    def _row_dict(self, name: str) -> dict[str, Any]:
        """A row's metrics, with ``<metric>_lo`` / ``<metric>_hi`` beside them when bootstrapped."""
        row = self.rows[name].to_dict()
        if name in self.intervals:
            row.update(self.intervals[name].fields())
        return {**row, "anomalous_cases": self.n_cases[name][0], "normal_cases": self.n_cases[name][1]}

    def table(self) -> str:
        """The rows as a markdown table."""
        dice = self.task == "pixel"
        head = "| outliers | anomalous / normal cases | AP | AUROC |" + (" DICE |" if dice else "")
        sep = "|---|---|---|---|" + ("---|" if dice else "")
        lines = [head, sep]
        for name, m in self.rows.items():
            a, n = self.n_cases[name]
            iv = self.intervals.get(name)
            cells = [name, f"{a} / {n}", fmt_ci(m.ap, iv and iv.ap), fmt_ci(m.auroc, iv and iv.auroc)]
            cells += [fmt_ci(m.dice, iv and iv.dice)] if dice else []
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)


def fmt(x: float | None) -> str:
    """Four decimals, or ``n/a`` for missing / undefined values."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.4f}"


def fmt_ci(x: float | None, iv: Interval | None) -> str:
    """``0.536 [0.41, 0.66]`` with an interval (three decimals for the estimate, two for the bounds, which
    the resampling does not determine more finely); :func:`fmt` without one."""
    if iv is None:
        return fmt(x)
    point = "n/a" if x is None or math.isnan(x) else f"{x:.3f}"
    if math.isnan(iv.lo):
        return f"{point} [n/a]"
    return f"{point} [{iv.lo:.2f}, {iv.hi:.2f}]"


def resolve_labels(labels: Path, task: str) -> Path:
    """``TESTDIR/toy_label`` -> ``TESTDIR/toy_label/<task>``; a folder without that sub-folder is used as is."""
    return labels / task if (labels / task).is_dir() else labels


def find_manifest(labels: Path) -> Path | None:
    """The test set's manifest next to ``toy_label`` (``labels`` may be ``toy_label`` or ``toy_label/<task>``)."""
    for base in (labels, labels.parent, labels.parent.parent):
        if (base / MANIFEST).is_file():
            return base / MANIFEST
    return None


def read_pixel_label(path: Path) -> np.ndarray:
    """Boolean label volume (MOOD: rint, clip to [0, 1], == 1)."""
    try:
        data = nib.load(str(path)).get_fdata(dtype=np.float32)
    except Exception as exc:  # noqa: BLE001 - any nibabel failure is a bad label file
        raise InputError(path, f"unreadable label ({type(exc).__name__}: {exc})") from None
    np.rint(data, out=data)
    return data >= 1.0


def read_pixel_prediction(path: Path, shape: tuple[int, ...]) -> tuple[np.ndarray | None, str]:
    """The float16 prediction (MOOD reading) or ``None`` plus the reason it counts as zeros."""
    if not path.is_file():
        return None, "missing"
    try:
        pred = nib.load(str(path)).get_fdata(dtype=np.float16)
    except Exception as exc:  # noqa: BLE001
        return None, f"unreadable ({type(exc).__name__})"
    if pred.shape != shape:
        return None, f"shape {pred.shape} != label shape {shape}"
    return pred, "ok"


def read_sample_label(path: Path) -> int:
    """The sample label (first line as int)."""
    try:
        return int(path.read_text(encoding="utf-8").splitlines()[0])
    except (OSError, ValueError, IndexError) as exc:
        raise InputError(path, f"unreadable sample label ({type(exc).__name__})") from None


def read_sample_prediction(path: Path) -> tuple[float, str]:
    """The sample score (first line as float, clipped to [0, 1]) or 0.0 and the reason."""
    if not path.is_file():
        return 0.0, "missing"
    try:
        value = float(path.read_text(encoding="utf-8").splitlines()[0])
    except (OSError, ValueError, IndexError, UnicodeDecodeError) as exc:
        return 0.0, f"unreadable ({type(exc).__name__})"
    if math.isnan(value):
        return 0.0, "NaN"
    return float(np.clip(value, 0.0, 1.0)), "ok"


def evaluate(pred_dir: str | Path, labels: str | Path, task: str, manifest: str | Path | None = None,
             out_json: str | Path | None = None, search: GreedySearch = GreedySearch(),
             progress: bool = True, bootstrap: BootstrapConfig | None = None, split_sign: bool = False) -> EvalResult:
    """Evaluate predictions in ``pred_dir`` against ``labels`` (``TESTDIR/toy_label`` or its task folder).

    ``manifest`` (default: ``TESTDIR/manifest.json`` when present) gives each case's outlier type; without it
    only the ``overall`` row is computed. ``bootstrap`` (with replicates > 0) adds case-bootstrap intervals
    to every row (:mod:`mood_detector.evaluation.bootstrap`). ``split_sign`` adds the rows of added intensity
    by its sign (module notes; the sign is the manifest's offset n). Writes ``out_json`` when given.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    pred_dir, labels = Path(pred_dir), Path(labels)
    label_dir = resolve_labels(labels, task)
    if not label_dir.is_dir():
        raise InputError(label_dir, "label folder does not exist")
    mpath = Path(manifest) if manifest else find_manifest(label_dir)
    types: dict[str, str | None] = {}
    signs: dict[str, str | None] = {}
    if mpath is not None:
        try:
            mcases = read_manifest(mpath).get("cases", [])
            types = {c["name"]: c.get("type") for c in mcases}
            if split_sign:
                signs = {c["name"]: manifest_sign(c) for c in mcases}
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            raise OptionError("--manifest", f"{mpath} is not a test set manifest (a JSON object whose 'cases' "
                                            f"have a 'name'): {type(exc).__name__}: {exc}") from None
    suffix_ok = is_nifti if task == "pixel" else (lambda p: p.name.endswith(".txt"))
    files = sorted(p for p in label_dir.iterdir() if p.is_file() and not p.name.startswith(".") and suffix_ok(p))
    if not files:
        raise InputError(label_dir, f"no {task} label files")
    result = EvalResult(task=task, rows={})
    groups: dict[str, Any] = {}
    signed: dict[str, Any] = {}  # uniform_addition+ / - with split_sign (its cases are in groups too)
    keep_cases = bootstrap is not None and bootstrap.replicates > 0
    case_counts: list[Counts] = []  # per case, only for the bootstrap
    for lab in tqdm(files, desc=f"evaluate {task}", unit="case", disable=not progress):
        name = lab.name[:-4] if task == "sample" else lab.name
        pred_path = pred_dir / lab.name
        if task == "pixel":
            y = read_pixel_label(lab)
            pred, status = read_pixel_prediction(pred_path, y.shape)
            positive = bool(y.any())
            hist = Float16Histogram()
            hist.add(pred if pred is not None else np.zeros(y.shape, dtype=np.float16), y)
            if hist.n_nan:
                status = f"{status}; {hist.n_nan} NaN voxels counted as 0"
            g = _group(name, positive, types)
            groups[g] = groups[g].merged(hist) if g in groups else hist
            if signs.get(name):
                sg = signs[name]
                signed[sg] = signed[sg].merged(hist) if sg in signed else hist
            if keep_cases:
                case_counts.append(hist.counts())
            del pred, y, hist
        else:
            label = read_sample_label(lab)
            score, status = read_sample_prediction(pred_path)
            positive = label == 1
            for acc in (groups.setdefault(_group(name, positive, types), ([], [])),
                        signed.setdefault(signs[name], ([], [])) if signs.get(name) else None):
                if acc is not None:
                    acc[0].append(score)
                    acc[1].append(int(positive))
            if keep_cases:
                case_counts.append(counts_from_scores(np.array([score]), np.array([positive])))
        case = {"name": name, "type": types.get(name), "group": _group(name, positive, types),
                "label": int(positive), "prediction": status}
        if signs.get(name):
            case["sign_row"] = signs[name]
        result.cases.append(case)
        if status != "ok":
            result.problems.append(f"{pred_path}: {status} (counted as zeros)")
    for p in result.problems:
        log.warning("%s", p)
    _fill_rows(result, groups, search, signed)
    if keep_cases:
        _fill_intervals(result, case_counts, bootstrap, search)
    if out_json is not None:
        out_json = Path(out_json)
        out_json.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out_json, json.dumps({**result.to_dict(), "pred_dir": str(pred_dir),
                                                "labels": str(label_dir)}, indent=2) + "\n")
    return result


def _group(name: str, positive: bool, types: dict[str, str | None]) -> str:
    """Row group of a case: its manifest type, ``normal``, or (without a manifest) ``anomalous``/``normal``."""
    if name in types:
        return types[name] or NORMAL
    return "anomalous" if positive else NORMAL


def _fill_rows(result: EvalResult, groups: dict[str, Any], search: GreedySearch,
               signed: dict[str, Any] | None = None) -> None:
    pixel = result.task == "pixel"
    signed = signed or {}
    n_by_group: dict[str, int] = {}
    for c in result.cases:
        for g in (c["group"], c.get("sign_row")):
            if g is not None:
                n_by_group[g] = n_by_group.get(g, 0) + 1
    n_normal = n_by_group.get(NORMAL, 0)

    def counts(accs: list[Any]):
        if pixel:
            return accs[0].merged(*accs[1:]).counts()
        scores = [s for a in accs for s in a[0]]
        labels = [y for a in accs for y in a[1]]
        return counts_from_scores(np.asarray(scores, dtype=np.float64), np.asarray(labels))

    normal = [groups[NORMAL]] if NORMAL in groups else []
    typed = [t for t in OUTLIER_TYPES if t in groups] + sorted(
        g for g in groups if g not in OUTLIER_TYPES and g not in (NORMAL, "anomalous"))
    for t in typed:
        rows = [(t, groups[t])]
        if t == SIGNED_TYPE:  # its rows by sign after it: + then -
            rows += [(s, signed[s]) for s in (BRIGHTER, DARKER) if s in signed]
        for name, acc in rows:
            result.rows[name] = compute_metrics(counts([acc] + normal), with_dice=pixel, search=search)
            result.n_cases[name] = (n_by_group[name], n_normal)
    result.rows[OVERALL] = compute_metrics(counts(list(groups.values())), with_dice=pixel, search=search)
    n_anom = sum(c["label"] for c in result.cases)
    result.n_cases[OVERALL] = (n_anom, len(result.cases) - n_anom)


def _fill_intervals(result: EvalResult, case_counts: list[Counts], cfg: BootstrapConfig,
                    search: GreedySearch) -> None:
    """Bootstrap intervals of every row, resampling the row's own cases (a type's cases plus the normal ones;
    all cases for ``overall``), as the point estimates pool them."""
    # The point estimates (``result.rows``) stay the exact pooled counts; the replicates sum the same per-case
    # counts, so a replicate drawing every case once reproduces them and the intervals are about the cases only.
    table = CaseTable.from_counts(case_counts)
    groups = [c["group"] for c in result.cases]
    signs = [c.get("sign_row") for c in result.cases]
    for name in result.rows:
        members = {name, NORMAL} if name != OVERALL else set(groups)
        rows = [i for i, (g, s) in enumerate(zip(groups, signs)) if g in members or s == name]
        sub = CaseTable(table.scores, table.pos[rows], table.neg[rows])
        result.intervals[name] = bootstrap_row(sub, cfg, with_dice=result.task == "pixel", search=search)
    result.bootstrap = cfg


def evaluate_tasks(pred_dir: str | Path, testdir: str | Path, out_dir: str | Path,
                   tasks: tuple[str, ...] = TASKS, progress: bool = True) -> tuple[dict[str, EvalResult], Path]:
    """Evaluate ``tasks`` of the predictions in ``pred_dir`` against a test set made by ``make-testset``;
    writes ``out_dir/<task>.json`` and ``out_dir/evaluation.md`` (one table per task) and returns the results
    and the markdown path."""
    testdir, out_dir = Path(testdir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, EvalResult] = {}
    parts = []
    for task in tasks:
        res = evaluate(pred_dir, testdir / "toy_label", task, out_json=out_dir / f"{task}.json", progress=progress)
        results[task] = res
        parts += [f"{task} task ({len(res.cases)} cases):", "", res.table(), ""]
    md = out_dir / "evaluation.md"
    write_text_atomic(md, "\n".join(parts))
    return results, md
