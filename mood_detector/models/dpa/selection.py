"""Hyperparameter selection of the DPA on a validation set holding ONE outlier type (paper Sec. 3.3).

The paper tunes the bottleneck size and the feature layer of the loss on a small "validation" set of anomalies
of confined variability (one type) and reports the chosen model on all anomaly types. Here a grid of
``latent_dim`` x ``feature_layer`` models is trained on the normal training volumes, each scores the
validation volumes through the common :class:`~mood_detector.inference.predictor.Predictor`, the
evaluation harness (:func:`mood_detector.evaluation.evaluate.evaluate`) computes the sample-level AP, and the
best AP wins (ties: the earlier grid point). The validation set is any MOOD-style folder pair (images +
``toy_label``), e.g. one written by :func:`mood_detector.evaluation.testset.make_testset` with one type.

With the default ``fpi-vgg19`` features, the FPI-trained VGG19 is trained once, up to the deepest layer of the
grid, and shared by every grid point (its shallower layers are a prefix of the same network), so the grid
compares autoencoder settings on identical features.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

from mood_detector.detector import TrainConfig, load_detector
from mood_detector.io.nifti import list_volumes, write_text_atomic

log = logging.getLogger(__name__)


@dataclass
class SelectionConfig:
    """The grid and what is evaluated.

    Attributes:
        latent_dims: bottleneck sizes tried.
        feature_layers: feature layers (at the final resolution) tried.
        pixel: also compute pixel-level metrics of every grid point (slower; not used for the choice).
        share_features: train ``fpi-vgg19`` features once and reuse them for the whole grid.
    """

    latent_dims: tuple[int, ...] = (32, 128)
    feature_layers: tuple[str, ...] = ("r22", "r32")
    pixel: bool = False
    share_features: bool = True


@dataclass
class Candidate:
    """One grid point and its validation scores."""

    latent_dim: int
    feature_layer: str
    weights: str
    sample_ap: float
    sample_auroc: float
    pixel_ap: float | None = None


@dataclass
class SelectionResult:
    """All grid points and the chosen one."""

    candidates: list[Candidate]
    best: Candidate
    validation: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"best": asdict(self.best), "candidates": [asdict(c) for c in self.candidates],
                "validation": self.validation, "criterion": "sample AP on the one-type validation set"}

    def table(self) -> str:
        """Markdown table of the grid (best marked)."""
        lines = ["| latent_dim | feature_layer | val sample AP | val sample AUROC | val pixel AP |",
                 "|---|---|---|---|---|"]
        for c in self.candidates:
            mark = " **(best)**" if c is self.best else ""
            pix = "n/a" if c.pixel_ap is None else f"{c.pixel_ap:.4f}"
            lines.append(f"| {c.latent_dim} | {c.feature_layer}{mark} | {c.sample_ap:.4f} | {c.sample_auroc:.4f} "
                         f"| {pix} |")
        return "\n".join(lines)


def pick_best(candidates: Sequence[Candidate]) -> Candidate:
    """The candidate with the highest sample AP (NaN counts as worst; ties keep the earlier one)."""
    if not candidates:
        raise ValueError("no candidates to choose from")

    def key(c: Candidate) -> float:
        return c.sample_ap if c.sample_ap == c.sample_ap else float("-inf")

    best = candidates[0]
    for c in candidates[1:]:
        if key(c) > key(best):
            best = c
    return best


def _deepest(layers: Sequence[str]) -> str:
    from mood_detector.models.dpa.features import VGG19_LAYERS

    return max(layers, key=lambda n: VGG19_LAYERS[n])


def shared_fpi_features(train_dir: Path, out_dir: Path, base: TrainConfig, layers: Sequence[str]) -> Path:
    """Train the ``fpi-vgg19`` features once (up to the deepest of ``layers``); path of the saved weights."""
    import torch

    from mood_detector.detector import resolve_device
    from mood_detector.models.dpa.detector import DPADetector
    from mood_detector.models.dpa.features import make_extractor, save_vgg19
    from mood_detector.models.dpa.pretrain import feature_phase
    from mood_detector.training.engine import Engine
    from mood_detector.tasks.fpi import FPIConfig
    from mood_detector.training.data import VolumeStore
    from mood_detector.training.loop import seed_everything

    path = out_dir / "features_fpi_vgg19.safetensors"
    if path.is_file():
        log.info("reusing shared fpi-vgg19 features %s", path)
        return path
    deepest = _deepest(layers)
    cfg = replace(base, options={**base.options, "feature_layer": deepest})
    o = DPADetector.options(cfg)
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    ext = make_extractor("fpi-vgg19", deepest)
    store = VolumeStore(list_volumes(train_dir), o.max_res, cfg.kind_cfg.slice_axis, cfg.cache_gb)
    task = FPIConfig.for_kind(cfg.kind, "discrete")
    phase, state = feature_phase(ext, deepest, store, task, o.feature_epochs, cfg.batch_size, o.feature_lr, cfg.seed,
                                 device, cfg.max_batches_per_pair, cfg.workers)
    Engine(out_dir / "features_run", "{}", {"features": ext, **state}).run([phase])
    ext.to(torch.device("cpu"))
    return save_vgg19(ext, path)


def evaluate_weights(weights: str | Path, images: Sequence[Path], labels: str | Path, pred_dir: str | Path,
                     device: str = "auto", tasks: tuple[str, ...] = ("sample",),
                     manifest: str | Path | None = None) -> dict[str, Any]:
    """Predict ``images`` with ``weights`` through the common Predictor and evaluate each task against the
    MOOD-style ``labels``; returns ``{task: EvalResult}``."""
    from mood_detector.evaluation.evaluate import evaluate
    from mood_detector.inference.predictor import PredictConfig, Predictor

    det = load_detector(weights)
    rep = Predictor(det, PredictConfig(tasks=tasks, device=device, progress=False)).predict_files(images, pred_dir)
    if rep.failed:
        raise RuntimeError(f"{weights}: {len(rep.failed)} volumes failed, first: {rep.failed[0]}")
    return {t: evaluate(pred_dir, labels, t, manifest, progress=False) for t in tasks}


def select_dpa(train_dir: str | Path, val_images: str | Path, val_labels: str | Path, out_dir: str | Path,
               base: TrainConfig, sel: SelectionConfig = SelectionConfig(),
               manifest: str | Path | None = None) -> SelectionResult:
    """Train the grid on ``train_dir``, evaluate each model's sample AP on the validation set
    (``val_images`` + MOOD-style ``val_labels``), write ``out_dir/selection.json`` and return the result."""
    from mood_detector.evaluation.evaluate import OVERALL
    from mood_detector.training.api import train_detector

    train_dir, val_images, val_labels, out_dir = Path(train_dir), Path(val_images), Path(val_labels), Path(out_dir)
    val_files = list_volumes(val_images)
    if not val_files:
        raise ValueError(f"{val_images}: no validation volumes")
    out_dir.mkdir(parents=True, exist_ok=True)
    base = replace(base, detector="dpa", options=dict(base.options))
    base.options.pop("latent_dim", None)
    base.options.pop("feature_layer", None)
    features = base.options.get("features", "")
    if sel.share_features and features in ("", "fpi-vgg19") and not base.options.get("feature_weights"):
        base.options.update({"features": "fpi-vgg19",
                             "feature_weights": str(shared_fpi_features(train_dir, out_dir, base, sel.feature_layers))})
    tasks = ("sample", "pixel") if sel.pixel else ("sample",)
    candidates: list[Candidate] = []
    for ld in sel.latent_dims:
        for layer in sel.feature_layers:
            tag = f"ld{ld}_{layer}"
            cfg = replace(base, options={**base.options, "latent_dim": str(ld), "feature_layer": layer})
            weights = train_detector(train_dir, out_dir / f"{tag}.safetensors", cfg, out_dir / f"{tag}_run")
            ev = evaluate_weights(weights, val_files, val_labels, out_dir / f"{tag}_pred", base.device, tasks,
                                  manifest)
            s = ev["sample"].rows[OVERALL]
            pix = float(ev["pixel"].rows[OVERALL].ap) if sel.pixel else None
            cand = Candidate(ld, layer, str(weights), float(s.ap), float(s.auroc), pix)
            log.info("DPA grid %s: validation sample AP %.4f AUROC %.4f", tag, cand.sample_ap, cand.sample_auroc)
            candidates.append(cand)
    result = SelectionResult(candidates, pick_best(candidates),
                             {"images": str(val_images), "labels": str(val_labels)})
    write_text_atomic(out_dir / "selection.json", json.dumps(result.to_dict(), indent=2) + "\n")
    log.info("DPA selection: best latent_dim=%d feature_layer=%s (sample AP %.4f)", result.best.latent_dim,
             result.best.feature_layer, result.best.sample_ap)
    return result
