"""``make-testset``: a MOOD-style toy test set with synthetic outliers from a folder of normal volumes.

Layout written (the MOOD challenge's toy-example layout)::

    TESTDIR/toy/<name>.nii.gz                    input volumes (float32, [0, 1], the source's affine)
    TESTDIR/toy_label/pixel/<name>.nii.gz        voxel labels: 1 = voxel changed by the outlier, else 0
    TESTDIR/toy_label/sample/<name>.nii.gz.txt   "1" (anomalous) or "0" (normal)
    TESTDIR/manifest.json                        source, outlier type and parameters of every case

Case ``i`` is made from the ``i``-th normal volume (sorted by name) and named ``toy_{i:03d}.nii.gz``.
Exactly ``round(anomalous_fraction * n)`` cases are anomalous; the anomalous cases cycle through the chosen
outlier types in a shuffled order, so every type gets the same number of cases, or one more for the first
types of that order when the anomalous count is not a multiple of the number of types (a warning says so).
Everything depends only on ``seed``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from mood_detector.evaluation.outliers import OUTLIER_TYPES, OutlierConfig, apply_outlier, config_dict
from mood_detector.io.nifti import list_volumes, read_volume, write_text_atomic, write_volume
from mood_detector.kinds import get_kind
from mood_detector.preprocess import scale_unit

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


@dataclass
class TestsetConfig:
    """Options of :func:`make_testset`.

    Attributes:
        kind: ``brain`` or ``abdom`` (recorded in the manifest; both use the same outlier defaults).
        anomalous_fraction: fraction of cases that get an outlier.
        types: outlier types to use (a subset of :data:`OUTLIER_TYPES`; e.g. one type for a validation set).
        seed: random seed.
        outliers: outlier parameters.
        compresslevel: gzip level of the written volumes.
    """

    __test__ = False  # not a pytest class

    kind: str = "brain"
    anomalous_fraction: float = 0.5
    types: tuple[str, ...] = OUTLIER_TYPES
    seed: int = 0
    outliers: OutlierConfig = field(default_factory=OutlierConfig)
    compresslevel: int = 1


def case_name(i: int) -> str:
    """File name of case ``i``."""
    return f"toy_{i:03d}.nii.gz"


def type_counts(n_anomalous: int, order: Sequence[str]) -> dict[str, int]:
    """Anomalous cases per type when ``n_anomalous`` cases cycle through ``order``: the same number for every
    type, plus one for each of the first ``n_anomalous % len(order)`` types."""
    base, extra = divmod(n_anomalous, len(order))
    return {t: base + (k < extra) for k, t in enumerate(order)}


def plan_cases(n: int, cfg: TestsetConfig) -> list[str | None]:
    """Outlier type per case (``None`` = normal): exactly ``round(fraction * n)`` anomalous cases at random
    positions; the types, in an order shuffled by the seed, are assigned in turn to the anomalous cases (sorted
    by position), so the per-type counts are :func:`type_counts` of that order."""
    if not 0.0 <= cfg.anomalous_fraction <= 1.0:
        raise ValueError(f"anomalous fraction must be in [0, 1], got {cfg.anomalous_fraction}")
    bad = [t for t in cfg.types if t not in OUTLIER_TYPES]
    if bad or not cfg.types:
        raise ValueError(f"outlier types must be a non-empty subset of {', '.join(OUTLIER_TYPES)}; got {bad}")
    rng = np.random.default_rng([cfg.seed, 1])
    n_anom = int(round(cfg.anomalous_fraction * n))
    which = rng.permutation(n)[:n_anom]
    types = list(cfg.types)
    order = [types[k] for k in rng.permutation(len(types))]
    _warn_uneven(n_anom, order)
    plan: list[str | None] = [None] * n
    for j, i in enumerate(sorted(int(w) for w in which)):
        plan[i] = order[j % len(order)]
    return plan


def _warn_uneven(n_anomalous: int, order: Sequence[str]) -> None:
    """One warning line when the anomalous cases cannot be split evenly over the types."""
    extra = n_anomalous % len(order)
    if extra:
        more = ", ".join(order[:extra])
        log.warning("%d anomalous cases are not a multiple of %d outlier types: %s get %d case(s), the others %d",
                    n_anomalous, len(order), more, n_anomalous // len(order) + 1, n_anomalous // len(order))


def make_testset(normals: str | Path | Sequence[Path], out_dir: str | Path, cfg: TestsetConfig,
                 progress: bool = True) -> dict[str, Any]:
    """Write the test set into ``out_dir`` from normal volumes (a folder or a list of files); returns the
    manifest (also written to ``out_dir/manifest.json``)."""
    files = list_volumes(normals) if isinstance(normals, (str, Path)) else [Path(f) for f in normals]
    if not files:
        raise ValueError(f"{normals}: no .nii/.nii.gz normal volumes")
    get_kind(cfg.kind)
    out_dir = Path(out_dir)
    toy, pix, smp = out_dir / "toy", out_dir / "toy_label" / "pixel", out_dir / "toy_label" / "sample"
    for d in (toy, pix, smp):
        d.mkdir(parents=True, exist_ok=True)
    plan = plan_cases(len(files), cfg)
    ocfg = cfg.outliers
    cases = []
    bar = tqdm(list(zip(files, plan)), desc="make-testset", unit="vol", disable=not progress)
    for i, (path, kind) in enumerate(bar):
        vol = read_volume(path)
        data = scale_unit(vol.data)  # the scan as it looks (background kept), in [0, 1]
        name = case_name(i)
        case: dict[str, Any] = {"name": name, "source": str(path), "anomalous": kind is not None, "type": kind}
        if kind is None:
            label = np.zeros(data.shape, dtype=np.uint8)
        else:
            if ocfg.reflect_axis >= data.ndim:
                ocfg = replace(ocfg, reflect_axis=0)
            res = apply_outlier(data, kind, np.random.default_rng([cfg.seed, 2, i]), ocfg)
            data, label = res.volume, res.label
            case.update({k: v for k, v in res.info.items() if k != "type"})
        write_volume(toy / name, data, vol.affine, vol.header, compresslevel=cfg.compresslevel)
        write_volume(pix / name, label, vol.affine, vol.header, compresslevel=cfg.compresslevel)
        write_text_atomic(smp / f"{name}.txt", f"{int(kind is not None)}\n")
        cases.append(case)
        del vol, data, label
    manifest = {"kind": cfg.kind, "seed": cfg.seed, "anomalous_fraction": cfg.anomalous_fraction,
                "types": list(cfg.types), "outlier_config": config_dict(cfg.outliers),
                "label": "voxels inside the sphere whose value the outlier changed",
                "n_cases": len(cases), "n_anomalous": sum(c["anomalous"] for c in cases),
                "type_counts": {t: sum(c["type"] == t for c in cases) for t in cfg.types}, "cases": cases}
    write_text_atomic(out_dir / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    log.info("wrote %d cases (%d anomalous) to %s", len(cases), manifest["n_anomalous"], out_dir)
    return manifest


def read_manifest(path: str | Path) -> dict[str, Any]:
    """Read a manifest written by :func:`make_testset`."""
    return json.loads(Path(path).read_text(encoding="utf-8"))
