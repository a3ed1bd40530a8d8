"""Test-time adaptation to the scans at hand, without labels.

``bn``: BatchNorm statistics recomputed on the input folder's own slices. ``finetune``: a short self-supervised
fine-tune of the detector's synthetic-anomaly task on them (:func:`adapt_finetune`). ``auto``: the fine-tune where
it fits a share of the folder's scoring time, as :func:`finetune_seconds` estimates it on the machine at hand.
:class:`Adaptation` is the policy the predictor runs before scoring: which detectors adapt, on which inputs, and
what ``auto`` decides.

A network trained on one set of scanners normalises its features with that data's BatchNorm means and
variances; on another site's scans those statistics are off, and the whole map drifts. Recomputing them on
the inputs themselves (no labels; AdaBN, Li et al. 2018) is a forward pass over a sample of their slices (evenly
spread, so the same inputs give the same statistics). The detector's weights are not changed, only the running
statistics.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Mapping, Protocol, Sequence

import numpy as np
import torch
from torch import nn

from mood_detector.detector import Detector
from mood_detector.errors import MoodError
from mood_detector.inference.timing import StageTimer
from mood_detector.io.nifti import read_shape, read_volume
from mood_detector.kinds import is_canonical
from mood_detector.preprocess import to_slices

if TYPE_CHECKING:
    from mood_detector.inference.predictor import PredictConfig

log = logging.getLogger(__name__)

#: values of :attr:`~mood_detector.inference.predictor.PredictConfig.adapt` (and of a model card's ``adapt``)
ADAPT_CHOICES = ("none", "bn", "finetune", "auto")

#: a volume's slices used for the statistics: at most this many non-empty ones, evenly spread
SLICES_PER_VOLUME = 24

#: the robust rule's default: slices whose slice score (on the logit scale) is above the median + this many MADs
#: of the inputs' slice scores are left out of the fine-tune (chosen on a validation folder: docs/generalisation.md)
OUTLIER_K = 2.0


def pick_slices(net: np.ndarray, axes: Iterable[int], per_volume: int = SLICES_PER_VOLUME) -> np.ndarray:
    """Up to ``per_volume`` non-empty slices of ``net`` (a volume at the network size), spread evenly over the
    non-empty ones and over ``axes``: (N, H, W) float32."""
    axes = list(axes)
    out = []
    for axis in axes:
        s = to_slices(net, axis)
        full = np.flatnonzero(s.reshape(s.shape[0], -1).max(axis=1) > 0)
        k = min(len(full), max(1, per_volume // len(axes)))
        if k:
            out.append(np.asarray(s[full[np.linspace(0, len(full) - 1, k).round().astype(int)]], dtype=np.float32))
    return np.concatenate(out) if out else np.zeros((0, *net.shape[1:]), dtype=np.float32)


def batchnorm_layers(det: Detector) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for module in det.modules().values() for m in module.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def adapt_batchnorm(det: Detector, volumes: Iterable[np.ndarray], axes: Iterable[int], batch_size: int = 16,
                    device: torch.device | str = "cpu") -> int:
    """Recompute ``det``'s BatchNorm statistics over slices of ``volumes`` (each already at the network size,
    as the predictor feeds it): a cumulative average over all of them. Returns the number of slices used; with
    none (or no BatchNorm layer) the detector is left as it was."""
    layers = batchnorm_layers(det)
    if not layers:
        log.warning("--adapt bn: the %s detector has no BatchNorm layers; nothing to adapt", det.name)
        return 0
    slices = [pick_slices(v, axes) for v in volumes]
    x = np.concatenate(slices) if slices else np.zeros((0,))
    if len(x) == 0:
        log.warning("--adapt bn: no non-empty slices in the inputs; BatchNorm statistics unchanged")
        return 0
    saved = [(m.momentum, m.running_mean.clone(), m.running_var.clone()) for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over every batch
        m.train()
    try:
        for i in range(0, len(x), batch_size):
            det.score_slices(torch.from_numpy(x[i:i + batch_size])[:, None].to(device))
    except BaseException:  # leave the model as it was
        for m, (_, mean, var) in zip(layers, saved):
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
        raise
    finally:
        for m, (momentum, _, _) in zip(layers, saved):
            m.momentum = momentum
            m.eval()
    log.info("--adapt bn: BatchNorm statistics of %d layers recomputed over %d slices", len(layers), len(x))
    return len(x)


@dataclass(frozen=True)
class FinetuneConfig:
    """A short self-supervised fine-tune on the inputs (``predict --adapt finetune``, ``mood-detector adapt``).

    Attributes:
        steps: optimiser steps (each one batch of the detector's own synthetic task on two input volumes).
        batch_size: slices per batch (half from each volume; the task uses both directions).
        lr: Adam learning rate (small: the model is trained, only its notion of normal tissue moves).
        seed: fixes the slices and the task's draws.
        outlier_k: the robust rule (:func:`drop_outlier_slices`): before the fine-tune, the candidate slices are
            scored by the model as trained and those whose slice score (logit scale) is above the median +
            ``outlier_k`` median absolute deviations of all candidates' scores are left out, so that large anomalies in the
            inputs are not taught as normal tissue. ``None``: every candidate slice is used.
        guard: the label-free guard (:func:`task_loss_on`): a few candidate slices are held out of the fine-tune,
            the task's loss on fixed examples planted into them is measured before and after, and the weights
            as trained are restored if the loss got worse.
        guard_slices: slices held out for the guard (spread over the inputs; fewer where the inputs have few).
        guard_batches: fixed task batches the guard's loss averages over.
    """

    steps: int = 600
    batch_size: int = 16
    lr: float = 1e-4
    seed: int = 0
    outlier_k: float | None = OUTLIER_K
    guard: bool = True
    guard_slices: int = 16
    guard_batches: int = 4


@dataclass
class FinetuneOutcome:
    """What :func:`finetune_stacks` did.

    Attributes:
        steps: optimiser steps run (0: no fine-tune: no task, no slices).
        slices: candidate slices (before the robust rule and the guard's hold-out).
        dropped: candidate slices the robust rule left out.
        held_out: slices held out for the guard.
        loss_before, loss_after: the guard's task loss on its held-out examples (``None`` without a guard).
        reverted: the guard found the fine-tune harmful and restored the weights as trained.
        last_loss: the training loss of the last step.
    """

    steps: int = 0
    slices: int = 0
    dropped: int = 0
    held_out: int = 0
    loss_before: float | None = None
    loss_after: float | None = None
    reverted: bool = False
    last_loss: float = float("nan")

    @property
    def changed(self) -> bool:
        """Whether the detector's weights were changed (fine-tuned and kept)."""
        return self.steps > 0 and not self.reverted


@torch.no_grad()
def stack_slice_scores(det: Detector, stacks: Sequence[np.ndarray], device: torch.device | str = "cpu",
                       batch_size: int = 16) -> list[np.ndarray]:
    """Slice scores of every slice of ``stacks`` ((n, H, W) each, at the network size) by ``det`` as it is, in
    eval mode: the detector's own slice score where it gives one, else its card's slice rule over the whole slice
    (:func:`~mood_detector.inference.aggregate.slice_scores`), as the predictor makes them."""
    from mood_detector.inference.aggregate import slice_scores

    det.eval()
    out = []
    for stack in stacks:
        scores = []
        for i in range(0, len(stack), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(stack[i:i + batch_size]))[:, None].to(device)
            res = det.score_slices(x)
            s = res.slice if res.slice is not None else slice_scores(
                res.pixel.float(), int(np.prod(stack.shape[1:])), det.slice_rule)
            scores.append(s.float().cpu().numpy())
        out.append(np.concatenate(scores) if scores else np.zeros(0, np.float32))
    return out


def logit(scores: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """log(p / (1 - p)) of scores in [0, 1] (clipped to [eps, 1 - eps]): scores near 1 (the top-fraction slice
    rule saturates there) stay apart, so a spread measured on this scale can tell outliers from them."""
    p = np.clip(np.asarray(scores, np.float64), eps, 1 - eps)
    return np.log(p / (1 - p))


#: the smallest median absolute deviation :func:`outlier_threshold` uses (logit scale): where most slices score
#: the same, differences in rounding are not outliers
MIN_MAD = 0.05


def outlier_threshold(scores: np.ndarray, k: float, min_mad: float = MIN_MAD) -> float:
    """median + ``k`` x the median absolute deviation of ``scores`` (at least ``min_mad``)."""
    med = float(np.median(scores))
    mad = float(np.median(np.abs(scores - med)))
    return med + k * max(mad, min_mad)


def drop_outlier_slices(det: Detector, stacks: list[np.ndarray], k: float, device: torch.device | str = "cpu",
                        batch_size: int = 16) -> tuple[list[np.ndarray], int]:
    """``stacks`` without the slices that ``det`` as trained already scores as outliers within the inputs: slice
    score (:func:`stack_slice_scores`, on the :func:`logit` scale) above :func:`outlier_threshold` of all the
    stacks' slice scores. Such slices hold what the model finds anomalous (a tumour, a large lesion);
    fine-tuning on them would teach it as normal tissue. Returns the kept stacks (empty ones removed) and the
    number of slices dropped."""
    scores = [logit(s) for s in stack_slice_scores(det, stacks, device, batch_size)]
    flat = np.concatenate(scores) if scores else np.zeros(0)
    if len(flat) < 3:
        return stacks, 0
    thr = outlier_threshold(flat, k)
    kept = [s[sc <= thr] for s, sc in zip(stacks, scores)]
    dropped = int(sum(len(s) for s in stacks) - sum(len(s) for s in kept))
    return [s for s in kept if len(s)], dropped


def hold_out(stacks: list[np.ndarray], n: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Split up to ``n`` slices off ``stacks``: about ``n / len(stacks)`` evenly spread ones from each, at most a
    quarter of a stack (none from stacks of fewer than 4). Returns (training stacks, held-out stacks)."""
    per = max(1, math.ceil(n / max(1, len(stacks))))
    train, held = [], []
    for s in stacks:
        k = min(per, len(s) // 4)
        if k < 1:
            train.append(s)
            continue
        idx = np.unique(np.linspace(0, len(s) - 1, k + 2).round().astype(int)[1:-1])
        mask = np.zeros(len(s), bool)
        mask[idx] = True
        train.append(s[~mask])
        held.append(s[mask])
    return train, held


@torch.no_grad()
def task_loss_on(det: Detector, stacks: list[np.ndarray], batches: int, seed: int,
                 device: torch.device | str = "cpu") -> float:
    """The mean of ``det``'s task loss (:meth:`Detector.task_loss`, eval mode: as it scores) over ``batches``
    fixed batches from ``stacks``: the same pairs of stacks, slices and planted patches for the same arguments,
    so two calls compare the detector's weights alone."""
    det.eval()
    rng = np.random.default_rng(seed)
    total = 0.0
    for b in range(batches):
        i, j = rng.integers(len(stacks), size=2)
        n = min(len(stacks[i]), len(stacks[j]))  # the task pairs the two stacks' slices
        gen = torch.Generator().manual_seed(seed + b)
        loss = det.task_loss(torch.from_numpy(stacks[i][:n]), torch.from_numpy(stacks[j][:n]), b, gen, seed + b,
                             device)
        total += float(loss)
    return total / batches


def finetune_stacks(det: Detector, stacks: list[np.ndarray], cfg: FinetuneConfig = FinetuneConfig(),
                    device: torch.device | str = "cpu", quiet: bool = False,
                    step_done: Callable[[int], None] | None = None) -> FinetuneOutcome:
    """Fine-tune ``det`` on slice stacks (one (n, H, W) float32 array per input, at the network size) with its
    own self-supervised task: the robust rule first (``cfg.outlier_k``: :func:`drop_outlier_slices`), then
    ``cfg.steps`` Adam steps on two stacks at a time, under the guard (``cfg.guard``: held-out slices' task loss
    before and after; the weights as trained come back where it got worse, with one log line)."""
    out = FinetuneOutcome(slices=sum(len(s) for s in stacks))
    level = logging.DEBUG if quiet else logging.INFO
    if not det.supports_finetune:
        log.warning("--adapt finetune: the %s detector has no synthetic task; nothing to adapt", det.name)
        return out
    stacks = [s for s in stacks if len(s)]
    if not stacks:
        log.warning("--adapt finetune: no non-empty slices in the inputs; model unchanged")
        return out
    if cfg.outlier_k is not None:
        stacks, out.dropped = drop_outlier_slices(det, stacks, cfg.outlier_k, device, cfg.batch_size)
        log.log(level, "--adapt finetune: %d of %d slices left out: the model as trained scores them above the "
                "median + %g MADs of the inputs' slice scores", out.dropped, out.slices, cfg.outlier_k)
    held: list[np.ndarray] = []
    if cfg.guard:
        stacks, held = hold_out(stacks, cfg.guard_slices)
        out.held_out = sum(len(s) for s in held)
    modules = list(det.modules().values())
    saved = None
    if held:
        saved = {name: copy.deepcopy(m.state_dict()) for name, m in det.modules().items()}
        out.loss_before = task_loss_on(det, held, cfg.guard_batches, cfg.seed + 7919, device)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.Adam([p for m in modules for p in m.parameters()], lr=cfg.lr)
    half = max(1, cfg.batch_size // 2)
    for m in modules:
        m.train()
    try:
        for step in range(cfg.steps):
            i, j = rng.integers(len(stacks), size=2)
            a = stacks[i][rng.integers(len(stacks[i]), size=half)]
            b = stacks[j][rng.integers(len(stacks[j]), size=half)]
            opt.zero_grad(set_to_none=True)
            loss = det.task_loss(torch.from_numpy(a), torch.from_numpy(b), step, gen, cfg.seed, device)
            if loss is None:
                raise TypeError(f"the {det.name} detector declares supports_finetune but its task_loss gives none")
            loss.backward()
            opt.step()
            out.steps = step + 1
            out.last_loss = float(loss.detach())
            if step_done is not None:
                step_done(step)
    finally:
        for m in modules:
            m.eval()
    log.log(level, "--adapt finetune: %d steps of the %s task on %d slices (last loss %.4f)", out.steps, det.name,
            sum(len(s) for s in stacks), out.last_loss)
    if saved is not None and out.steps:
        out.loss_after = task_loss_on(det, held, cfg.guard_batches, cfg.seed + 7919, device)
        if not out.loss_after <= out.loss_before:  # worse (or not a number): as trained
            for name, m in det.modules().items():
                m.load_state_dict(saved[name])
            out.reverted = True
            log.log(logging.DEBUG if quiet else logging.WARNING,
                    "--adapt finetune: reverted to the weights as trained: the fine-tune raised the task loss on "
                    "%d held-out slices from %.4f to %.4f", out.held_out, out.loss_before, out.loss_after)
        else:
            log.log(level, "--adapt finetune: task loss on %d held-out slices %.4f -> %.4f", out.held_out,
                    out.loss_before, out.loss_after)
    return out


def adapt_finetune(det: Detector, volumes: list[np.ndarray], axes: Iterable[int],
                   cfg: FinetuneConfig = FinetuneConfig(), device: torch.device | str = "cpu",
                   quiet: bool = False, step_done: Callable[[int], None] | None = None) -> int:
    """Train ``det`` for ``cfg.steps`` steps of its own self-supervised task (:meth:`Detector.task_loss`) on slices
    of ``volumes`` (at the network size): the inputs' tissue becomes "normal" to it, planted patches stay
    anomalous. For detectors with such a task (:attr:`Detector.supports_finetune`: the FPI family, ``fpi`` and
    ``nsa``, whose task makes examples from two slice stacks); returns the steps whose result was kept (0 for
    other detectors, left as they were, and where the guard restored the weights as trained). The inputs may
    hold anomalies: slices the model as trained scores as outliers within the inputs are left out (the robust
    rule, ``cfg.outlier_k``), and the task's labels mark only its own patches (:func:`finetune_stacks`)."""
    axes = list(axes)
    stacks = [pick_slices(v, axes, per_volume=4 * cfg.batch_size) for v in volumes]
    out = finetune_stacks(det, stacks, cfg, device, quiet, step_done)
    return out.steps if out.changed else 0


#: fine-tune steps timed (on a copy of the detector) to estimate a whole fine-tune's time
PROBE_STEPS = 5


def finetune_seconds(det: Detector, volumes: list[np.ndarray], axes: Iterable[int],
                     cfg: FinetuneConfig = FinetuneConfig(), device: torch.device | str = "cpu") -> float:
    """Seconds that :func:`adapt_finetune` with ``cfg`` would take here: the time of its first step (slice
    stacks, first allocations) plus the mean of the :data:`PROBE_STEPS` steps after it times the rest, all run
    on a copy of ``det`` (``det`` itself is not changed). ``inf`` for a detector without a synthetic task."""
    probe = min(PROBE_STEPS + 1, cfg.steps)
    cuda = torch.device(device).type == "cuda"
    stamps = [time.perf_counter()]

    def stamp(_: int) -> None:
        if cuda:  # CUDA runs the step asynchronously: wait for it
            torch.cuda.synchronize(device)
        stamps.append(time.perf_counter())

    # without the guard (which may restore the copy's weights): the time is what is measured
    if adapt_finetune(copy.deepcopy(det), volumes, axes, replace(cfg, steps=probe, guard=False), device,
                      quiet=True, step_done=stamp) == 0:
        return float("inf")
    first = stamps[1] - stamps[0]
    if probe == 1:
        return first * cfg.steps
    return first + (stamps[-1] - stamps[1]) / (probe - 1) * (cfg.steps - 1)


class Scorer(Protocol):
    """What the adaptation asks of the predictor that scores the inputs after it
    (:class:`~mood_detector.inference.predictor.Predictor`)."""

    def detector_for(self, shape: Sequence[int], data: np.ndarray | None = None) -> Detector:
        """The detector for a volume of ``shape`` (and, where the kind is a guess, intensities ``data``)."""

    def network_volume(self, det: Detector, data: np.ndarray,
                       inplace: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """``data`` prepared and resampled to ``det``'s network size, and its foreground mask."""

    def axes_for(self, det: Detector) -> list[int]:
        """The volume axes ``det`` scores along, its slice axis first."""

    def mirror_for(self, det: Detector) -> tuple[int, ...]:
        """The volume axes ``det``'s inputs are also scored mirrored along."""

    def slices_to_run(self, det: Detector, slices: np.ndarray) -> np.ndarray:
        """Indices of the slices the network runs on."""

    def batch_size_for(self, det: Detector) -> int:
        """Slices per network call for ``det``."""

    def score_slices(self, det: Detector, slices: np.ndarray, out: np.ndarray | None = None,
                     need_pixel: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Pixel and slice scores of slices (S, H, W) at the network size."""


class Adaptation:
    """The test-time adaptation policy of a predictor (:attr:`PredictConfig.adapt
    <mood_detector.inference.predictor.PredictConfig.adapt>`): which of ``detectors`` adapt (:meth:`mode_for`),
    on which of the inputs, and whether ``auto`` fine-tunes (:meth:`_auto_fits`); :meth:`run` adapts them before
    the scoring. Time spent goes to ``timings`` under ``adapt``; ``scorer`` (the predictor) picks the detector for
    a volume, brings it to the network size, and its scoring is timed for ``auto``'s estimate."""

    def __init__(self, detectors: Mapping[str, Detector], cfg: PredictConfig, timings: StageTimer,
                 device: torch.device, scorer: Scorer) -> None:
        self.detectors = detectors
        self.cfg = cfg
        self.timings = timings
        self.device = device
        self.scorer = scorer

    def mode_for(self, det: Detector) -> str:
        """The test-time adaptation for ``det``: the config's, else its card's ``adapt``, else ``none``."""
        mode = self.cfg.adapt or str(det.card.extra.get("adapt", "none"))
        if mode not in ADAPT_CHOICES:
            raise ValueError(f"the model card's adapt {mode!r} is not one of {', '.join(ADAPT_CHOICES)}")
        if det.dims == 3 and mode != "none":  # the adaptations train on slices
            if mode != "auto":
                raise MoodError(f"--adapt {mode}: not available for the volumetric {det.name} detector; use "
                                f"--adapt none")
            return "none"
        return mode

    def run(self, files: Sequence[Path]) -> bool:
        """Adapt every detector whose adaptation is not ``none`` (:meth:`mode_for`) on slices of up to
        ``adapt_volumes`` of ``files`` (evenly spread). An input that cannot be read is left to the scoring loop
        to report. ``auto`` decides on the first input it reads for a detector (:meth:`_auto_fits`); a fine-tune
        it chose that fails is logged and the detector scores as trained. Returns whether any detector was
        adapted."""
        if not files or all(self.mode_for(d) == "none" for d in self.detectors.values()):
            return False
        started = time.perf_counter()
        # reading even one input for the adaptation costs about one input's share of the scoring time
        auto_ok = len(files) * self.cfg.adapt_budget >= 1
        if not auto_ok and all(self.mode_for(d) in ("none", "auto") for d in self.detectors.values()):
            log.info("--adapt auto: no adaptation for %d inputs (it needs at least %d)", len(files),
                     math.ceil(1 / self.cfg.adapt_budget))
            return False
        pick = [files[i] for i in np.unique(np.linspace(0, len(files) - 1, max(1, self.cfg.adapt_volumes)).round()
                                           .astype(int))]
        groups: dict[int, tuple[Detector, list[np.ndarray]]] = {}
        declined: set[int] = set()
        with self.timings("adapt"):
            for path in pick:
                t0 = time.perf_counter()
                det = self._header_detector(path)  # where the header decides, inputs not needed are not read
                if det is not None and self._skips(det, auto_ok, declined):
                    continue
                try:
                    data = read_volume(path, self.cfg.limits).data
                    if det is None:  # the kind is a guess: from the intensities too, as when the input is scored
                        det = self.scorer.detector_for(data.shape, data)
                except Exception:  # noqa: BLE001 - the scoring loop reports this input's problem
                    continue
                if self._skips(det, auto_ok, declined):
                    continue
                mode = self.mode_for(det)
                net = self.scorer.network_volume(det, data, inplace=True)[0]
                del data
                if mode == "auto" and id(det) not in groups and not self._auto_fits(
                        det, net, files, time.perf_counter() - t0, started):
                    declined.add(id(det))
                    continue
                groups.setdefault(id(det), (det, []))[1].append(net)
            adapted = False
            for det, vols in groups.values():
                mode = self.mode_for(det)
                if mode == "bn":
                    adapted |= adapt_batchnorm(det, vols, self.scorer.axes_for(det), device=self.device) > 0
                    continue
                saved = ({name: copy.deepcopy(m.state_dict()) for name, m in det.modules().items()}
                         if mode == "auto" else {})
                try:
                    with torch.enable_grad():
                        adapted |= adapt_finetune(det, vols, self.scorer.axes_for(det), self._finetune_config(),
                                                  device=self.device) > 0
                except Exception as exc:  # noqa: BLE001 - auto's fine-tune is optional: score as trained
                    if mode != "auto":
                        raise
                    for name, m in det.modules().items():
                        m.load_state_dict(saved[name])
                    log.warning("--adapt auto: the fine-tune failed (%s: %s); scoring as trained",
                                type(exc).__name__, exc)
        return adapted

    def _finetune_config(self) -> FinetuneConfig:
        return FinetuneConfig(steps=self.cfg.adapt_steps)

    def _auto_fits(self, det: Detector, net: np.ndarray, files: Sequence[Path], read_s: float,
                   started: float) -> bool:
        """Whether ``auto`` fine-tunes ``det``: the adaptation (what it has spent so far, the other inputs it
        reads, the fine-tune) must take at most ``adapt_budget`` of the estimated time to score ``det``'s inputs.

        Estimates, on this machine, on the side that keeps the adaptation within its share: the scoring time
        per input from below, as the larger of ``read_s`` (reading and preparing ``net``) and the network time
        of ``net``'s non-empty slices (the reader threads overlap the two at best; resampling back and writing
        are left out), the latter extrapolated from the fastest of three timed batches; the fine-tune from a few
        timed steps (:func:`finetune_seconds`), skipped where even its forward passes alone (each step runs a
        batch forward and backward) at the scoring's time per slice would not fit. The machine's speed varies
        (on the 2-core development machine, the same volume's network time by up to 50% between runs), so the
        decision near the threshold can go either way; the log reports the share measured after scoring."""
        n = len(files)
        if len(self.detectors) > 1:  # a mixed folder: count this detector's inputs by their headers
            n = sum(1 for f in files if self._may_go_to(f, det))
        per_slice, network_s = self._network_seconds(det, net)
        volume_s = max(read_s, network_s)
        log.debug("--adapt auto: per input: read and prepare %.2f s, network %.2f s", read_s, network_s)
        budget = self.cfg.adapt_budget * n * volume_s
        tune = self._finetune_config()
        reads = min(n, self.cfg.adapt_volumes) - 1
        spent = time.perf_counter() - started + reads * read_s
        if spent + tune.steps * tune.batch_size * per_slice > budget:
            tune_s = tune.steps * tune.batch_size * per_slice  # a lower bound: reject without a probe
        else:
            with torch.enable_grad():
                tune_s = finetune_seconds(det, [net], self.scorer.axes_for(det), tune, device=self.device)
            spent = time.perf_counter() - started + reads * read_s
        fits = spent + tune_s <= budget
        log.info("--adapt auto: %s: adapting would take %s%.0f s against a budget of %.0f s (%.0f%% of ~%.1f s "
                 "per input x %d inputs; deciding took %.1f s)", "fine-tuning" if fits else "no fine-tune",
                 "" if fits else "at least ", spent + tune_s, budget, 100 * self.cfg.adapt_budget, volume_s, n,
                 time.perf_counter() - started)
        return fits

    def _skips(self, det: Detector, auto_ok: bool, declined: set[int]) -> bool:
        """Whether :meth:`run` leaves ``det`` as it is: its adaptation is ``none``, or ``auto`` that cannot pay
        off (too few inputs) or that has declined it already."""
        mode = self.mode_for(det)
        return mode == "none" or (mode == "auto" and (not auto_ok or id(det) in declined))

    def _may_go_to(self, path: Path, det: Detector) -> bool:
        """Whether ``path`` may be scored by ``det``, from its header alone: a canonical cube's kind is known; any
        other shape's kind is told by the voxels (:func:`~mood_detector.kinds.guess_kind`), so it counts for every
        detector (an over-count only in folders that mix such volumes of both kinds)."""
        try:
            shape = read_shape(path, self.cfg.limits)
            return not is_canonical(shape) or self.scorer.detector_for(shape) is det
        except Exception:  # noqa: BLE001 - the scoring loop reports this input's problem
            return False

    def _header_detector(self, path: Path) -> Detector | None:
        """The detector for ``path`` where its header decides it (one detector, or a canonical cube), else
        ``None`` (the intensities are needed, or the header cannot be read)."""
        try:
            shape = read_shape(path, self.cfg.limits)
        except Exception:  # noqa: BLE001 - the scoring loop reports this input's problem
            return None
        if "*" not in self.detectors and not is_canonical(shape):
            return None
        try:
            return self.scorer.detector_for(shape)
        except MoodError:  # no weights for that kind: the scoring loop reports it
            return None

    def _network_seconds(self, det: Detector, net: np.ndarray) -> tuple[float, float]:
        """Network seconds per slice and for all of ``net`` (a volume at the network size) on every pass of the
        scorer (its ``axes_for`` and ``mirror_for``), extrapolated from the fastest of three timed batches."""
        axes = self.scorer.axes_for(det)
        slices = to_slices(net, axes[0])
        todo = self.scorer.slices_to_run(det, slices)
        if not len(todo):
            return 0.0, 0.0
        bs = self.scorer.batch_size_for(det)
        # one batch at each quartile: slice areas (and so the crop boxes) vary along the volume
        probes = [todo[int(q * len(todo)):][:bs] for q in (0.25, 0.5, 0.75)]
        for probe in probes:  # untimed: the set-up of the first call with each shape
            self.scorer.score_slices(det, np.asarray(slices[probe]), need_pixel=False)
        times = []
        for probe in probes:
            t0 = time.perf_counter()
            self.scorer.score_slices(det, np.asarray(slices[probe]), need_pixel="pixel" in self.cfg.tasks)
            times.append((time.perf_counter() - t0) / len(probe))
        per_slice = min(times)
        passes = len(axes) * (1 + len(self.scorer.mirror_for(det)))
        return per_slice, per_slice * len(todo) * passes
