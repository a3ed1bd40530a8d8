"""The predictor: reads volumes, scores them slice by slice with a detector, writes the results.

Reading, network and writing overlap: a small pool of reader threads fills a bounded queue ahead of the
network, and a small pool of writer threads drains results behind it, so at most ``prefetch`` decoded
inputs and ``writers`` pending outputs are held in memory at once. Every failure concerning one input is
recorded and reported; the other inputs are still processed (unless ``strict``).
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch
from tqdm import tqdm

from mood_detector.detector import Detector, VolumeScores, resolve_device
from mood_detector.errors import InputError, MoodError, StrictFailure
from mood_detector.inference.aggregate import sample_score
from mood_detector.io.nifti import ReadLimits, Volume, list_volumes, read_volume, write_text_atomic, write_volume
from mood_detector.kinds import kind_for_shape
from mood_detector.preprocess import from_slices, normalise_intensity, resample, to_slices

log = logging.getLogger(__name__)

TASKS = ("pixel", "sample")


@dataclass
class PredictConfig:
    """Inference options.

    Attributes:
        tasks: which outputs to write: ``pixel`` (score volume) and/or ``sample`` (``<name>.txt``).
        device: ``auto`` (CUDA if visible), ``cpu``, ``cuda``, ``cuda:N``.
        batch_size: slices per network call; halved automatically on CUDA out-of-memory.
        amp: bf16 autocast on CUDA.
        skip_existing: leave inputs whose outputs all exist untouched (resume an interrupted run).
        strict: stop at the first failing input.
        limits: header checks applied before reading.
        prefetch: decoded inputs held ahead of the network.
        writers: writer threads (and pending results held).
        compresslevel: gzip level of ``.nii.gz`` outputs.
    """

    tasks: tuple[str, ...] = ("pixel",)
    device: str = "auto"
    batch_size: int = 32
    amp: bool = True
    skip_existing: bool = False
    strict: bool = False
    limits: ReadLimits = field(default_factory=ReadLimits)
    prefetch: int = 2
    writers: int = 2
    compresslevel: int = 1
    progress: bool = True


@dataclass
class PredictReport:
    """What happened to each input."""

    scored: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    samples: dict[str, float] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        """0 when every input was scored (or skipped as done), 1 when some failed."""
        return 1 if self.failed else 0


def output_paths(input_path: Path, out_dir: Path, tasks: Sequence[str]) -> dict[str, Path]:
    """Output files for one input: ``<out>/<name>`` (pixel) and ``<out>/<name>.txt`` (sample)."""
    out: dict[str, Path] = {}
    if "pixel" in tasks:
        out["pixel"] = out_dir / input_path.name
    if "sample" in tasks:
        out["sample"] = out_dir / f"{input_path.name}.txt"
    return out


class Predictor:
    """Scores volumes with one detector, or with one detector per kind chosen by volume shape."""

    def __init__(self, detectors: Detector | Mapping[str, Detector], cfg: PredictConfig | None = None) -> None:
        self.cfg = cfg or PredictConfig()
        bad = [t for t in self.cfg.tasks if t not in TASKS]
        if bad or not self.cfg.tasks:
            raise ValueError(f"tasks must be a non-empty subset of {TASKS}, got {self.cfg.tasks}")
        self.device = resolve_device(self.cfg.device)
        if self.device.type == "cpu" and self.cfg.device == "auto":
            log.info("no GPU visible: running on CPU (slow)")
        self.detectors = {"*": detectors} if isinstance(detectors, Detector) else dict(detectors)
        for det in self.detectors.values():
            det.to(self.device).eval()
        self.batch_size = self.cfg.batch_size

    # --- one volume --------------------------------------------------------------------------------
    def detector_for(self, shape: Sequence[int]) -> Detector:
        """The detector for a volume of ``shape``: the only one, or the one of the kind the shape implies."""
        if "*" in self.detectors:
            return self.detectors["*"]
        kind = kind_for_shape(shape).name
        if kind not in self.detectors:
            raise MoodError(f"no weights for kind {kind!r} (volume shape {tuple(shape)})")
        return self.detectors[kind]

    def _autocast(self):
        enabled = self.cfg.amp and self.device.type == "cuda"
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def score_slices(self, det: Detector, slices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel scores (S, H, W) and slice scores (S,) for slices (S, H, W) at the network size."""
        n = slices.shape[0]
        pixel = np.empty(slices.shape, dtype=np.float32)
        per_slice = np.empty(n, dtype=np.float64)
        i = 0
        while i < n:
            bs = self.batch_size
            x = torch.from_numpy(np.ascontiguousarray(slices[i:i + bs], dtype=np.float32))[:, None]
            try:
                with torch.inference_mode(), self._autocast():
                    res = det.score_slices(x.to(self.device, non_blocking=True))
            except torch.cuda.OutOfMemoryError:
                if bs == 1:
                    raise
                self.batch_size = max(1, bs // 2)
                torch.cuda.empty_cache()
                log.warning("CUDA out of memory: batch size halved to %d", self.batch_size)
                continue
            p = res.pixel.float().clamp(0, 1)
            pixel[i:i + bs] = p.cpu().numpy()
            s = res.slice if res.slice is not None else p.mean(dim=(1, 2))
            per_slice[i:i + bs] = s.float().clamp(0, 1).cpu().numpy()
            i += bs
        return pixel, per_slice

    def score_volume(self, data: np.ndarray, need_pixel: bool = True) -> VolumeScores:
        """Score one volume (any 3D shape, any intensity range). The pixel map has ``data``'s shape."""
        det = self.detector_for(data.shape)
        norm = normalise_intensity(data)
        net = resample(norm, (det.size,) * 3)
        pixel, per_slice = self.score_slices(det, to_slices(net, det.slice_axis))
        score = sample_score(per_slice)
        if need_pixel:
            vol = resample(np.ascontiguousarray(from_slices(pixel, det.slice_axis)), tuple(data.shape))
            np.clip(vol, 0.0, 1.0, out=vol)
        else:
            vol = np.zeros(0, dtype=np.float32)
        return VolumeScores(pixel=vol, sample=score, slice_scores=per_slice)

    # --- folders -----------------------------------------------------------------------------------
    def _write(self, vol: Volume, scores: VolumeScores, outs: dict[str, Path]) -> None:
        if "pixel" in outs:
            write_volume(outs["pixel"], scores.pixel, vol.affine, vol.header, compresslevel=self.cfg.compresslevel)
        if "sample" in outs:
            write_text_atomic(outs["sample"], f"{scores.sample:.8f}\n")

    def predict_files(self, files: Iterable[Path], out_dir: str | Path) -> PredictReport:
        """Score ``files`` into ``out_dir`` (created if missing); returns a report, never raises for one
        bad input unless ``strict``."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        report = PredictReport()
        todo: list[Path] = []
        for f in files:
            outs = output_paths(Path(f), out_dir, self.cfg.tasks)
            if self.cfg.skip_existing and all(p.exists() for p in outs.values()):
                report.skipped.append(Path(f))
            else:
                todo.append(Path(f))
        if report.skipped:
            log.info("skipping %d inputs whose outputs exist", len(report.skipped))

        def fail(path: Path, reason: str) -> None:
            report.failed.append((path, reason))
            log.error("%s: %s", path, reason)
            if self.cfg.strict:
                raise StrictFailure(f"{path}: {reason}")

        with ThreadPoolExecutor(max(1, self.cfg.prefetch), thread_name_prefix="read") as readers, \
                ThreadPoolExecutor(max(1, self.cfg.writers), thread_name_prefix="write") as writers:
            reads: list[Future] = [readers.submit(read_volume, p, self.cfg.limits)
                                   for p in todo[: max(1, self.cfg.prefetch)]]
            pending: list[tuple[Path, Future]] = []
            bar = tqdm(total=len(todo), desc="predict", unit="vol", disable=not self.cfg.progress)
            for idx, path in enumerate(todo):
                nxt = idx + len(reads)
                if nxt < len(todo):
                    reads.append(readers.submit(read_volume, todo[nxt], self.cfg.limits))
                fut = reads.pop(0)
                try:
                    vol = fut.result()
                    scores = self.score_volume(vol.data, need_pixel="pixel" in self.cfg.tasks)
                except InputError as exc:
                    fail(path, exc.reason)
                    bar.update(1)
                    continue
                except MoodError as exc:
                    fail(path, str(exc))
                    bar.update(1)
                    continue
                except Exception as exc:  # noqa: BLE001 - one bad volume must not stop the others
                    log.debug("scoring %s failed", path, exc_info=True)
                    fail(path, f"could not be scored ({type(exc).__name__}: {exc})")
                    bar.update(1)
                    continue
                report.samples[path.name] = scores.sample
                while len(pending) >= max(1, self.cfg.writers):
                    self._finish(pending.pop(0), report, fail)
                pending.append((path, writers.submit(self._write, vol, scores,
                                                      output_paths(path, out_dir, self.cfg.tasks))))
                del vol, scores
                bar.update(1)
            for item in pending:
                self._finish(item, report, fail)
            bar.close()
        return report

    @staticmethod
    def _finish(item: tuple[Path, Future], report: PredictReport, fail) -> None:
        path, fut = item
        try:
            fut.result()
            report.scored.append(path)
        except OSError as exc:
            fail(path, f"could not write output ({exc})")

    def predict_folder(self, in_dir: str | Path, out_dir: str | Path) -> PredictReport:
        """Score every ``*.nii``/``*.nii.gz`` directly in ``in_dir``."""
        in_dir = Path(in_dir)
        if not in_dir.is_dir():
            raise MoodError(f"{in_dir}: input folder does not exist")
        files = list_volumes(in_dir)
        if not files:
            log.warning("%s: no .nii or .nii.gz files found", in_dir)
        return self.predict_files(files, out_dir)
