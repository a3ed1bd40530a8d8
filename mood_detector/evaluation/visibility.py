"""``mood-detector visibility``: how much of each synthetic outlier any detector could see at all.

A test set's label marks every voxel an outlier changed (``A' != A``), however little: a sink/source
deformation of smooth tissue or a shift inside homogeneous tissue may move a voxel by far less than the
image's noise. This reads a test set made by ``make-testset`` and reports, per outlier type, the share of
labelled voxels whose intensity changed by more than each threshold (default 0.02 and 0.05 of the [0, 1]
range of the test volumes), so a detector's per-type results can be read against what is visible.

* **The clean volume** of a case is its normal source (the manifest's ``source``), scaled to [0, 1] as
  ``make-testset`` scaled it (:func:`mood_detector.preprocess.scale_unit`): a test set is a function of its
  sources and seed, so nothing more needs to be kept or planted again. ``normals`` finds the sources by file
  name in another folder (a test set moved to another machine). A source that is not the volume a case was
  made from (a voxel outside the case's label differs) is an error naming the case.
* **Added intensity by sign.** ``uniform_addition`` adds one offset n ~ N(0, 1) to its sphere, so about half
  of its spheres brighten and half darken (many to black: values are clipped at 0). Its cases are also
  counted as ``uniform_addition+`` (brighter) and ``uniform_addition-`` (darker), by the sign of the mean
  change inside the label (the sign of n: clipping shortens a change, never reverses it).
  ``mood-detector evaluate --split-sign`` reports the same two rows.
* Shares pool the labelled voxels of all cases of a row; ``all`` pools every anomalous case.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from mood_detector.errors import InputError
from mood_detector.evaluation.outliers import OUTLIER_TYPES
from mood_detector.evaluation.testset import MANIFEST, read_manifest
from mood_detector.io.nifti import read_volume, write_text_atomic
from mood_detector.preprocess import scale_unit

log = logging.getLogger(__name__)

#: default thresholds on the absolute intensity change, in the [0, 1] range of the test volumes
THRESHOLDS: tuple[float, ...] = (0.02, 0.05)
#: the outlier type reported by the sign of its change as well, and the names of its two rows
SIGNED_TYPE = "uniform_addition"
BRIGHTER, DARKER = f"{SIGNED_TYPE}+", f"{SIGNED_TYPE}-"
ALL = "all"


def signed_type(kind: str | None, change: float | None) -> str | None:
    """``uniform_addition+`` / ``uniform_addition-`` for a uniform-addition case whose change (the offset n,
    or the mean change inside its label) is positive / negative; ``None`` for other cases or no change."""
    if kind != SIGNED_TYPE or change is None or change == 0 or not np.isfinite(change):
        return None
    return BRIGHTER if change > 0 else DARKER


def manifest_sign(case: dict[str, Any]) -> str | None:
    """:func:`signed_type` of a manifest case from its recorded offset n (``params.n``), without reading it."""
    params = case.get("params") or {}
    n = params.get("n") if isinstance(params, dict) else None
    return signed_type(case.get("type"), float(n) if isinstance(n, (int, float)) else None)


def parse_thresholds(text: str) -> tuple[float, ...]:
    """``"0.02,0.05"`` -> (0.02, 0.05): distinct values in (0, 1), sorted."""
    try:
        values = sorted({float(t) for t in text.split(",") if t.strip()})
    except ValueError:
        raise ValueError(f"{text!r} is not a comma list of numbers") from None
    if not values or not all(0.0 < v < 1.0 for v in values):
        raise ValueError(f"{text!r}: thresholds must be numbers in (0, 1), e.g. 0.02,0.05")
    return tuple(values)


@dataclass
class Row:
    """Cases, labelled voxels and, per threshold, the labelled voxels changed by more than it."""

    cases: int = 0
    labelled: int = 0
    above: dict[float, int] = field(default_factory=dict)

    def add(self, labelled: int, above: dict[float, int]) -> None:
        self.cases += 1
        self.labelled += labelled
        for t, n in above.items():
            self.above[t] = self.above.get(t, 0) + n

    def share(self, t: float) -> float:
        return self.above.get(t, 0) / self.labelled if self.labelled else float("nan")


@dataclass
class VisibilityResult:
    """Rows (outlier types in :data:`OUTLIER_TYPES` order, the two signed rows after ``uniform_addition``,
    then ``all``) and one entry per anomalous case."""

    thresholds: tuple[float, ...]
    rows: dict[str, Row]
    cases: list[dict[str, Any]] = field(default_factory=list)

    def table(self) -> str:
        """The rows as a markdown table."""
        head = ["outliers", "cases", "labelled voxels"] + [f"share > {t:g}" for t in self.thresholds]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for name, row in self.rows.items():
            cells = [name, str(row.cases), str(row.labelled)]
            cells += ["n/a" if not row.labelled else f"{row.share(t):.3f}" for t in self.thresholds]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        rows = {name: {"cases": r.cases, "labelled_voxels": r.labelled,
                       **{f"share_above_{t:g}": (r.share(t) if r.labelled else None) for t in self.thresholds}}
                for name, r in self.rows.items()}
        return {"thresholds": list(self.thresholds), "rows": rows, "cases": self.cases,
                "change": "|test volume - clean source scaled to [0, 1]| inside the label"}


def case_visibility(volume: np.ndarray, clean: np.ndarray, label: np.ndarray,
                    thresholds: Sequence[float] = THRESHOLDS) -> dict[str, Any]:
    """Labelled voxels, mean change inside the label and, per threshold, the labelled voxels whose absolute
    change exceeds it, for one case (``label`` boolean). ``changed_outside`` counts the voxels outside the
    label that differ (0 for a case and its own source)."""
    diff = np.subtract(volume, clean, dtype=np.float32)
    inside = diff[label]
    outside = int(np.count_nonzero(diff)) - int(np.count_nonzero(inside))
    mag = np.abs(inside)
    return {"labelled": int(inside.size), "mean_change": float(inside.mean()) if inside.size else 0.0,
            "above": {float(t): int(np.count_nonzero(mag > t)) for t in thresholds}, "changed_outside": outside}


def _source(case: dict[str, Any], normals: Path | None) -> Path:
    src = Path(str(case.get("source", "")))
    path = normals / src.name if normals is not None else src
    if not path.is_file():
        hint = "" if normals is not None else "; give the folder of the normal volumes with --normals"
        raise InputError(path, f"the normal volume of case {case.get('name')} is not there{hint}")
    return path


def visibility(testdir: str | Path, thresholds: Sequence[float] = THRESHOLDS, normals: str | Path | None = None,
               out_json: str | Path | None = None, progress: bool = True) -> VisibilityResult:
    """Per outlier type, the share of labelled voxels changed by more than each threshold (module notes), for
    the test set in ``testdir`` (``toy/``, ``toy_label/pixel/``, ``manifest.json``). Writes ``out_json`` when
    given."""
    from mood_detector.evaluation.evaluate import read_pixel_label

    testdir = Path(testdir)
    mpath = testdir / MANIFEST
    if not mpath.is_file():
        raise InputError(mpath, "no test set manifest (make the test set with 'mood-detector make-testset')")
    try:
        cases = [c for c in read_manifest(mpath)["cases"] if c.get("anomalous") and c.get("type")]
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise InputError(mpath, f"not a test set manifest ({type(exc).__name__}: {exc})") from None
    normals = Path(normals) if normals is not None else None
    thresholds = tuple(sorted(float(t) for t in thresholds))
    kinds = [t for t in OUTLIER_TYPES if any(c["type"] == t for c in cases)]
    kinds += sorted({c["type"] for c in cases} - set(OUTLIER_TYPES))
    names: list[str] = []
    for t in kinds:
        names += [t] + ([BRIGHTER, DARKER] if t == SIGNED_TYPE else [])
    result = VisibilityResult(thresholds, {n: Row() for n in names + [ALL]})
    for case in tqdm(cases, desc="visibility", unit="case", disable=not progress):
        name = case["name"]
        src = _source(case, normals)
        clean = scale_unit(read_volume(src).data)
        volume = read_volume(testdir / "toy" / name).data
        label = read_pixel_label(testdir / "toy_label" / "pixel" / name)
        if clean.shape != volume.shape or label.shape != volume.shape:
            raise InputError(src, f"shape {clean.shape} is not case {name}'s {volume.shape}: not its source")
        res = case_visibility(volume, clean, label, thresholds)
        del clean, volume, label
        if res["changed_outside"]:
            raise InputError(src, f"{res['changed_outside']} voxels outside the label of case {name} differ from "
                                  f"it: not the volume the case was made from")
        signed = signed_type(case["type"], res["mean_change"])
        for row in (case["type"], signed, ALL):
            if row is not None:
                result.rows[row].add(res["labelled"], res["above"])
        result.cases.append({"name": name, "type": case["type"], "row": signed or case["type"],
                             "source": str(src), "labelled_voxels": res["labelled"],
                             "mean_change": round(res["mean_change"], 6),
                             **{f"above_{t:g}": n for t, n in res["above"].items()}})
    if out_json is not None:
        out_json = Path(out_json)
        out_json.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out_json, json.dumps({**result.to_dict(), "testset": str(testdir)}, indent=2) + "\n")
    return result

