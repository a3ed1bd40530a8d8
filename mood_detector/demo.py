"""The README's first command: the whole job on embedded default data, small enough for a CPU.

Steps: generate brain pseudo-subjects, train a small FPI model, score the held-out subjects (pixel and
sample task), print where everything is. Later stages (evaluation, report) append themselves to
:func:`run_demo`'s steps.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from mood_detector.data.brain import make_brain_data
from mood_detector.detector import TrainConfig
from mood_detector.errors import MoodError
from mood_detector.evaluation.evaluate import evaluate_tasks
from mood_detector.evaluation.testset import TestsetConfig, make_testset
from mood_detector.inference.api import predict_folder
from mood_detector.inference.predictor import PredictConfig
from mood_detector.report import ReportConfig, build_report
from mood_detector.training.api import train_detector

log = logging.getLogger(__name__)


@dataclass
class DemoConfig:
    """Sizes of the demo run (defaults take a few minutes on 2 CPU cores)."""

    out: Path = Path("demo")
    n_train: int = 6
    n_test: int = 4
    size: int = 64
    width: float = 0.25
    epochs: int = 8
    seed: int = 0
    device: str = "auto"
    outputs: dict[str, Path] = field(default_factory=dict)


def run_demo(cfg: DemoConfig) -> dict[str, Path]:
    """Run the demo; returns the named output locations."""
    out = Path(cfg.out)
    if out.exists():
        shutil.rmtree(out)
    train_dir, test_dir = out / "data" / "train", out / "data" / "test"
    make_brain_data(train_dir, cfg.n_train, cfg.size, cfg.seed, start=0)
    make_brain_data(test_dir, cfg.n_test, cfg.size, cfg.seed, start=cfg.n_train)
    weights = out / "weights" / "brain" / "fpi.safetensors"
    tcfg = TrainConfig(detector="fpi", kind="brain", size=cfg.size, width=cfg.width, mode="discrete",
                       epochs=cfg.epochs, batch_size=16, seed=cfg.seed, device=cfg.device,
                       training_data=f"{cfg.n_train} generated brain pseudo-subjects (MNI152 template, {cfg.size}^3)")
    train_detector(train_dir, weights, tcfg)
    pred = out / "pred"
    pcfg = PredictConfig(tasks=("pixel", "sample"), device=cfg.device)
    report = predict_folder(test_dir, pred, pcfg, weights=weights)
    cfg.outputs.update({"training data": train_dir, "test inputs": test_dir, "weights": weights,
                        "loss log": weights.parent / "fpi_run" / "loss_log.csv", "predictions": pred})
    for name, score in sorted(report.samples.items()):
        log.info("sample score %s = %.4f", name, score)
    # Evaluation (issue 3): a synthetic-outlier test set from the held-out subjects, scored and evaluated.
    testset, test_pred = out / "testset", out / "testset_pred"
    make_testset(test_dir, testset, TestsetConfig(kind="brain", seed=cfg.seed))
    predict_folder(testset / "toy", test_pred, pcfg, weights=weights)
    _, table = evaluate_tasks(test_pred, testset, out / "evaluation")
    cfg.outputs.update({"test set": testset, "evaluation": table})
    # Visual report (issue 8) of the toy cases, with their labels; matplotlib is the optional [report] extra,
    # so the demo goes on without it.
    try:
        shown = build_report(ReportConfig(inputs=testset / "toy", predictions=test_pred, out=out / "report",
                                          labels=testset / "toy_label", progress=False))
        cfg.outputs["report"] = shown.index
    except MoodError as exc:
        log.warning("report skipped: %s", exc)
    return cfg.outputs
