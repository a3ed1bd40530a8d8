"""The README's first command: the main job on freshly generated cases, with the bundled weights.

Default (bundled weights, no training): for each kind with bundled FPI weights, generate a few held-out normal
subjects at the MOOD size, plant synthetic outliers in most of them, score both tasks with the bundled model,
evaluate, and write the visual report. ``train=True`` instead trains a small FPI model on generated brain
subjects first (the whole job from scratch, a few minutes on 2 CPU cores) and uses that.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from mood_detector.detector import DEFAULT_DETECTOR, TrainConfig, check_device, check_train_config
from mood_detector.errors import MoodError, OptionError
from mood_detector.evaluation.evaluate import evaluate_tasks
from mood_detector.evaluation.testset import TestsetConfig, make_testset
from mood_detector.inference.api import default_weights_dir, predict_folder
from mood_detector.inference.predictor import PredictConfig
from mood_detector.io.folders import check_output_dir
from mood_detector.kinds import KINDS
from mood_detector.pipelines.subjects import make_subjects
from mood_detector.report import ReportConfig, build_report
from mood_detector.training.api import train_detector
from mood_detector.weights import read_card

log = logging.getLogger(__name__)

#: subject indices of the demo's cases: far from those of any training folder the package makes
DEMO_START = 90_000
#: edge of the demo's generated cubes: the MOOD brain size; the abdomen at half its MOOD size (a 512^3 phantom
#: has 8x the voxels to make, score, evaluate and draw, which would add about 7 minutes on 2 CPU cores; the
#: models resample every input to their own size anyway)
DEMO_SIZE = {"brain": 256, "abdom": 256}


@dataclass
class DemoConfig:
    """What the demo runs (defaults: a few minutes on 2 CPU cores).

    Attributes:
        out: output folder (replaced).
        kinds: kinds to run; kinds without bundled weights are skipped with a message (unless ``train``).
        n_cases: test cases per kind (``anomalous_fraction`` of them with one synthetic outlier; the defaults make
            5 of 8 anomalous, one per outlier type, so the report shows which types light up, and 3 normal, so
            the sample task's ranking has more than one normal case to rank against).
        size: edge of the generated cubes (None = :data:`DEMO_SIZE` per kind).
        detector: whose bundled weights to use (``<kind>/<detector>.safetensors``), or which to train with ``train``
            (``fpi`` or ``nsa``).
        train: train a small brain model first instead of using the bundled weights.
        n_train, train_size, width, epochs: that small model's training (only with ``train``).
    """

    out: Path = Path("demo")
    kinds: tuple[str, ...] = ("brain", "abdom")
    n_cases: int = 8
    anomalous_fraction: float = 0.625
    size: int | None = None
    detector: str = DEFAULT_DETECTOR
    train: bool = False
    n_train: int = 6
    train_size: int = 64
    width: float = 0.25
    epochs: int = 8
    seed: int = 0
    device: str = "auto"
    weights_dir: Path | None = None
    outputs: dict[str, Path] = field(default_factory=dict)


def check_demo_config(cfg: DemoConfig) -> None:
    """:class:`OptionError` naming the ``demo`` option for a value that cannot work (before anything is made)."""
    bad = [k for k in cfg.kinds if k not in KINDS]
    if bad or not cfg.kinds:
        raise OptionError("--kinds", f"{','.join(cfg.kinds)}: choose from {', '.join(sorted(KINDS))}")
    check_device(cfg.device)
    if cfg.train:
        try:
            check_train_config(_train_config(cfg))
        except OptionError as exc:  # the demo's --train-size is the training size
            raise OptionError("--train-size" if exc.option == "--size" else exc.option, exc.reason) from None
    check_output_dir(cfg.out, "--out")


def run_demo(cfg: DemoConfig) -> dict[str, Path]:
    """Run the demo; returns the named output locations."""
    check_demo_config(cfg)
    out = Path(cfg.out)
    if out.exists():
        shutil.rmtree(out)
    root = Path(cfg.weights_dir) if cfg.weights_dir else default_weights_dir()
    for kind in cfg.kinds:
        weights = root / kind / f"{cfg.detector}.safetensors"
        if cfg.train:
            if kind != "brain":  # the small from-scratch model is a brain model; say so rather than skip quietly
                log.warning("--train trains a small brain model only: the %s part of the demo is skipped (run the "
                            "demo without --train to score the %s with the bundled model)", kind, kind)
                continue
            weights = _train_small(cfg, out)
        elif not weights.is_file():
            log.warning("no bundled %s weights for %s (%s): skipped", cfg.detector, kind, weights)
            continue
        size = cfg.size or (cfg.train_size if cfg.train else DEMO_SIZE[kind])
        normals, testset, pred = out / kind / "normals", out / kind / "testset", out / kind / "pred"
        make_subjects(kind, normals, cfg.n_cases, size, cfg.seed, DEMO_START)
        make_testset(normals, testset, TestsetConfig(kind=kind, anomalous_fraction=cfg.anomalous_fraction,
                                                     seed=cfg.seed))
        predict_folder(testset / "toy", pred, PredictConfig(tasks=("pixel", "sample"), device=cfg.device),
                       weights=weights, kind=kind)
        _, table = evaluate_tasks(pred, testset, out / kind / "evaluation")
        cfg.outputs.update({f"{kind} weights": weights, f"{kind} test set": testset, f"{kind} predictions": pred,
                            f"{kind} evaluation": table})
        # matplotlib is the optional [report] extra, so the demo goes on without it
        try:
            rule = str(read_card(weights).extra.get("slice_score", "mean"))
            shown = build_report(ReportConfig(inputs=testset / "toy", predictions=pred, out=out / kind / "report",
                                              labels=testset / "toy_label", progress=False, slice_score=rule))
            cfg.outputs[f"{kind} report"] = shown.index
        except MoodError as exc:
            log.warning("report skipped: %s", exc)
    if not cfg.outputs:
        raise MoodError(f"no bundled {cfg.detector} weights under {root} for {', '.join(cfg.kinds)}: run with "
                        "--train, or train your own (see README)")
    return cfg.outputs


def _train_config(cfg: DemoConfig) -> TrainConfig:
    """The small brain model's training configuration."""
    return TrainConfig(detector=cfg.detector, kind="brain", size=cfg.train_size, width=cfg.width, epochs=cfg.epochs,
                       batch_size=16, seed=cfg.seed, device=cfg.device,
                       options={"skips": "1", "lr_schedule": "cosine"},
                       training_data=f"{cfg.n_train} generated brain pseudo-subjects (MNI152 template, "
                                     f"{cfg.train_size}^3)")


def _train_small(cfg: DemoConfig, out: Path) -> Path:
    """A small brain model trained on generated subjects (the from-scratch variant of the demo)."""
    train_dir = out / "brain" / "train"
    make_subjects("brain", train_dir, cfg.n_train, cfg.train_size, cfg.seed, start=0)
    weights = out / "brain" / "weights" / f"{cfg.detector}.safetensors"
    train_detector(train_dir, weights, _train_config(cfg))
    cfg.outputs.update({"brain training data": train_dir,
                        "brain loss log": weights.parent / f"{cfg.detector}_run" / "loss_log.csv"})
    return weights
