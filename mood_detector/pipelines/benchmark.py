"""``mood-detector benchmark``: data -> training -> test set -> prediction -> evaluation, one table.

For each kind: make ``n_train`` normal training subjects and ``n_test`` held-out normal subjects, build a
synthetic-outlier test set from the held-out ones, then for each detector train it (or use the given
weights), predict both tasks on the test set and evaluate them. Every step calls the same library function
as the corresponding CLI command and records that command line (``mood-detector ...``), so the table comes
with the exact commands that reproduce it. Detectors are looked up in :data:`~mood_detector.detector.REGISTRY`
and driven only through the common interface; detector-specific settings are passed as options.
"""

from __future__ import annotations

import json
import logging
import shlex
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from mood_detector.detector import REGISTRY, TrainConfig, check_device, check_train_config, detector_class
from mood_detector.errors import OptionError, WeightsError
from mood_detector.evaluation.bootstrap import BootstrapConfig, Interval, RowIntervals
from mood_detector.evaluation.evaluate import OVERALL, TASKS, EvalResult, evaluate, fmt_ci
from mood_detector.evaluation.outliers import OUTLIER_TYPES
from mood_detector.evaluation.testset import TestsetConfig, make_testset
from mood_detector.inference.api import find_weights, predict_folder
from mood_detector.inference.predictor import PredictConfig
from mood_detector.io.folders import check_output_dir
from mood_detector.io.nifti import write_text_atomic
from mood_detector.pipelines.subjects import make_subjects
from mood_detector.training.api import train_detector
from mood_detector.weights import ModelCard, card_path

log = logging.getLogger(__name__)

PROG = "mood-detector"
#: sub-folders of the output folder that the benchmark owns (replaced on every run)
OWNED = ("data", "testset", "weights", "pred", "eval")


@dataclass
class BenchmarkConfig:
    """What to run.

    Attributes:
        out: output folder (its sub-folders ``data``, ``testset``, ``weights``, ``pred``, ``eval`` are replaced).
        detectors: registry names, in table order.
        kinds: dataset kinds (``brain`` needs the nilearn template; ``abdom`` is the procedural phantom).
        n_train, n_test: normal training subjects and held-out subjects (the test set's cases) per kind.
        size: edge length of the generated test cubes (and of the training ones unless ``train_size``).
        train_size: edge length of the generated training cubes and the training resolution (None = size).
        templates: brain training subjects' source images (``make-data --templates``); test subjects always
            use the default template, with subject indices after the training ones.
        zscore: add the no-learning voxel-wise z-score row (:mod:`mood_detector.evaluation.zscore`).
        reuse_data: keep ``data/`` and ``testset/`` from an earlier run made with the same data settings
            (recorded in ``data/settings.json``) instead of generating them again; anything else is redone.
        width, epochs, batch_size, max_batches_per_pair, lr: training settings shared by the detectors that use
            them (lr None: each detector's default).
        anomalous_fraction, types: test set composition.
        seed: one seed for data, test set and training.
        bootstrap, bootstrap_seed: replicates and seed of the bootstrap intervals over test cases (0 = none).
        device: ``auto``, ``cpu``, ``cuda``...
        weights: detector -> weights (a ``.safetensors`` file, or a folder with ``<kind>/<detector>.safetensors``);
            detectors listed here are not trained.
        options: detector -> {key: value} detector-specific training options (``--opt`` of ``train``).
    """

    out: Path = Path("benchmark")
    detectors: tuple[str, ...] = ("fpi", "ae")
    kinds: tuple[str, ...] = ("brain",)
    n_train: int = 8
    n_test: int = 8
    size: int = 64
    train_size: int | None = None
    templates: str = "default"
    zscore: bool = False
    reuse_data: bool = False
    width: float = 0.25
    epochs: int = 5
    batch_size: int = 16
    max_batches_per_pair: int = 0
    lr: float | None = None
    anomalous_fraction: float = 0.5
    types: tuple[str, ...] = OUTLIER_TYPES
    seed: int = 0
    bootstrap: int = 1000
    bootstrap_seed: int = 0
    device: str = "auto"
    weights: dict[str, Path] = field(default_factory=dict)
    options: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass
class BenchmarkRow:
    """One table row: the overall metrics of one detector on one kind and task."""

    detector: str
    kind: str
    task: str
    ap: float
    auroc: float
    dice: float | None
    cases: str
    ap_lo: float | None = None
    ap_hi: float | None = None
    auroc_lo: float | None = None
    auroc_hi: float | None = None
    dice_lo: float | None = None
    dice_hi: float | None = None

    def interval(self, metric: str) -> Interval | None:
        """The bootstrap interval of ``metric`` (``ap``, ``auroc``, ``dice``), if computed."""
        lo, hi = getattr(self, f"{metric}_lo"), getattr(self, f"{metric}_hi")
        if lo is None and hi is None:
            return None
        return Interval(float("nan") if lo is None else lo, float("nan") if hi is None else hi)


def benchmark_row(det: str, kind: str, task: str, res: EvalResult) -> BenchmarkRow:
    """The ``overall`` row of one evaluation, with its bootstrap intervals when there are any."""
    m = res.rows[OVERALL]
    a, n = res.n_cases[OVERALL]
    iv: RowIntervals | None = res.intervals.get(OVERALL)
    bounds = {k: v for k, v in iv.fields().items() if k.endswith(("_lo", "_hi"))} if iv else {}
    return BenchmarkRow(det, kind, task, m.ap, m.auroc, m.dice, f"{a} / {n}", **bounds)


@dataclass
class BenchmarkResult:
    """The table, the commands that produced it, and where everything is."""

    rows: list[BenchmarkRow]
    commands: list[str]
    evaluations: dict[str, dict[str, Any]]
    failed_predictions: list[str]
    markdown: Path
    json: Path

    def table(self) -> str:
        """The rows as a markdown table."""
        lines = ["| detector | kind | task | AP | AUROC | DICE | anomalous / normal cases |",
                 "|---|---|---|---|---|---|---|"]
        for r in self.rows:
            dice = fmt_ci(r.dice, r.interval("dice")) if r.task == "pixel" else "-"
            lines.append(f"| {r.detector} | {r.kind} | {r.task} | {fmt_ci(r.ap, r.interval('ap'))} | "
                         f"{fmt_ci(r.auroc, r.interval('auroc'))} | {dice} | {r.cases} |")
        return "\n".join(lines)


class CommandLog:
    """Records the CLI equivalent of every step (and logs it)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, *args: Any) -> None:
        line = shlex.join([PROG, *(str(a) for a in args)])
        self.lines.append(line)
        log.info("step: %s", line)


def _flags(kw: dict[str, Any]) -> list[str]:
    """``{"batch_size": 16}`` -> ``["--batch-size", "16"]`` (values as the CLI parses them)."""
    out: list[str] = []
    for k, v in kw.items():
        out += [f"--{k.replace('_', '-')}", str(v)]
    return out


def make_data(kind: str, n: int, out: Path, size: int, seed: int, start: int, cmd: CommandLog,
              templates: str = "default", run: bool = True) -> list[Path]:
    """``mood-detector make-data``: brain pseudo-subjects or abdominal phantoms (only recorded unless ``run``)."""
    extra = ["--templates", templates] if kind == "brain" and templates != "default" else []
    cmd("make-data", kind, "--n", n, "--out", out, "--size", size, "--seed", seed, "--start", start, *extra)
    if not run:
        return []
    return make_subjects(kind, out, n, size, seed, start, templates)


def _prepare_data(cfg: BenchmarkConfig, kind: str, out: Path, cmd: CommandLog, reuse: bool, progress: bool) -> None:
    """Training subjects (when a detector is trained or the z-score row needs them), held-out subjects and the
    test set of ``kind``; with ``reuse`` (and the folders there) the commands are only recorded."""
    train_dir, held_dir = out / "data" / kind / "train", out / "data" / kind / "heldout"
    testdir = out / "testset" / kind
    need_train = cfg.zscore or any(d not in cfg.weights for d in cfg.detectors)
    run = not (reuse and (testdir / "manifest.json").is_file() and (train_dir.is_dir() or not need_train))
    if not run:
        log.info("reusing the data in %s and the test set %s", train_dir.parent, testdir)
    if need_train:
        make_data(kind, cfg.n_train, train_dir, cfg.train_size or cfg.size, cfg.seed, 0, cmd, cfg.templates, run)
    make_data(kind, cfg.n_test, held_dir, cfg.size, cfg.seed, cfg.n_train, cmd, run=run)
    cmd("make-testset", "--kind", kind, "-i", held_dir, "-o", testdir, "--anomalous-fraction",
        cfg.anomalous_fraction, "--types", ",".join(cfg.types), "--seed", cfg.seed)
    if run:
        make_testset(held_dir, testdir, TestsetConfig(kind=kind, anomalous_fraction=cfg.anomalous_fraction,
                                                      types=tuple(cfg.types), seed=cfg.seed), progress=progress)


def check_config(cfg: BenchmarkConfig) -> None:
    """Raise ValueError for unknown detectors, kinds or outlier types, or weights/options of detectors that are
    not benchmarked."""
    unknown = [d for d in cfg.detectors if d not in REGISTRY]
    if unknown or not cfg.detectors:
        raise ValueError(f"unknown detector(s) {unknown}; registered: {', '.join(sorted(REGISTRY))}")
    extra = set(cfg.weights) - set(cfg.detectors) | set(cfg.options) - set(cfg.detectors)
    if extra:
        raise ValueError(f"weights/options given for detector(s) not benchmarked: {sorted(extra)}")
    bad = [k for k in cfg.kinds if k not in ("brain", "abdom")] + [t for t in cfg.types if t not in OUTLIER_TYPES]
    if bad or not cfg.kinds or not cfg.types:
        raise ValueError(f"unknown kind(s) or outlier type(s): {bad}")
    # every training run and every given weights file, before any data is made (OptionError naming the option)
    check_device(cfg.device)
    for det in cfg.detectors:
        for kind in cfg.kinds:
            if det in cfg.weights:
                _check_weights(cfg.weights[det], det, kind)
                continue
            try:
                check_train_config(_train_config(cfg, det, kind))
            except OptionError as exc:
                if exc.option == "--size" and cfg.train_size:
                    raise OptionError("--train-size", exc.reason) from None
                raise


def _check_weights(weights: Path, det: str, kind: str) -> None:
    """``--weights DET=PATH`` must give ``det`` weights for ``kind`` (a file serves the one kind it was
    trained for)."""
    try:
        path = find_weights(weights, kind, det)["*"]
        card = ModelCard.from_dict(json.loads(card_path(path).read_text(encoding="utf-8")))
    except (WeightsError, OSError, ValueError, TypeError) as exc:
        raise OptionError("--weights", f"{det}={weights}: {exc}") from None
    if card.detector != det or card.kind != kind:
        raise OptionError("--weights", f"{det}={weights} holds {card.detector} weights for {card.kind}, not {det} "
                                       f"for {kind}; give a folder with <kind>/{det}.safetensors for several kinds")


def run_benchmark(cfg: BenchmarkConfig, progress: bool = True) -> BenchmarkResult:
    """Run the whole benchmark (see the module docstring); writes ``benchmark.md`` and ``benchmark.json``."""
    check_config(cfg)
    out = check_output_dir(cfg.out, "--out")
    stamp = out / "data" / "settings.json"
    settings = json.dumps(_data_settings(cfg), sort_keys=True)
    reuse = cfg.reuse_data and stamp.is_file() and stamp.read_text() == settings
    if cfg.reuse_data and not reuse:
        log.info("no earlier data made with these settings in %s: generating it", out)
    for sub in OWNED:
        if not (reuse and sub in ("data", "testset")):
            shutil.rmtree(out / sub, ignore_errors=True)
    cmd = CommandLog()
    rows: list[BenchmarkRow] = []
    evaluations: dict[str, dict[str, Any]] = {}
    failed: list[str] = []
    for kind in cfg.kinds:
        _prepare_data(cfg, kind, out, cmd, reuse, progress)
    write_text_atomic(stamp, settings)
    for kind in cfg.kinds:
        train_dir = out / "data" / kind / "train"
        train_size = cfg.train_size or cfg.size
        testdir = out / "testset" / kind
        names = list(cfg.detectors) + (["zscore"] if cfg.zscore else [])
        for det in names:
            pred = out / "pred" / kind / det
            if det == "zscore":  # no learning: library call only (no CLI command of its own)
                from mood_detector.evaluation.zscore import predict_zscore
                from mood_detector.io.nifti import list_volumes

                log.info("z-score baseline against %s (part of `benchmark --zscore`; no command of its own)", train_dir)
                predict_zscore(list_volumes(train_dir), testdir / "toy", pred, train_size, kind)
            else:
                weights = _weights_for(cfg, det, kind, train_dir, cmd)
                cmd("predict", "both", "-i", testdir / "toy", "-o", pred, "-w", weights, "--kind", kind,
                    "--detector", det, "--device", cfg.device)
                report = predict_folder(testdir / "toy", pred, PredictConfig(tasks=("pixel", "sample"),
                                                                              device=cfg.device, progress=progress),
                                        weights=weights, kind=kind, detector=det)
                failed += [f"{det}/{kind}: {p}: {reason}" for p, reason in report.failed]
            for task in TASKS:
                js = out / "eval" / kind / det / f"{task}.json"
                cmd("evaluate", "--pred", pred, "--labels", testdir / "toy_label", "--task", task, "--json", js,
                    "--bootstrap", cfg.bootstrap, "--bootstrap-seed", cfg.bootstrap_seed)
                res: EvalResult = evaluate(pred, testdir / "toy_label", task, out_json=js, progress=progress,
                                           bootstrap=_bootstrap(cfg))
                rows.append(benchmark_row(det, kind, task, res))
                evaluations[f"{det}/{kind}/{task}"] = {"table": res.table(), **res.to_dict()}
    md, js = out / "benchmark.md", out / "benchmark.json"
    result = BenchmarkResult(rows, cmd.lines, evaluations, failed, md, js)
    write_text_atomic(md, _markdown(result, cfg))
    write_text_atomic(js, json.dumps({"config": _config_dict(cfg), "rows": [asdict(r) for r in rows],
                                      "commands": cmd.lines, "failed_predictions": failed,
                                      "evaluations": evaluations}, indent=2) + "\n")
    return result


def _bootstrap(cfg: BenchmarkConfig) -> BootstrapConfig | None:
    """The evaluation's bootstrap settings (None when switched off)."""
    return BootstrapConfig(replicates=cfg.bootstrap, seed=cfg.bootstrap_seed) if cfg.bootstrap else None


def _weights_for(cfg: BenchmarkConfig, det: str, kind: str, train_dir: Path, cmd: CommandLog) -> Path:
    """The given weights of ``det`` for ``kind``, or freshly trained ones."""
    if det in cfg.weights:
        return find_weights(cfg.weights[det], kind, det)["*"]
    path = cfg.out / "weights" / kind / f"{det}.safetensors"
    tcfg = _train_config(cfg, det, kind)
    used = detector_class(det).train_fields  # the flags this detector reads (others are a usage error)
    kw = {k: getattr(tcfg, k) for k in TRAIN_FLAGS if k in used and getattr(tcfg, k) is not None}
    opt_flags = [a for k, v in tcfg.options.items() for a in ("--opt", f"{k}={v}")]
    cmd("train", "-i", train_dir, "-o", path, *_flags(kw), *opt_flags, "--training-data", tcfg.training_data)
    return train_detector(train_dir, path, tcfg)


#: the train options the benchmark sets (in this order on its command lines)
TRAIN_FLAGS = ("detector", "kind", "size", "width", "epochs", "batch_size", "lr", "max_batches_per_pair", "seed",
               "device")


def _train_config(cfg: BenchmarkConfig, det: str, kind: str) -> TrainConfig:
    """The training configuration of ``det`` on ``kind``."""
    size = cfg.train_size or cfg.size
    data = f"{cfg.n_train} generated {kind} subjects ({size}^3, seed {cfg.seed}) for the benchmark"
    return TrainConfig(detector=det, kind=kind, size=size, width=cfg.width, epochs=cfg.epochs,
                       batch_size=cfg.batch_size, lr=cfg.lr, max_batches_per_pair=cfg.max_batches_per_pair,
                       seed=cfg.seed, device=cfg.device, options=dict(cfg.options.get(det, {})), training_data=data)


def _data_settings(cfg: BenchmarkConfig) -> dict[str, Any]:
    """What the generated data and test sets depend on (a reused folder must match all of it)."""
    return {"kinds": list(cfg.kinds), "n_train": cfg.n_train, "n_test": cfg.n_test, "size": cfg.size,
            "train_size": cfg.train_size or cfg.size, "templates": cfg.templates, "seed": cfg.seed,
            "anomalous_fraction": cfg.anomalous_fraction, "types": list(cfg.types)}


def _config_dict(cfg: BenchmarkConfig) -> dict[str, Any]:
    d = asdict(cfg)
    d["out"] = str(cfg.out)
    d["weights"] = {k: str(v) for k, v in cfg.weights.items()}
    return d


def _markdown(res: BenchmarkResult, cfg: BenchmarkConfig) -> str:
    parts = ["# Benchmark (generated data; not MOOD results)", "",
             f"{cfg.n_train} training and {cfg.n_test} held-out generated subjects per kind at {cfg.size}^3; "
             f"test set: {cfg.anomalous_fraction:g} anomalous, outlier types {', '.join(cfg.types)}; seed {cfg.seed}.",
             *([f"[lo, hi]: bootstrap 95% interval over test cases ({cfg.bootstrap} replicates, seed "
                f"{cfg.bootstrap_seed})."] if cfg.bootstrap else []),
             "", res.table(), "", "Commands (CLI equivalents of the steps run):", "", "```bash", *res.commands,
             "```", ""]
    for key, ev in res.evaluations.items():
        parts += [f"## {key}", "", ev["table"], ""]
    if res.failed_predictions:
        parts += ["Failed predictions (counted as zeros):", "", *[f"* {f}" for f in res.failed_predictions], ""]
    return "\n".join(parts)


def parse_detector_options(pairs: tuple[str, ...] | list[str],
                           check: Callable[[str], bool] = lambda d: d in REGISTRY) -> dict[str, dict[str, str]]:
    """``["ae:latent=8", "fpi:x=1"]`` -> ``{"ae": {"latent": "8"}, "fpi": {"x": "1"}}``."""
    out: dict[str, dict[str, str]] = {}
    for p in pairs:
        det, sep, kv = p.partition(":")
        if not sep or "=" not in kv or not check(det):
            raise ValueError(f"option {p!r} is not of the form DETECTOR:KEY=VALUE with a registered detector")
        k, v = kv.split("=", 1)
        out.setdefault(det, {})[k.strip()] = v.strip()
    return out


def parse_weights(pairs: tuple[str, ...] | list[str]) -> dict[str, Path]:
    """``["fpi=weights/brain/fpi.safetensors"]`` -> ``{"fpi": Path(...)}``."""
    out: dict[str, Path] = {}
    for p in pairs:
        det, sep, path = p.partition("=")
        if not sep or not det or not path:
            raise ValueError(f"weights {p!r} is not of the form DETECTOR=PATH")
        if not Path(path).exists():
            raise ValueError(f"weights for {det}: {path} does not exist")
        out[det.strip()] = Path(path)
    return out
