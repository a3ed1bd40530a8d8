"""The predictor: reads volumes, scores them with a detector through the sliding window, writes the results.

The predictor holds the policy (which detector, which axes and mirrors, the foreground, the volume score); the
tiling, batching, empty-patch skipping, cropping and accumulation are the one sliding window of
:mod:`mood_detector.inference.sliding`, where a slice detector's slice is a patch of depth 1.

Reading, network and writing overlap: a small pool of reader threads fills a bounded queue ahead of the
network, and a small pool of writer threads drains results behind it, so at most ``prefetch`` decoded
inputs and ``writers`` pending outputs are held in memory at once. Every failure concerning one input is
recorded and reported; the other inputs are still processed (unless ``strict``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from tqdm import tqdm

from mood_detector.detector import Detector, VolumeScores, resolve_device
from mood_detector.errors import InputError, MoodError, StrictFailure
from mood_detector.inference.adapt import ADAPT_CHOICES, Adaptation
from mood_detector.inference.accel import CompiledScorer, auto_batch_size, compile_cache_problem, set_cpu_threads
from mood_detector.inference.aggregate import sample_score, slice_scores
from mood_detector.inference.sliding import Window, WindowScores, detector_scorer, score_window
from mood_detector.inference.timing import StageTimer
from mood_detector.io.folders import clean_stale_temps, log_ignored, prepare_output_dir, scan_inputs
from mood_detector.io.nifti import ReadLimits, Volume, read_volume, write_text_atomic, write_volume
from mood_detector.kinds import guess_kind
from mood_detector.preprocess import prepare, resample, resize_mask, scheme_of, to_slices

log = logging.getLogger(__name__)

TASKS = ("pixel", "sample")


@dataclass
class PredictConfig:
    """Inference options.

    Attributes:
        tasks: which outputs to write: ``pixel`` (score volume) and/or ``sample`` (``<name>.txt``).
        device: ``auto`` (CUDA if visible), ``cpu``, ``cuda``, ``cuda:N``.
        batch_size: slices per network call (0 = automatic: 8 on the CPU, from free memory on CUDA); halved
            automatically on CUDA out-of-memory.
        amp: bf16 autocast on CUDA.
        skip_existing: leave inputs whose outputs all exist untouched (resume an interrupted run).
        strict: stop at the first failing input.
        limits: header checks applied before reading; NaN/Inf voxels are replaced by 0 with a warning by
            default (the harness scores a missing output as zero, so a scorable volume is scored).
        prefetch: decoded inputs held ahead of the network.
        writers: writer threads (and pending results held).
        compresslevel: gzip level of ``.nii.gz`` outputs.
        skip_empty: do not run slices that are empty in the input (score 0), for detectors that allow it
            (``Detector.skip_empty_slices``); ``None`` = on.
        crop: run each slice batch on its stride-aligned foreground box only (score 0 outside), for
            detectors that allow it (``Detector.supports_crop``); ``None`` = on the CPU only (on a GPU the
            network is cheap next to I/O, and fixed shapes suit cuDNN autotuning and ``torch.compile``).
        crop_margin: pixels of background kept around the foreground box (at the network's slice size).
        threads: CPU threads of torch on the CPU (0 = all available cores).
        compile: ``torch.compile`` the detectors' scoring; ignored with a warning when the compiler caches
            cannot be written (e.g. a read-only root) or compiling fails.
        axes: ``model`` (slice along the model card's slice axis only) or ``all`` (score along all three axes
            and average the three pixel maps; the sample score is the mean of the three axes' sample scores;
            three times the network time and one more volume of memory at the network size); ``None`` = the
            card's ``score_axes`` (set by ``export --axes``), else its ``train_axes`` (what the model was
            trained on), else ``model``.
        mirror: test-time mirroring, as nnU-Net's predictor does: ``none``, or a comma list of volume axes
            (e.g. ``0``, the left-right axis of the generated brains); the volume is also scored mirrored along
            each listed axis, and the maps (mirrored back) and sample scores are averaged with the plain ones.
            Each mirror axis repeats the network passes (one per slicing axis of ``axes``). ``None`` = the card's
            ``tta_mirror``, else ``none``.
        adapt: test-time adaptation before scoring, on slices of up to ``adapt_volumes`` of the inputs
            (evenly spread; :mod:`mood_detector.inference.adapt`): ``none``, ``bn`` (recompute the BatchNorm
            statistics), ``finetune`` (a short fine-tune of the detector's own synthetic task; fpi and nsa) or
            ``auto`` (``finetune`` where its estimated time, adaptation reads included, is at most
            ``adapt_budget`` of the estimated time to score the inputs on this machine, else ``none``; folders
            of fewer than ``1 / adapt_budget`` inputs are never adapted). ``None`` = the card's ``adapt`` (set
            by ``export --adapt``), else ``none``.
        adapt_volumes: how many inputs ``adapt`` reads (a fixed share of the scoring time however large the
            folder).
        adapt_steps: optimiser steps of ``adapt="finetune"``.
        adapt_budget: the largest share of the estimated scoring time ``adapt="auto"`` spends on adapting.
    """

    tasks: tuple[str, ...] = ("pixel",)
    device: str = "auto"
    batch_size: int = 0
    amp: bool = True
    skip_existing: bool = False
    strict: bool = False
    limits: ReadLimits = field(default_factory=lambda: ReadLimits(nonfinite="zero"))
    prefetch: int = 2
    writers: int = 2
    compresslevel: int = 1
    progress: bool = True
    skip_empty: bool | None = None
    crop: bool | None = None
    crop_margin: int = 32
    threads: int = 0
    compile: bool = False
    axes: str | None = None
    mirror: str | None = None
    adapt: str | None = None
    adapt_volumes: int = 4
    adapt_steps: int = 600
    adapt_budget: float = 0.2

    def __post_init__(self) -> None:
        if self.adapt not in (None, *ADAPT_CHOICES):
            raise ValueError(f"adapt must be one of {', '.join(ADAPT_CHOICES)}, got {self.adapt!r}")
        if self.axes not in (None, *AXES_CHOICES):
            raise ValueError(f"axes must be one of {', '.join(AXES_CHOICES)}, got {self.axes!r}")
        if self.mirror is not None:
            parse_mirror(self.mirror)
        if not 0 < self.adapt_budget <= 1:
            raise ValueError(f"adapt_budget must be in (0, 1], got {self.adapt_budget}")


def parse_mirror(spec: str) -> tuple[int, ...]:
    """``"none"`` -> (); ``"0"`` or ``"0,2"`` -> the distinct volume axes to mirror along (each 0, 1 or 2)."""
    if spec.strip() == "none":
        return ()
    try:
        axes = tuple(dict.fromkeys(int(a) for a in spec.split(",")))
    except ValueError:
        axes = (-1,)
    if not axes or any(a not in (0, 1, 2) for a in axes):
        raise ValueError(f"mirror must be 'none' or a comma list of the axes 0, 1, 2; got {spec!r}")
    return axes


#: values of :attr:`PredictConfig.axes` (and of a model card's ``train_axes``)
AXES_CHOICES = ("model", "all")


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
    """Scores volumes with one detector, or with one detector per kind chosen per volume (:func:`guess_kind`)."""

    def __init__(self, detectors: Detector | Mapping[str, Detector], cfg: PredictConfig | None = None) -> None:
        self.cfg = cfg or PredictConfig()
        bad = [t for t in self.cfg.tasks if t not in TASKS]
        if bad or not self.cfg.tasks:
            raise ValueError(f"tasks must be a non-empty subset of {TASKS}, got {self.cfg.tasks}")
        self.device = resolve_device(self.cfg.device)
        if self.device.type == "cpu" and self.cfg.device == "auto":
            log.warning("no GPU visible: running on CPU (slow)")
        self.detectors = {"*": detectors} if isinstance(detectors, Detector) else dict(detectors)
        if self.device.type == "cpu":
            set_cpu_threads(self.cfg.threads)
        elif self.device.type == "cuda" and not self._crop_enabled():
            torch.backends.cudnn.benchmark = True  # fixed slice shapes: let cuDNN pick the fastest kernels
        for det in self.detectors.values():
            det.to(self.device).eval()
            if det.supports_crop:  # fully convolutional nets: channels_last is faster on CPU and GPU alike
                for module in det.modules().values():
                    module.to(memory_format=torch.channels_last)
        #: seconds per stage (read, preprocess, network, postprocess, write), summed over threads
        self.timings = StageTimer()
        self.batch_sizes: dict[int, int] = {}  # per detector (id): configured, automatic, or halved on OOM
        problem = compile_cache_problem(self.device) if self.cfg.compile else None
        if problem:
            log.warning("--compile ignored: %s (set TORCHINDUCTOR_CACHE_DIR to a writable folder)", problem)
        use_compile = self.cfg.compile and problem is None
        # the detectors' slice scoring (compiled or not); the sliding window runs it through detector_scorer
        self._scorers = {id(det): CompiledScorer(det.score_slices) if use_compile else det.score_slices
                         for det in self.detectors.values()}
        for det in self.detectors.values():
            log.info("%s", describe_scoring(det))
        #: the test-time adaptation policy (:meth:`adapt`), run on the inputs before scoring them
        self.adaptation = Adaptation(self.detectors, self.cfg, self.timings, self.device, self)

    # --- one volume --------------------------------------------------------------------------------
    def detector_for(self, shape: Sequence[int], data: np.ndarray | None = None,
                     source: str | Path | None = None) -> Detector:
        """The detector for a volume of ``shape``: the only one, or the one of the kind :func:`guess_kind` picks
        from the shape and, where given, the intensities ``data``.

        Where that kind is a guess (the shape is not a canonical cube) and ``source`` (the file) is given, one
        warning names it, the kind and why; callers pass ``source`` once per volume, when it is scored."""
        if "*" in self.detectors:
            return self.detectors["*"]
        kind, reason = guess_kind(shape, data)
        if reason is not None and source is not None:
            log.warning("%s: kind guessed as %r (%s); pass --kind to choose", source, kind.name, reason)
        if kind.name not in self.detectors:
            raise MoodError(f"no weights for kind {kind.name!r} ({reason or f'volume shape {tuple(shape)}'})")
        return self.detectors[kind.name]

    def _autocast(self):
        enabled = self.cfg.amp and self.device.type == "cuda"
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def _crop_enabled(self) -> bool:
        return self.cfg.crop if self.cfg.crop is not None else self.device.type == "cpu"

    def batch_size_for(self, det: Detector) -> int:
        """Patches (a slice detector's slices) per network call for ``det``: the configured size, else automatic
        (volumetric detectors: 1, their patches are large), halved on CUDA out of memory."""
        key = id(det)
        if key not in self.batch_sizes:
            if self.cfg.batch_size or det.dims == 3:
                self.batch_sizes[key] = self.cfg.batch_size or 1
            else:
                self.batch_sizes[key] = auto_batch_size(self._scorers[key], det.size, self.device, self._autocast)
        return self.batch_sizes[key]

    def window_for(self, det: Detector) -> Window:
        """The sliding window of ``det``: its patches (a slice detector's slices, of depth 1), half-overlapping
        where they are 3D, with the empty-patch skip and the crop where ``det`` and the config allow them."""
        crop = det.supports_crop and self._crop_enabled()
        return Window(tuple(det.patch_size), skip_empty=det.skip_empty_slices and self.cfg.skip_empty is not False,
                      crop_stride=det.crop_stride if crop else 0, crop_margin=self.cfg.crop_margin)

    @contextlib.contextmanager
    def _network(self) -> Iterator[None]:
        """The context of every network call: timed as ``network``, inference mode, autocast."""
        with self.timings("network"), torch.inference_mode(), self._autocast():
            yield

    def slices_to_run(self, det: Detector, slices: np.ndarray, fg: np.ndarray | None = None) -> np.ndarray:
        """Indices of the slices (S, H, W) the network runs on: the non-empty ones where ``det`` allows
        skipping empty slices and the config does not turn it off, else all. With ``fg`` (boolean, the slices' shape:
        the foreground at the network size) a slice with a foreground voxel is not empty, however dark."""
        window = self.window_for(det)
        if window.skip_empty:
            return np.flatnonzero(window.tiles(slices.shape).occupied(slices, fg))
        return np.arange(len(slices))

    def score_slices(self, det: Detector, slices: np.ndarray, out: np.ndarray | None = None,
                     need_pixel: bool = True, fg: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Pixel scores (S, H, W) and slice scores (S,) of a slice detector for slices (S, H, W) at the network
        size: the sliding window (:func:`~mood_detector.inference.sliding.score_window`) over patches of depth 1.

        ``out`` (S, H, W), zero-filled, any strides (e.g. a slice view of the output volume) receives the pixel
        scores in place; without it a zero array is allocated (nothing when ``need_pixel`` is False: an empty
        array is returned). Empty slices and the area outside the crop box keep score 0 (see
        :mod:`mood_detector.inference.fastpath`); ``fg`` (boolean, the slices' shape), the foreground at the
        network size, counts as non-empty and stays inside the box, dark regions of the object included."""
        res = self._window(det, slices, out, need_pixel, fg)
        return res.pixel, res.patch

    def _window(self, det: Detector, volume: np.ndarray, out: np.ndarray | None, need_pixel: bool,
                fg: np.ndarray | None) -> WindowScores:
        """:func:`score_window` of ``volume`` with ``det``'s window, scorer and batch size (kept where CUDA out of
        memory halved it)."""
        window = self.window_for(det)
        area = int(np.prod(window.tiles(volume.shape).patch[1:]))  # a slice rule's whole slice
        scorer = detector_scorer(det, self._scorers[id(det)], self._network, area=area)
        res = score_window(volume, window, scorer, self.batch_size_for(det), out=out, need_pixel=need_pixel,
                           foreground=fg)
        self.batch_sizes[id(det)] = res.batch
        return res

    def axes_for(self, det: Detector) -> list[int]:
        """The volume axes ``det`` scores along: its slice axis first, then (``axes="all"``) the other two."""
        extra = det.card.extra
        axes = self.cfg.axes or str(extra.get("score_axes", extra.get("train_axes", "model")))
        if axes not in AXES_CHOICES:
            raise ValueError(f"the model card's score_axes / train_axes {axes!r} is not one of "
                             f"{', '.join(AXES_CHOICES)}")
        first = det.slice_axis
        return [first] + ([a for a in range(3) if a != first] if axes == "all" else [])

    def mirror_for(self, det: Detector) -> tuple[int, ...]:
        """The volume axes ``det``'s inputs are also scored mirrored along (:attr:`PredictConfig.mirror`)."""
        spec = self.cfg.mirror if self.cfg.mirror is not None else str(det.card.extra.get("tta_mirror", "none"))
        try:
            return parse_mirror(spec)
        except ValueError as e:
            raise ValueError(f"the model card's tta_mirror: {e}") from None

    def network_volume(self, det: Detector, data: np.ndarray,
                       inplace: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """``data`` as ``det``'s network takes it (intensities normalised by the card's scheme, resampled to
        ``det.size`` cubed) and its foreground mask (``data``'s shape); ``inplace`` lets the normalisation
        overwrite ``data``."""
        norm, mask = prepare(data, inplace=inplace, scheme=scheme_of(det.card.extra))
        return resample(norm, (det.size,) * 3), mask

    def score_volume(self, data: np.ndarray, need_pixel: bool = True, inplace: bool = False,
                     source: str | Path = "volume") -> VolumeScores:
        """Score one volume (any 3D shape, any intensity range). The pixel map has ``data``'s shape.

        Outside the foreground (:func:`mood_detector.preprocess.foreground_mask`) the pixel score is 0.
        ``inplace`` lets intensity normalisation overwrite ``data`` (the predictor does so with the volumes it
        reads): then a 512^3 volume needs two float32 volume copies, the input and the score map. ``source``
        names the volume in the warning of a guessed kind (:meth:`detector_for`)."""
        det = self.detector_for(data.shape, data, source)  # before normalisation: the raw intensities tell CT
        with self.timings("preprocess"):
            net, mask = self.network_volume(det, data, inplace)
        # the foreground at the network size: dark regions of the object are run and kept in the crop
        out, per_slice, samples = self._score_passes(det, net, need_pixel, resize_mask(mask, net.shape))
        del net
        with self.timings("postprocess"):
            score = float(np.mean(samples))
            if out is not None:
                vol = resample(out, tuple(data.shape))
                if vol is not out:
                    del out
                    np.clip(vol, 0.0, 1.0, out=vol)
                vol[~mask] = 0.0  # empty background is never anomalous
            else:
                vol = np.zeros(0, dtype=np.float32)
        return VolumeScores(pixel=vol, sample=score, slice_scores=per_slice)

    def _score_passes(self, det: Detector, net: np.ndarray, need_pixel: bool,
                      fg: np.ndarray | None = None) -> tuple[np.ndarray | None, np.ndarray, list[float]]:
        """The sliding-window pass(es) of ``det`` over the network volume ``net``: the pixel map (None without
        ``need_pixel``), the slice scores along the detector's slice axis, and the sample score(s) made from
        slice scores; ``fg``: the foreground of ``net`` (:meth:`score_slices`).

        A slice detector is run along each of its axes (:meth:`axes_for`) and, on mirrored copies, along each
        again (:meth:`mirror_for`); its slices are the window's patches and their scores its slice scores, the
        first axis's are returned and each pass gives one sample score. A volumetric detector's 3D patches are
        taken in the volume's own orientation (and mirrored); its slice scores and its one sample score come from
        the averaged map (its slice rule), so the map is made without ``need_pixel`` too."""
        volumetric = det.dims == 3
        axes = [0] if volumetric else self.axes_for(det)  # a volume moved to "slice axis first" along axis 0: itself
        keep = need_pixel or volumetric
        # the map is filled in its final (Fortran, as NIfTI stores it) layout, through views with the pass's axis
        # first: no copy when it is written, none to move an axis back, and non-overlapping patches (slices) need
        # no volume beyond it
        out = np.zeros(net.shape, dtype=np.float32, order="F") if keep else None
        # the first pass into the map itself (a slice detector's slice scores are its); the other axes and the
        # mirrored passes each into a scratch map (a mirrored view of it for the mirrored passes, so that it
        # holds the scores in the input's orientation) that is added to the map
        passes = [(axis, None) for axis in axes] + [(axis, m) for m in self.mirror_for(det) for axis in axes]
        tmp = np.zeros_like(out) if out is not None and len(passes) > 1 else None
        per_slice, samples = np.zeros(0), []
        for n, (axis, m) in enumerate(passes):
            dst = out if n == 0 else tmp
            if n > 0 and dst is not None:
                dst.fill(0.0)  # the window leaves what it does not run (empty patches, outside the crop) as it is
            src, src_fg = net, fg
            if m is not None:
                src, src_fg = np.flip(net, m), None if fg is None else np.flip(fg, m)
                dst = None if dst is None else np.flip(dst, m)
            res = self._window(det, to_slices(src, axis), None if dst is None else to_slices(dst, axis), keep,
                               None if src_fg is None else to_slices(src_fg, axis))
            if n == 0:
                per_slice = res.patch
            if not volumetric:
                samples.append(sample_score(res.patch))
            if n > 0 and tmp is not None:
                out += tmp
        if out is not None and len(passes) > 1:
            out /= len(passes)
        del tmp
        if volumetric:
            np.clip(out, 0.0, 1.0, out=out)
            slices = torch.from_numpy(np.ascontiguousarray(to_slices(out, det.slice_axis)))
            per_slice = slice_scores(slices, slices.shape[1] * slices.shape[2], det.slice_rule).numpy()
            samples = [sample_score(per_slice)]
        return (out if need_pixel else None), per_slice, samples

    # --- test-time adaptation (the policy: mood_detector.inference.adapt.Adaptation) -------------------
    def adapt_for(self, det: Detector) -> str:
        """The test-time adaptation for ``det`` (:meth:`Adaptation.mode_for`)."""
        return self.adaptation.mode_for(det)

    def adapt(self, files: Sequence[Path]) -> bool:
        """Adapt the detectors to ``files`` before scoring them (:meth:`Adaptation.run`); whether any was."""
        return self.adaptation.run(files)

    # --- folders -----------------------------------------------------------------------------------
    def _read(self, path: Path) -> Volume:
        with self.timings("read"):
            return read_volume(path, self.cfg.limits)

    def _write(self, vol: Volume, scores: VolumeScores, outs: dict[str, Path]) -> None:
        with self.timings("write"):
            if "pixel" in outs:
                write_volume(outs["pixel"], scores.pixel, vol.affine, vol.header,
                             compresslevel=self.cfg.compresslevel)
            if "sample" in outs:
                write_text_atomic(outs["sample"], f"{scores.sample:.8f}\n")

    def predict_files(self, files: Iterable[Path], out_dir: str | Path) -> PredictReport:
        """Score ``files`` into ``out_dir`` (created if missing); returns a report, never raises for one
        bad input unless ``strict``. Raises :class:`MoodError` (a usage error) if ``out_dir`` cannot be used.
        Temp files that an interrupted run left for these inputs' outputs are removed first."""
        files = [Path(f) for f in files]
        out_dir = prepare_output_dir(out_dir, {f.parent for f in files}, pixel="pixel" in self.cfg.tasks)
        clean_stale_temps(out_dir, [o.name for f in files for o in output_paths(f, out_dir, self.cfg.tasks).values()])
        report = PredictReport()
        todo: list[Path] = []
        for f in files:
            outs = output_paths(Path(f), out_dir, self.cfg.tasks)
            if self.cfg.skip_existing and all(p.exists() for p in outs.values()):
                report.skipped.append(Path(f))
            else:
                todo.append(Path(f))
        adapt_start = time.perf_counter()
        adapted = self.adapt(todo)
        scoring_start = time.perf_counter()
        if report.skipped:
            log.info("skipping %d inputs whose outputs exist", len(report.skipped))
        elif any(o.exists() for f in todo for o in output_paths(f, out_dir, self.cfg.tasks).values()):
            log.info("%s: existing outputs are replaced (use --skip-existing to keep them)", out_dir)

        def fail(path: Path, reason: str) -> None:
            report.failed.append((path, reason))
            log.error("%s: %s", path, reason)
            if self.cfg.strict:
                raise StrictFailure(f"{path}: {reason}")

        with ThreadPoolExecutor(max(1, self.cfg.prefetch), thread_name_prefix="read") as readers, \
                ThreadPoolExecutor(max(1, self.cfg.writers), thread_name_prefix="write") as writers:
            reads: list[Future] = [readers.submit(self._read, p)
                                   for p in todo[: max(1, self.cfg.prefetch)]]
            pending: list[tuple[Path, Future]] = []
            bar = tqdm(total=len(todo), desc="predict", unit="vol", disable=not self.cfg.progress)
            for idx, path in enumerate(todo):
                nxt = idx + len(reads)
                if nxt < len(todo):
                    reads.append(readers.submit(self._read, todo[nxt]))
                fut = reads.pop(0)
                try:
                    vol = fut.result()
                    scores = self.score_volume(vol.data, need_pixel="pixel" in self.cfg.tasks, inplace=True,
                                               source=path)
                    vol.data = np.empty(0, dtype=np.float32)  # writing needs only the geometry: free the input
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
        if "adapt" in self.timings.seconds:  # inputs were read to adapt (or to decide, for auto)
            spent, scoring = scoring_start - adapt_start, time.perf_counter() - scoring_start
            log.info("%s took %.1f s, %.0f%% of the %.1f s spent scoring %d inputs",
                     "adaptation" if adapted else "deciding on adaptation", spent,
                     100 * spent / max(scoring, 1e-9), scoring, len(todo))
        return report

    @staticmethod
    def _finish(item: tuple[Path, Future], report: PredictReport, fail) -> None:
        path, fut = item
        try:
            fut.result()
            report.scored.append(path)
        except OSError as exc:
            fail(path, f"could not write output ({exc})")
        except Exception as exc:  # noqa: BLE001 - e.g. nibabel refusing a header; the other inputs go on
            fail(path, f"could not write output ({type(exc).__name__}: {exc})")

    def predict_folder(self, in_dir: str | Path, out_dir: str | Path) -> PredictReport:
        """Score every ``*.nii``/``*.nii.gz`` directly in ``in_dir``."""
        scan = scan_inputs(in_dir)  # MoodError (usage error) if it is not a folder
        log_ignored(scan)
        if not scan.volumes:
            raise MoodError(f"{in_dir}: no .nii or .nii.gz files to score in the input folder")
        return self.predict_files(scan.volumes, out_dir)


def describe_scoring(det: Detector) -> str:
    """One line on what ``det`` scores: the network volume and its patches (from the model card's
    ``network_size`` and ``patch_size``, recorded when it was saved; else the detector's own)."""
    extra = det.card.extra
    size = int(extra.get("network_size", det.size))
    patch = tuple(int(p) for p in extra.get("patch_size", det.patch_size))
    if det.dims == 3:
        how = f"3D patches of {'x'.join(map(str, patch))}"
    else:
        how = f"slices along axis {det.slice_axis} (patches of {'x'.join(map(str, patch))})"
    return f"{det.name} ({det.card.kind}): scores {how} of the volume resampled to {size}^3"

