"""The benchmark runs end to end at a tiny size, for any registered detector, and its recorded command lines
are valid CLI calls with the settings that were used."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Sequence

import pytest
import torch
from torch import nn

from mood_detector.cli import main
from mood_detector.detector import REGISTRY, Detector, SliceScores, TrainConfig, load_detector
from mood_detector.pipelines.benchmark import BenchmarkConfig, parse_detector_options, run_benchmark
from mood_detector.weights import ModelCard


class IntensityDetector(Detector):
    """A stand-in for any registered detector (pixel score = scaled intensity); registered only in a test."""

    name = "intensity"

    def __init__(self, card: ModelCard) -> None:
        super().__init__(card)
        self.gain = nn.Linear(1, 1, bias=False)
        nn.init.constant_(self.gain.weight, 0.5)

    @classmethod
    def build(cls, card: ModelCard) -> "IntensityDetector":
        return cls(card)

    def modules(self) -> dict[str, nn.Module]:
        return {"gain": self.gain}

    def score_slices(self, x: torch.Tensor) -> SliceScores:
        return SliceScores(pixel=(x[:, 0] * self.gain.weight[0, 0]).clamp(0, 1))

    @classmethod
    def fit(cls, files: Sequence[Path], cfg: TrainConfig, run_dir: Path) -> "IntensityDetector":
        return cls(ModelCard(detector=cls.name, arch="none", width=cfg.width, kind=cfg.kind, slice_axis=2,
                             size=cfg.net_size, epochs=cfg.epochs, seed=cfg.seed))


def parse(line: str) -> tuple[str, dict]:
    """Parse a recorded command with the real CLI (types, choices and path checks included)."""
    args = shlex.split(line)
    assert args[0] == "mood-detector"
    cmd = main.commands[args[1]]
    return args[1], cmd.make_context(args[1], args[2:]).params


def test_benchmark_fpi_and_ae_end_to_end(tmp_path):
    cfg = BenchmarkConfig(out=tmp_path / "bench", detectors=("fpi", "ae"), n_train=2, n_test=2, size=32,
                          width=0.125, epochs=1, batch_size=8, max_batches_per_pair=1, device="cpu",
                          options=parse_detector_options(["ae:latent=4"]))
    res = run_benchmark(cfg, progress=False)
    assert [(r.detector, r.kind, r.task) for r in res.rows] == [
        ("fpi", "brain", "pixel"), ("fpi", "brain", "sample"), ("ae", "brain", "pixel"), ("ae", "brain", "sample")]
    for r in res.rows:
        assert 0.0 <= r.ap <= 1.0 and 0.0 <= r.auroc <= 1.0 and r.cases == "1 / 1"
        assert (r.dice is not None) == (r.task == "pixel")
    assert not res.failed_predictions
    md = res.markdown.read_text()
    assert res.table() in md and all(c in md for c in res.commands)
    saved = json.loads(res.json.read_text())
    assert saved["rows"][0]["ap"] == res.rows[0].ap and saved["commands"] == res.commands
    # every recorded command is a valid CLI call, and the settings it states are the ones used
    parsed = [parse(c) for c in res.commands]
    assert [name for name, _ in parsed] == ["make-data", "make-data", "make-testset"] + \
        ["train", "predict", "evaluate", "evaluate"] * 2
    for name, p in parsed:
        if name == "train":
            card = load_detector(p["output"]).card
            assert (card.detector, card.size, card.width, card.epochs, card.seed) == \
                (p["detector"], p["size"], p["width"], p["epochs"], p["seed"])
            if card.detector == "ae":
                assert p["opts"] == ("latent=4",) and card.extra["latent"] == 4
        if name == "evaluate":
            ev = json.loads(Path(p["out_json"]).read_text())
            row = next(r for r in res.rows if str(p["pred_dir"]).endswith(r.detector) and r.task == p["task"])
            assert ev["rows"]["overall"]["ap"] == row.ap


def test_benchmark_any_registered_detector_and_given_weights(tmp_path, monkeypatch):
    monkeypatch.setitem(REGISTRY, "intensity", f"{__name__}:IntensityDetector")
    trained = IntensityDetector.fit([], TrainConfig(detector="intensity", size=32), tmp_path)
    given = trained.save(tmp_path / "w.safetensors")
    cfg = BenchmarkConfig(out=tmp_path / "b", detectors=("intensity",), n_train=2, n_test=2, size=32, epochs=1,
                          device="cpu", weights={"intensity": given}, types=("uniform_addition",))
    res = run_benchmark(cfg, progress=False)
    assert [r.detector for r in res.rows] == ["intensity", "intensity"]
    assert not any(" train " in c for c in res.commands)  # given weights: nothing trained
    assert any(f"-w {given}" in c for c in res.commands)
    with pytest.raises(ValueError, match="unknown detector"):
        run_benchmark(BenchmarkConfig(out=tmp_path / "c", detectors=("nope",)))
    with pytest.raises(ValueError, match="DETECTOR:KEY=VALUE"):
        parse_detector_options(["latent=4"])


def test_benchmark_zscore_row_train_size_and_reused_data(tmp_path, monkeypatch):
    monkeypatch.setitem(REGISTRY, "intensity", f"{__name__}:IntensityDetector")
    given = IntensityDetector.fit([], TrainConfig(detector="intensity", size=16), tmp_path).save(tmp_path / "w.safetensors")
    cfg = BenchmarkConfig(out=tmp_path / "b", detectors=("intensity",), n_train=2, n_test=2, size=32, train_size=16,
                          device="cpu", weights={"intensity": given}, zscore=True, types=("uniform_addition",))
    first = run_benchmark(cfg, progress=False)
    assert [(r.detector, r.task) for r in first.rows] == [("intensity", "pixel"), ("intensity", "sample"),
                                                          ("zscore", "pixel"), ("zscore", "sample")]
    train = sorted((tmp_path / "b" / "data" / "brain" / "train").glob("*.nii.gz"))
    from mood_detector.io.nifti import read_volume

    assert len(train) == 2 and read_volume(train[0]).data.shape == (16, 16, 16)   # --train-size
    manifest = tmp_path / "b" / "testset" / "brain" / "manifest.json"
    stamp = manifest.stat().st_mtime_ns
    cfg.reuse_data = True
    again = run_benchmark(cfg, progress=False)
    assert manifest.stat().st_mtime_ns == stamp                  # the test set was reused, not remade
    assert again.commands == first.commands and [r.ap for r in again.rows] == [r.ap for r in first.rows]
    cfg.n_test = 3                                                # other data settings: made again
    third = run_benchmark(cfg, progress=False)
    assert third.rows[0].cases == "2 / 1" and manifest.stat().st_mtime_ns != stamp


def test_benchmark_bootstrap_intervals_in_table_json_and_commands(tmp_path, monkeypatch):
    monkeypatch.setitem(REGISTRY, "intensity", f"{__name__}:IntensityDetector")
    given = IntensityDetector.fit([], TrainConfig(detector="intensity", size=32), tmp_path).save(tmp_path / "w.safetensors")
    cfg = BenchmarkConfig(out=tmp_path / "b", detectors=("intensity",), n_train=2, n_test=4, size=32, device="cpu",
                          weights={"intensity": given}, types=("uniform_addition",), bootstrap=40, bootstrap_seed=3)
    res = run_benchmark(cfg, progress=False)
    pixel = res.rows[0]
    assert pixel.ap_lo is not None and pixel.ap_lo <= pixel.ap_hi and pixel.dice_lo is not None
    assert res.rows[1].dice_lo is None  # the sample task has no DICE
    assert all(line.count("[") >= 2 for line in res.table().splitlines()[2:])
    saved = json.loads(res.json.read_text())
    assert saved["rows"][0]["ap_lo"] == pixel.ap_lo and saved["config"]["bootstrap"] == 40
    evaluate_lines = [parse(c)[1] for c in res.commands if c.split()[1] == "evaluate"]
    assert all((p["replicates"], p["bootstrap_seed"]) == (40, 3) for p in evaluate_lines)
    off = run_benchmark(BenchmarkConfig(**{**cfg.__dict__, "out": tmp_path / "c", "bootstrap": 0}), progress=False)
    assert off.rows[0].ap_lo is None and "[" not in off.table()
    assert [r.ap for r in off.rows] == [r.ap for r in res.rows]
