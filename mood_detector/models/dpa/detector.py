"""DPA detector: a progressively grown autoencoder trained and scored with relative-perceptual-L1 only.

Slice-wise on volumes (deviation: the paper scores 2D images): volumes are resampled to ``max_res`` cubed by the
harness (card ``size`` = ``max_res``, default min(kind size, 128); the authors' MOOD entry also resized slices
to 128^2), every slice is reconstructed, and

* slice score = relative-perceptual-L1 ``s`` of the slice, pixel map = channel mean of ``|f^(x) - f^(x^)|``
  upsampled bilinearly (paper Sec. 3.1, authors' code);
* both are mapped to [0, 1] by the strictly monotone ``v / (v + c)``, with ``c`` the ``calib_quantile``
  (default 0.99) quantile of the same raw quantity over training slices (stored in the card as
  ``score_scale`` / ``pixel_scale``): a normal slice at that quantile scores 0.5; the ranking of scores, and
  hence AP / AUROC, is that of the raw quantity;
* slices whose mean intensity is at most ``min_mean`` (default 0.06, the authors' MOOD rule "slice sum > 4000"
  on 256^2 slices in [0, 1]) are not processed and score 0; training uses the same slices.

Training (paper Sec. 3.2, authors' code): growth from 8^2 to ``max_res``; resolution ``r`` trains for
``stage_epochs`` epochs (the final one for ``--epochs``), the first ``fade`` x ``stage_epochs`` epochs of each new
resolution fading in both the networks and the loss level (``alpha`` 0 -> 1 linearly per step), a fresh Adam for
every stage (each fade and each stable phase). ``stage_epochs=0`` trains at ``max_res`` only (no growing). The
feature layer at resolution ``r = max_res / 2^k`` is ``feature_layer`` moved ``k`` VGG blocks shallower, so the
loss's "level" grows with the resolution. With ``feature_norm="channel"`` (default, the paper's text) feature
statistics (per-channel mean / std) are computed on the training slices at each resolution; those of the final
layer are saved with the weights (``extra.feat_mean`` / ``extra.feat_std``). ``feature_norm="none"`` (the
authors' code) uses the raw features: no statistics are computed or saved.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from mood_detector import distributed
from mood_detector.detector import Detector, Flag, SliceScores, TrainConfig, parse_options_as
from mood_detector.errors import WeightsError
from mood_detector.models.dpa.features import (EXTRACTORS, FeatureExtractor, VGG19Features, build_extractor,
                                               fpi_card_of, make_extractor)
from mood_detector.models.dpa.loss import FEATURE_NORMS, FeatureStats, PerceptualLoss, compute_stats
from mood_detector.models.dpa.network import ProgressiveAE, mix_resolution, resolutions
from mood_detector.models.fpi.network import scaled
from mood_detector.tasks.fpi import FPIConfig
from mood_detector.training.calibration import quantile_scale
from mood_detector.training.data import VolumeStore, nonempty, slice_loader
from mood_detector.training.engine import Engine, Phase, Stateful, Step, rank_share
from mood_detector.training.loop import autocast, seed_everything
from mood_detector.weights import ModelCard

log = logging.getLogger(__name__)

#: the default perceptual features (chosen by the measurement in docs/dpa.md): VGG19 trained on the FPI task
DEFAULT_FEATURES = "fpi-vgg19"
DEFAULT_MAX_RES = 128


@dataclass
class DPAOptions:
    """DPA-specific settings (``--opt KEY=VALUE``; ``--feature-weights`` sets ``feature_weights``).

    Attributes:
        latent_dim: size of the 1x1 bottleneck code (paper Sec. 3.3 tunes it).
        nf: channels at every level (default: 128 x ``--width``, the authors' MOOD widths at width 1).
        feature_layer: layer of the feature extractor used at the final resolution (tuned in Sec. 3.3);
            VGG19 names ``r12``, ``r22``, ``r32``, ``r42`` ... (ReLU outputs), FPI encoder ``b1`` ... ``b5``.
        feature_norm: ``channel`` (default, the paper's text): features normalised per channel by the training
            slices' mean / std in the loss and the maps; ``none``: raw features (the authors' code).
        features: ``fpi-vgg19`` (default), ``random-vgg19``, ``vgg19`` (needs feature_weights) or
            ``fpi-encoder`` (feature_weights = a trained FPI .safetensors).
        feature_weights: path of the extractor weights: a torchvision VGG19 state dict (``vgg19``), a trained
            FPI .safetensors (``fpi-encoder``), or FPI-trained VGG19 weights saved by an earlier run
            (``fpi-vgg19``: skips the pre-training; used by the hyperparameter search to share features).
        feature_epochs: FPI pre-training epochs of ``fpi-vgg19`` features.
        feature_lr: Adam learning rate of that pre-training.
        max_res: final (= network) resolution, a power of two; default min(size, 128).
        start_res: first growth resolution (8, paper Sec. 3.2).
        stage_epochs: epochs of every resolution below ``max_res`` (0: train only at max_res, no growing).
        fade: fraction of a stage's steps (``stage_epochs`` worth) spent fading each new resolution in.
        stats_batches: batches used for feature statistics and score calibration.
        calib_quantile: quantile of training scores that maps to 0.5.
        min_mean: slices with mean intensity <= this are skipped (score 0).
    """

    latent_dim: int = 128
    nf: int = 0
    feature_layer: str = "r32"
    feature_norm: str = "channel"
    features: str = DEFAULT_FEATURES
    feature_weights: str = ""
    feature_epochs: int = 5
    feature_lr: float = 1e-4
    max_res: int = 0
    start_res: int = 8
    stage_epochs: int = 2
    fade: float = 0.5
    stats_batches: int = 16
    calib_quantile: float = 0.99
    min_mean: float = 0.06


@dataclass(frozen=True)
class GrowthStage:
    """One growth resolution: ``epochs`` epochs at ``res``; ``fade`` when it starts by fading in."""

    res: int
    epochs: int
    fade: bool


def growth_schedule(start_res: int, max_res: int, stage_epochs: int, final_epochs: int) -> list[GrowthStage]:
    """The phases 8, 16, ..., max_res: ``stage_epochs`` each, ``final_epochs`` for max_res. With
    ``stage_epochs=0`` only max_res is trained, without fade: the paper's "w/o progressive growing" variant."""
    res = resolutions(start_res, max_res)
    if stage_epochs <= 0:
        return [GrowthStage(max_res, final_epochs, False)]
    return [GrowthStage(r, final_epochs if r == max_res else stage_epochs, i > 0) for i, r in enumerate(res)]


def resize(x: torch.Tensor, res: int) -> torch.Tensor:
    """Slices (N, 1, S, S) -> (N, 1, res, res) (antialiased bilinear; identity at S == res)."""
    if x.shape[-1] == res and x.shape[-2] == res:
        return x
    return F.interpolate(x, size=(res, res), mode="bilinear", align_corners=False, antialias=True)


def keep_mask(x: torch.Tensor, min_mean: float) -> torch.Tensor:
    """Slices that are processed: any non-zero pixel and mean intensity above ``min_mean``."""
    flat = x.flatten(1)
    return (flat.amax(dim=1) > 0) & (flat.mean(dim=1) > min_mean)


class DPADetector(Detector):
    """Deep Perceptual Autoencoder behind the common detector interface."""

    name = "dpa"
    options_cls = DPAOptions
    flags = (Flag("--feature-weights", "feature_weights",
                  "Perceptual-feature weights: a torchvision VGG19 state dict (.safetensors, or .pth read with "
                  "weights_only=True) or a trained FPI .safetensors.", path="file",
                  default_text="features trained on the training slices, see docs/dpa.md"),)
    #: through the training engine: the feature pre-training and every growth stage train on every rank's part
    #: of each batch
    supports_distributed = True

    def __init__(self, card: ModelCard, ae: ProgressiveAE, extractor: FeatureExtractor) -> None:
        super().__init__(card)
        self.ae = ae
        self.extractor = extractor
        ex = card.extra
        # cards written before the option existed normalised per channel
        self.loss = PerceptualLoss(extractor, str(ex.get("feature_norm", "channel")))
        self.layer: str = ex["feature_layer"]
        self.score_scale = float(ex.get("score_scale", 1.0))
        self.pixel_scale = float(ex.get("pixel_scale", 1.0))
        self.min_mean = float(ex.get("min_mean", 0.0))
        if self.loss.normalised:
            # identity statistics until they are loaded (load_extra_tensors) or computed (fit)
            self.loss.stats[(self.size, self.layer)] = FeatureStats(int(ex["feature_channels"]))

    # --- interface ----------------------------------------------------------------------------------
    @classmethod
    def options(cls, cfg: TrainConfig) -> DPAOptions:
        """Parse ``cfg.options``; the defaults of ``nf`` (from ``--width``), ``max_res`` (from ``--size``) and
        ``features`` (from ``feature_weights``) follow the rest of ``cfg``. Any ``size`` trains: slices are
        resized to ``max_res``, a power of two."""
        o = parse_options_as(DPAOptions, cfg.options, cls.name)
        if not o.nf:
            o.nf = scaled(128, cfg.width)
        if not o.max_res:
            cap = min(cfg.net_size, DEFAULT_MAX_RES)
            o.max_res = 2 ** int(math.floor(math.log2(cap)))
        if o.feature_weights and "features" not in cfg.options:
            o.features = "fpi-encoder" if fpi_card_of(o.feature_weights) else "vgg19"
        if o.features not in EXTRACTORS:
            raise ValueError(f"unknown features {o.features!r}; choose one of {', '.join(EXTRACTORS)}")
        if o.feature_norm not in FEATURE_NORMS:
            raise ValueError(f"unknown feature_norm {o.feature_norm!r}; choose one of {', '.join(FEATURE_NORMS)}")
        if not 0.0 <= o.fade <= 1.0:
            raise ValueError(f"fade must be in [0, 1], got {o.fade}")
        resolutions(o.start_res, o.max_res)  # validates both
        return o

    @classmethod
    def build(cls, card: ModelCard) -> "DPADetector":
        ex = card.extra
        ae = ProgressiveAE(int(card.size), int(ex["nf"]), int(ex["latent_dim"]), int(ex.get("start_res", 8)))
        return cls(card, ae, build_extractor(ex["extractor"]))

    def modules(self) -> dict[str, nn.Module]:
        return {"ae": self.ae, "features": self.extractor}

    @property
    def final_stats(self) -> FeatureStats:
        return self.loss.stats[(self.size, self.layer)]

    def extra_tensors(self) -> dict[str, torch.Tensor]:
        if not self.loss.normalised:
            return {}
        return {"feat_mean": self.final_stats.mean, "feat_std": self.final_stats.std}

    def load_extra_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        if not self.loss.normalised:
            return
        for key in ("feat_mean", "feat_std"):
            if key not in tensors:
                raise WeightsError(f"DPA weights lack the feature statistics tensor extra.{key}")
        self.final_stats.mean.copy_(tensors["feat_mean"].float())
        self.final_stats.std.copy_(tensors["feat_std"].float())

    def to(self, device: torch.device | str) -> "DPADetector":
        super().to(device)
        for stats in self.loss.stats.values():
            stats.to(self.device)
        return self

    def raw_scores(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw relative-perceptual-L1 per slice (N,) and raw pixel map (N, H, W) at the network size."""
        y = self.ae(x, self.size, 1.0)
        image, pixel = self.loss.score(x, y.to(x.dtype), self.layer)
        return image.float(), pixel.float()

    def score_slices(self, x: torch.Tensor) -> SliceScores:
        keep = keep_mask(x, self.min_mean)
        image = torch.zeros(x.shape[0], device=x.device)
        pixel = torch.zeros(x.shape[0], x.shape[-2], x.shape[-1], device=x.device)
        if bool(keep.any()):
            s, p = self.raw_scores(x[keep])
            image[keep] = s / (s + self.score_scale)
            pixel[keep] = p / (p + self.pixel_scale)
        return SliceScores(pixel=pixel.clamp(0, 1), slice=image.clamp(0, 1))

    # --- training ----------------------------------------------------------------------------------
    @classmethod
    def card_for(cls, cfg: TrainConfig, n_files: int) -> ModelCard:
        """The common card; ``fit`` adds the feature extractor's configuration and channels."""
        o = cls.options(cfg)
        card = replace(super().card_for(cfg, n_files), arch="dpa-preact-resnet", size=o.max_res, mode=o.features)
        card.extra.update(score_map="v / (v + scale), scale = calib_quantile of the training slices' raw values",
                          features_note=_features_note(o.features))
        return card

    @classmethod
    def fit(cls, files: Sequence[Path], cfg: TrainConfig, run_dir: Path) -> "DPADetector":
        run_dir = Path(run_dir)
        seed_everything(cfg.seed)
        o = cls.options(cfg)
        device = distributed.device_for_rank(cfg.device)
        extractor = make_extractor(o.features, o.feature_layer, o.feature_weights)
        extractor.to(device)
        with torch.no_grad():
            channels = int(extractor(torch.zeros(1, 1, o.max_res, o.max_res, device=device), o.feature_layer).shape[1])
        card = cls.card_for(cfg, len(files))
        card.extra.update(extractor=extractor.config(), feature_channels=channels)
        det = cls.build(card)
        det.extractor.load_state_dict(extractor.state_dict())
        det.to(device)
        store = VolumeStore(files, o.max_res, card.slice_axis, cfg.cache_gb)
        amp = cfg.amp and device.type == "cuda"
        state: dict[str, Stateful] = {"features": det.extractor}
        phases: list[Phase] = []
        # 1. perceptual features (fpi-vgg19: self-supervised FPI training on the training slices)
        if o.features == "fpi-vgg19" and not o.feature_weights:
            from mood_detector.models.dpa.pretrain import feature_phase

            assert isinstance(det.extractor, VGG19Features)
            task = FPIConfig.for_kind(cfg.kind, "discrete")
            phase, objects = feature_phase(det.extractor, o.feature_layer, store, task, o.feature_epochs,
                                           cfg.batch_size, o.feature_lr, cfg.seed, device, cfg.max_batches_per_pair,
                                           cfg.workers)
            phases.append(phase)
            state.update(objects)
        # 2. progressive growing of the autoencoder, after the feature epochs
        trainer = _Trainer(det, o, cfg, store, device, amp)
        state.update({"ae": det.ae, "opt": trainer.opt})
        engine = Engine(run_dir, cfg, state, resume_enabled=cfg.resume, device=device)
        trainer.opt.prepare = engine.optimizer  # each stage's fresh optimiser sums the ranks' gradients
        start = engine.resume()
        engine.run(phases + trainer.phases(first=phases[0].epochs.stop if phases else 0), start)
        det.extractor.freeze()
        det.ae.eval()

        # 3. statistics of the final layer (kept; feature_norm=channel only) and score calibration
        if det.loss.normalised:
            det.final_stats.mean.copy_(trainer.stats(o.max_res).mean)
            det.final_stats.std.copy_(trainer.stats(o.max_res).std)
        det.eval()
        s_scale, p_scale = calibrate(det, store, o, cfg)
        det.score_scale, det.pixel_scale = s_scale, p_scale
        det.card.extra.update({"score_scale": s_scale, "pixel_scale": p_scale})
        log.info("DPA calibration: score_scale %.5g, pixel_scale %.5g", s_scale, p_scale)
        return det


def _features_note(kind: str) -> str:
    return {
        "fpi-vgg19": "VGG19 (torchvision layout) trained by this package on the training slices with the FPI "
                     "self-supervised task; ImageNet weights are unavailable offline",
        "random-vgg19": "VGG19 with torchvision's random initialisation (seed 432), not trained",
        "vgg19": "VGG19 weights supplied by the user (--feature-weights)",
        "fpi-encoder": "encoder blocks of a trained FPI model of this package (--feature-weights)",
    }.get(kind, kind)


def _slice_batches(store: VolumeStore, cfg: TrainConfig, seed: int, min_mean: float, device: torch.device,
                   max_batches: int = 0) -> Iterator[torch.Tensor]:
    """Training slices (N, 1, S, S) on ``device`` with small-area slices removed (deterministic order)."""
    order = [int(i) for i in np.random.default_rng([cfg.seed, seed]).permutation(len(store))]
    loader = slice_loader(store, order, cfg.batch_size, seed=seed, workers=0,
                          max_batches_per_volume=cfg.max_batches_per_pair)
    n = 0
    for xb in loader:
        xb = xb.to(device)
        xb = xb[keep_mask(xb, min_mean)]
        if xb.shape[0] == 0:
            continue
        yield xb
        n += 1
        if max_batches and n >= max_batches:
            return


def count_batches(store: VolumeStore, batch_size: int, max_batches_per_volume: int = 0) -> int:
    """Batches :func:`slice_loader` yields per epoch (non-empty slices per volume, batched, capped)."""
    total = 0
    for i in range(len(store)):
        a = store.slices(i)
        n = int(nonempty(a).sum())
        b = math.ceil(n / batch_size)
        total += min(b, max_batches_per_volume) if max_batches_per_volume else b
    return total


@torch.no_grad()
def calibrate(det: DPADetector, store: VolumeStore, o: DPAOptions, cfg: TrainConfig) -> tuple[float, float]:
    """Scales of the [0, 1] mapping: the ``calib_quantile`` of raw slice scores and raw pixel values over
    (up to ``stats_batches``) training batches."""
    images, pixels = [], []
    rng = np.random.default_rng(cfg.seed)
    dtype = next(det.ae.parameters()).dtype  # float32; float64 in the fixed-seed test
    for x in _slice_batches(store, cfg, 777, o.min_mean, det.device, o.stats_batches):
        s, p = det.raw_scores(x.to(dtype))
        images.append(s.cpu().numpy())
        flat = p.flatten().cpu().numpy()
        if flat.size > 200_000:
            flat = rng.choice(flat, 200_000, replace=False)
        pixels.append(flat)
    if not images:
        raise ValueError(f"no training slice has mean intensity above min_mean={o.min_mean}; "
                         "lower it with --opt min_mean=0")
    return quantile_scale(images, o.calib_quantile), quantile_scale(pixels, o.calib_quantile)


class _Trainer:
    """The progressive-growing loop (kept out of :meth:`DPADetector.fit` for readability)."""

    def __init__(self, det: DPADetector, o: DPAOptions, cfg: TrainConfig, store: VolumeStore,
                 device: torch.device, amp: bool) -> None:
        self.det, self.o, self.cfg, self.store, self.device, self.amp = det, o, cfg, store, device, amp
        self.schedule = growth_schedule(o.start_res, o.max_res, o.stage_epochs, cfg.epochs)
        self.loss = PerceptualLoss(det.extractor, o.feature_norm)
        self.lr = DPADetector.learning_rate(cfg)
        self.opt = _StageOptimiser(self.lr)
        self.first = 0

    def layer(self, res: int) -> str:
        return self.det.extractor.shallower(self.o.feature_layer, int(math.log2(self.o.max_res // res)))

    def stats(self, res: int) -> FeatureStats:
        """Feature statistics of resolution ``res``'s layer (computed once, deterministically)."""
        key = (res, self.layer(res))
        if key not in self.loss.stats:
            batches = (resize(x, res) for x in _slice_batches(self.store, self.cfg, 555, self.o.min_mean,
                                                              self.device, self.o.stats_batches))
            self.loss.stats[key] = compute_stats(self.det.extractor, key[1], batches, self.device)
        return self.loss.stats[key]

    def phases(self, first: int) -> list[Phase]:
        """The engine phases of the growth schedule, from global epoch ``first`` on (after the feature
        epochs); each counts the growth epochs from 1."""
        bpe = count_batches(self.store, self.cfg.batch_size, self.cfg.max_batches_per_pair)
        if bpe == 0:
            raise ValueError("no training batches: are all training volumes empty?")
        total = sum(ph.epochs for ph in self.schedule)
        out, begin = [], first
        for ph in self.schedule:
            epochs = range(begin, begin + ph.epochs)
            out.append(Phase(f"dpa r{ph.res}", epochs, self._batches(), self._step(ph, epochs.start, bpe),
                             offset=first, total=total, lr=lambda: self.lr,
                             log_name=self._log_name(ph, epochs.start, bpe),
                             empty=f"no training slice has mean intensity above min_mean={self.o.min_mean}; "
                                   "lower it with --opt min_mean=0"))
            begin = epochs.stop
        self.first = first
        return out

    def _fade_steps(self, ph: GrowthStage, bpe: int) -> int:
        # the fade lasts `fade` of a stage (of the phase itself when shorter), so extending --epochs and
        # resuming replays the same schedule
        return int(round(self.o.fade * min(self.o.stage_epochs, ph.epochs) * bpe)) if ph.fade else 0

    def _log_name(self, ph: GrowthStage, start: int, bpe: int) -> Callable[[int], str]:
        return lambda epoch: f"r{ph.res}" + ("-fade" if (epoch - start) * bpe < self._fade_steps(ph, bpe) else "")

    def _batches(self) -> Callable[[int], Iterable[torch.Tensor]]:
        def batches(epoch: int) -> Iterable[torch.Tensor]:
            self.det.extractor.freeze()  # after its pre-training, if any
            ph = self._current = self._schedule_phase(epoch - self.first)
            if self.loss.normalised:
                self.stats(ph.res)
                if ph.fade:
                    self.stats(ph.res // 2)
            self.det.ae.train()
            local = epoch - self.first  # the growth schedule's epoch: its streams do not depend on pre-training
            order = [int(i) for i in np.random.default_rng([self.cfg.seed, local]).permutation(len(self.store))]
            loader = slice_loader(self.store, order, self.cfg.batch_size, seed=self.cfg.seed * 1_000_003 + local,
                                  workers=self.cfg.workers, max_batches_per_volume=self.cfg.max_batches_per_pair,
                                  pin_memory=self.device.type == "cuda")
            # small-area slices removed here, from whole batches (under torchrun the engine then gives each rank
            # its part; a batch left empty is skipped by the step, on every rank alike)
            return (x[keep_mask(x, self.o.min_mean)] for x in (xb.to(self.device, non_blocking=True) for xb in loader))
        return batches

    def _schedule_phase(self, local: int) -> GrowthStage:
        begin = 0
        for ph in self.schedule:
            if local < begin + ph.epochs:
                return ph
            begin += ph.epochs
        raise IndexError(local)

    def _step(self, ph: GrowthStage, start: int, bpe: int) -> Callable[[torch.Tensor, int, int], Step | None]:
        o, ae = self.o, self.det.ae
        fade_steps = self._fade_steps(ph, bpe)
        layer, prev_layer = self.layer(ph.res), (self.layer(ph.res // 2) if ph.fade else None)

        def train_step(xb: torch.Tensor, epoch: int, index: int) -> Step | None:
            g = (epoch - start) * bpe + index  # step within the phase
            fading = g < fade_steps
            alpha = min(1.0, (g + 1) / fade_steps) if fading else 1.0
            opt = self.opt.for_stage((ph.res, "fade" if fading else "stab"), ae)
            # in the network's dtype (float32; float64 in the fixed-seed test); small-area slices already removed
            x = xb.to(self.device, next(ae.parameters()).dtype, non_blocking=True)
            if x.shape[0] == 0:
                return None
            x = mix_resolution(resize(x, ph.res), alpha)
            with autocast(self.device, self.amp):
                y = ae(x, ph.res, alpha)
                loss = self.loss.progressive(x, y, layer, prev_layer, alpha)
            opt.zero_grad(set_to_none=True)
            rank_share(loss).backward()
            opt.step()
            return Step({"loss": loss}, x.shape[0])
        return train_step


class _StageOptimiser:
    """A fresh Adam per growth stage (resolution, fade or stabilise); checkpointed with its stage, and restored
    on resume when training continues in that stage."""

    def __init__(self, lr: float) -> None:
        self.lr = lr
        self.stage: tuple[int, str] | None = None
        self.opt: torch.optim.Adam | None = None
        self._pending: dict[str, Any] | None = None
        #: applied to each new optimiser (the engine's :meth:`~Engine.optimizer` under torchrun)
        self.prepare: Callable[[torch.optim.Optimizer], Any] = lambda opt: opt

    def for_stage(self, stage: tuple[int, str], module: nn.Module) -> torch.optim.Adam:
        if stage != self.stage or self.opt is None:
            self.opt = torch.optim.Adam(module.parameters(), lr=self.lr)
            self.prepare(self.opt)
            if self._pending is not None and self._pending["stage"] == list(stage):
                self.opt.load_state_dict(self._pending["opt"])
            self._pending = None
            self.stage = stage
        return self.opt

    def state_dict(self) -> dict[str, Any] | None:
        if self.opt is None or self.stage is None:
            return None
        return {"stage": list(self.stage), "opt": self.opt.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._pending = state
