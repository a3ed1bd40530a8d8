"""SQUID detector: feature in-painting with a space-aware memory queue, scored by its reconstruction residual
(or, as in the paper, by its discriminator).

Slice-wise on 3D volumes (deviation: the thesis works on 2D chest X-rays): every slice is resampled to
128 x 128 in [0, 1] (``size``, default 128 whatever the kind), cut into 2 x 2 patches of 64^2 and
reconstructed by the student generator. The volume score is the harness' common aggregation of the per-slice
scores (:func:`mood_detector.inference.aggregate.sample_score`).

Slice score, option ``slice_signal``:

* ``residual`` (default; a deviation for CPU budgets, where the discriminator wins at once, ``d_loss`` ~1e-5,
  and its logit carries no signal): ``s / (s + tau_slice)`` with ``s`` the ``slice_quantile`` (0.99) quantile
  of the residual ``|x - recon|`` over the slice's foreground (``x > 0``) and ``tau_slice`` the median of ``s``
  over training slices (so a typical normal slice scores 0.5), calibrated like the pixel map. Chosen by a tiny
  measurement (docs/squid.md): pooled sample AUROC 0.69 against 0.48 for ``disc``;
* ``disc`` (the paper's): the discriminator's logit on the reconstruction, z-normalised with its mean and
  standard deviation over training slices, and the slice score ``1 - sigmoid(z)`` (thesis Eq. 3.5 as written
  in the authors' code: a low "real" logit means anomalous).

Both are calibrated after training, so the score can be switched at inference (the card's ``slice_signal``).

Slices that are entirely zero (background beyond the object) score 0: the training sampler skips them, so
the networks never saw them and their scores would be meaningless.

Pixel map (this package's extension; the authors' code has none), option ``pixel_map``:

* ``residual`` (default): ``r = |x - recon|``;
* ``gradres``: ``r = |x - recon| * g / mean(g)``, with ``g = |d D(recon) / d recon|`` the discriminator's
  input-gradient magnitude and ``mean(g)`` its mean over the slice (so the weight redistributes, but does not
  rescale, the residual).

Either map is sent to [0, 1) by ``r / (r + tau)`` (:func:`to_unit`), ``tau`` = the median over training slices of
each slice's 99th percentile of ``r`` (0.5 at ``r = tau``). The map is strictly increasing, and it stays so after
the float16 cast of the MOOD evaluator for ``r`` up to ~1000 tau, so rankings and AP are those of ``r``. (The
earlier ``1 - exp(-r / tau)`` rounded every ``r`` above ~7.6 tau to 1.0 in float16, tying strong anomalies with
strong normal edges.) Both ``tau`` are calibrated after training, so the map can be switched at inference.

Training follows the authors' public code: generator loss ``10 MSE(recon) + 0.01
MSE(teacher) + 0.001 distillation + 0.005 BCE(D(recon), 1)``, discriminator loss ``0.005 [BCE(D(x), 1) +
BCE(D(recon), 0)]``, the discriminator updated every step and the generator every 2nd step (``n_critic``);
Adam lr 1e-4, betas (0.5, 0.999); the generator with weight decay 1e-5 and cosine annealing of its learning
rate per epoch towards 0.2 lr (thesis Sec. 4.1.5: 1e-4 -> 2e-5; :func:`cosine_lr`); the discriminator at a
constant learning rate without weight decay (as in the authors' code). The memory queue is filled after every
generator step with the detached bottleneck features of that step's batch. With ``final_bn`` (default), the
BatchNorm statistics are then recomputed over batches that mix training volumes and the queue is refilled
(:meth:`SQUIDDetector.recompute_bn_store`; deviation: training batches each hold slices of one volume, so the
statistics would otherwise follow the last volumes seen). Augmentation (thesis Sec. 4.1.5 /
authors' data loader): random scaling in [0.95, 1.05] and translation up to 5% per slice.

``size`` other than 128 (a multiple of 64) is accepted for quick tests; the paper's model is 128.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.optim.swa_utils import update_bn
from tqdm import tqdm

from mood_detector import distributed
from mood_detector.detector import Detector, SliceScores, TrainConfig, check_multiple, parse_options_as
from mood_detector.errors import OptionError
from mood_detector.models.squid.networks import FILTERS, Discriminator, SquidGenerator, scaled
from mood_detector.training.calibration import quantile_scale
from mood_detector.training.data import VolumeStore, epoch_slices, nonempty, slice_loader
from mood_detector.training.engine import Engine, Phase, Step, rank_share
from mood_detector.training.loop import LossLog, at_least_float32, autocast, seed_everything
from mood_detector.weights import ModelCard

log = logging.getLogger(__name__)

DEFAULT_SIZE = 128       # the paper's input size
PAPER_LR = 1e-4          # SQUID's learning rate (the shared --lr default, 1e-3, is FPI's)
PIXEL_MAPS = ("residual", "gradres")
SLICE_SCORES = ("residual", "disc")
STAT_NAMES = ("logit_mean", "logit_std", "tau_residual", "tau_gradres", "tau_slice")
STAT_DEFAULTS = (0.0, 1.0, 1.0, 1.0, 1.0)
BN_BATCHES = 64  # mixed batches of training slices for the final BatchNorm recompute (as FPI's BN_BATCHES)


@dataclass
class SquidOptions:
    """SQUID hyperparameters (``--opt KEY=VALUE``); defaults are the authors' (their public code; thesis Sec. 4.1.5).

    Attributes:
        queue_slots: memory-queue items per patch position.
        mem_slots: items of each learned memory matrix in the student decoder.
        topk: Gumbel shrinkage k.
        mask_prob: masked-shortcut probability of keeping the in-painted feature (training only).
        grid: patches per side.
        n_critic: the generator is updated every ``n_critic``-th step, the discriminator every step.
        lr: learning rate of both networks (also set by ``--lr``; giving both is an error).
        weight_decay: generator weight decay.
        lr_min_factor: cosine annealing ends at ``lr_min_factor * lr``.
        w_recon, w_teacher, w_dist, w_gen, w_disc: loss weights.
        augment: random scale/translation of training slices.
        pixel_map: ``residual`` or ``gradres`` (see module docstring).
        slice_signal: ``residual`` (the ``slice_quantile`` quantile of the residual over the slice's foreground;
            a deviation for CPU budgets, see the module docstring) or ``disc`` (the paper's discriminator
            score).
        slice_quantile: the quantile of the ``residual`` slice score.
        final_bn: after training, recompute the BatchNorm statistics over mixed batches of training slices
            and refill the memory queue (:meth:`SQUIDDetector.recompute_bn_store`).
        calib_slices: training slices used for the score statistics.
    """

    queue_slots: int = 200
    mem_slots: int = 200
    topk: int = 5
    mask_prob: float = 0.95
    grid: int = 2
    n_critic: int = 2
    lr: float = PAPER_LR
    weight_decay: float = 1e-5
    lr_min_factor: float = 0.2
    w_recon: float = 10.0
    w_teacher: float = 0.01
    w_dist: float = 0.001
    w_gen: float = 0.005
    w_disc: float = 0.005
    augment: bool = True
    pixel_map: str = "residual"
    slice_signal: str = "residual"
    slice_quantile: float = 0.99
    final_bn: bool = True
    calib_slices: int = 2048

    def __post_init__(self) -> None:
        opts = self
        if opts.pixel_map not in PIXEL_MAPS:
            raise ValueError(f"squid pixel_map must be one of {PIXEL_MAPS}, got {opts.pixel_map!r}")
        if opts.slice_signal not in SLICE_SCORES:
            raise ValueError(f"squid slice_signal must be one of {SLICE_SCORES}, got {opts.slice_signal!r}")
        if not 0.0 < opts.slice_quantile <= 1.0:
            raise ValueError(f"squid slice_quantile must be in (0, 1], got {opts.slice_quantile}")
        if not 0.0 <= opts.mask_prob <= 1.0:
            raise ValueError(f"squid mask_prob must be in [0, 1], got {opts.mask_prob}")
        if opts.topk < 1 or opts.queue_slots < 1 or opts.mem_slots < 1 or opts.n_critic < 1 or opts.grid < 1:
            raise ValueError("squid topk, queue_slots, mem_slots, n_critic and grid must be positive")


def cosine_lr(lr: float, lr_min: float, epoch: int, epochs: int) -> float:
    """Cosine annealing from ``lr`` (epoch 0) towards ``lr_min`` (reached after ``epochs`` epochs), in closed
    form per epoch, so a run resumed with more epochs follows the longer schedule from where it stands."""
    return lr_min + (lr - lr_min) * 0.5 * (1.0 + math.cos(math.pi * epoch / max(1, epochs)))


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random scale in [0.95, 1.05] and translation up to 5% of the slice per image (bilinear, zero fill)."""
    n = x.shape[0]
    scale = 0.95 + 0.1 * torch.rand(n, generator=gen)
    shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * 0.05 * 2  # normalised coordinates span 2
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0 / scale
    theta[:, :, 2] = -shift / scale[:, None]
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def to_unit(raw: torch.Tensor, tau: float) -> torch.Tensor:
    """Raw pixel map (>= 0) -> [0, 1) by ``raw / (raw + tau)``: strictly increasing, 0.5 at ``raw = tau``, and still
    strictly increasing after a float16 cast (the MOOD evaluator's reading) for raw values up to ~1000 tau."""
    raw = raw.float().clamp_min(0.0)
    return raw / (raw + max(float(tau), 1e-12))


def foreground_quantile(res: torch.Tensor, x: torch.Tensor, q: float, chunk: int = 256) -> torch.Tensor:
    """Per slice, the ``q`` quantile of ``res`` (N, H, W) over the slice's foreground ``x > 0`` (x: (N, 1, H, W));
    0 for a slice without foreground. (Chunked: ``torch.nanquantile`` refuses inputs above 2^24 values.)"""
    vals = torch.where(x[:, 0] > 0, res.float(), torch.full_like(res, float("nan"), dtype=torch.float32)).flatten(1)
    out = torch.cat([torch.nanquantile(v, q, dim=1) for v in vals.split(chunk)]) if len(vals) else vals.new_zeros(0)
    return torch.nan_to_num(out, nan=0.0)


def mixed_slices(store: VolumeStore, n: int, seed: int) -> torch.Tensor:
    """Up to ``n`` non-empty training slices (k, 1, s, s), drawn evenly from every volume of ``store`` (at most
    ``ceil(n / volumes)`` each, without repeats) and put in one random order, so that consecutive runs of them
    mix volumes (unlike the training batches, which each hold slices of one volume)."""
    rng = np.random.default_rng([seed, 617])
    per = max(1, math.ceil(n / len(store)))
    picks = []
    for i in range(len(store)):
        a = store.slices(i)
        keep = np.flatnonzero(nonempty(a))
        if keep.size:
            sel = np.sort(rng.choice(keep, min(per, keep.size), replace=False))
            picks.append(torch.from_numpy(a[sel].astype(np.float32)))
    if not picks:
        raise ValueError("no non-empty training slices")
    x = torch.cat(picks)[:, None]
    return x[torch.from_numpy(rng.permutation(len(x)))][:n]


class SquidLossLog(LossLog):
    """The common loss log with SQUID's loss terms as extra columns (``loss`` = total generator loss)."""

    FIELDS = LossLog.FIELDS + ("recon", "teacher", "dist", "adv", "d_loss")


class SQUIDDetector(Detector):
    """SQUID behind the common interface: slice score and pixel map from the residual (slice score from the
    discriminator as an option)."""

    name = "squid"
    options_cls = SquidOptions
    default_lr = PAPER_LR
    #: through the training engine; the memory queue takes every rank's features in rank order (the whole
    #: batch's, as in one process), so it is the same on every rank
    supports_distributed = True

    def __init__(self, card: ModelCard, gen: SquidGenerator, disc: Discriminator, opts: SquidOptions) -> None:
        super().__init__(card)
        self.gen, self.disc, self.opts = gen, disc, opts
        self.pixel_map, self.slice_signal = opts.pixel_map, opts.slice_signal
        self.stats = torch.tensor([float(card.extra.get(k, d)) for k, d in zip(STAT_NAMES, STAT_DEFAULTS)])

    # --- construction and state -------------------------------------------------------------------------
    @classmethod
    def build(cls, card: ModelCard) -> "SQUIDDetector":
        values = {f.name: card.extra[f.name] for f in fields(SquidOptions) if f.name in card.extra}
        values.setdefault("slice_signal", "disc")  # cards from before the option: the discriminator was the score
        opts = parse_options_as(SquidOptions, values, cls.name)
        gen = SquidGenerator(card.width, card.size, opts.grid, opts.queue_slots, opts.mem_slots, opts.topk,
                             opts.mask_prob)
        return cls(card, gen, Discriminator(card.size), opts)

    def modules(self) -> dict[str, nn.Module]:
        return {"gen": self.gen, "disc": self.disc}

    def extra_tensors(self) -> dict[str, torch.Tensor]:
        return {"stats": self.stats.clone()}

    def load_extra_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        if "stats" in tensors:
            stats = tensors["stats"].float().cpu().clone()
            # weights from before tau_slice hold fewer statistics: the rest from the card (or the defaults)
            self.stats = torch.cat([stats, self.stats[stats.numel():]])

    # --- scoring -------------------------------------------------------------------------------------------
    def _disc_grad(self, recon: torch.Tensor) -> torch.Tensor:
        """|d D(recon) / d recon| per pixel (works inside the predictor's inference mode)."""
        with torch.inference_mode(False), torch.enable_grad():
            r = at_least_float32(recon.detach().clone()).requires_grad_(True)
            (grad,) = torch.autograd.grad(self.disc(r).sum(), r)
        return grad.abs()

    def raw_maps(self, x: torch.Tensor, recon: torch.Tensor, names: Sequence[str]) -> dict[str, torch.Tensor]:
        """Uncalibrated pixel maps (N, H, W) named in ``names`` (``residual``, ``gradres``)."""
        res = (x - recon).abs()[:, 0].float()
        out = {"residual": res}
        if "gradres" in names:
            g = self._disc_grad(recon)[:, 0]
            out["gradres"] = res * g / g.mean(dim=(1, 2), keepdim=True).clamp_min(1e-12)
        return {k: out[k] for k in names}

    def score_slices(self, x: torch.Tensor) -> SliceScores:
        size = x.shape[-1]
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        recon = self.gen(x).recon
        raw = self.raw_maps(x, recon, [self.pixel_map])[self.pixel_map]
        if self.slice_signal == "disc":
            logit = self.disc(recon).float()
            mu, sigma = float(self.stats[0]), float(self.stats[1])
            slice_score = 1.0 - torch.sigmoid((logit - mu) / sigma)
        else:
            res = raw if self.pixel_map == "residual" else (x - recon).abs()[:, 0].float()
            slice_score = to_unit(foreground_quantile(res, x, self.opts.slice_quantile), float(self.stats[4]))
        tau = float(self.stats[2 + PIXEL_MAPS.index(self.pixel_map)])
        pixel = to_unit(raw, tau)
        empty = x.flatten(1).amax(dim=1) <= 0
        slice_score = torch.where(empty, torch.zeros_like(slice_score), slice_score)
        pixel = pixel * (~empty).to(pixel.dtype)[:, None, None]
        if pixel.shape[-1] != size:
            pixel = F.interpolate(pixel[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0]
        return SliceScores(pixel=pixel.clamp(0, 1), slice=slice_score.clamp(0, 1))

    # --- training ------------------------------------------------------------------------------------------
    @classmethod
    def card_for(cls, cfg: TrainConfig, n_files: int) -> ModelCard:
        card = replace(super().card_for(cfg, n_files), arch="squid", size=int(cfg.size or DEFAULT_SIZE))
        card.extra["lr"] = cls.options(cfg).lr  # --lr or the option
        return card

    @classmethod
    def options(cls, cfg: TrainConfig) -> SquidOptions:
        """Options from ``cfg.options``; ``--lr``, when given, sets the option ``lr`` (the paper's 1e-4)."""
        values = dict(cfg.options)
        if cfg.lr is not None:
            if "lr" in values:
                raise ValueError("squid: give the learning rate once, as --lr or as --opt lr, not both")
            values["lr"] = str(cfg.lr)
        return parse_options_as(SquidOptions, values, cls.name)

    @classmethod
    def check_config(cls, cfg: TrainConfig) -> None:
        """The slice size must split into ``grid`` x ``grid`` patches that the encoder halves 5 times (a multiple
        of 64 for the default grid 2; 128 in the paper); known and valid options."""
        opts = cls.options(cfg)
        size = int(cfg.size or DEFAULT_SIZE)
        check_multiple("--size", size, 32 * opts.grid,
                       f"squid cuts slices into {opts.grid} x {opts.grid} patches of a multiple of 32")
        # the in-painting block's attention: (bottleneck channels / 4) x feat^2 values over 8 heads (InpaintBlock)
        feat, heads = size // opts.grid // 16, 8
        mid = max(1, scaled(FILTERS[-1], cfg.width) // 4)
        if mid * feat * feat % heads:
            c = next(c for c in range(mid, mid + heads + 1) if c * feat * feat % heads == 0)
            raise OptionError("--width", f"{cfg.width:g} gives squid {mid} x {feat}^2 in-painting features, not "
                                         f"divisible by its {heads} attention heads; use e.g. --width "
                                         f"{4 * c / FILTERS[-1]:g}, or --size {size * 2}")

    @classmethod
    def fit(cls, files: Sequence[Path], cfg: TrainConfig, run_dir: Path) -> "SQUIDDetector":
        run_dir = Path(run_dir)
        opts = cls.options(cfg)
        aug_gen = seed_everything(cfg.seed)
        card = cls.card_for(cfg, len(files))
        det = cls.build(card)
        device = distributed.device_for_rank(cfg.device)
        det.to(device)
        gen, disc = det.gen, det.disc
        dtype = next(gen.parameters()).dtype  # torch's default dtype (float32; float64 in the fixed-seed test)
        opt_g = torch.optim.Adam(gen.parameters(), lr=opts.lr, betas=(0.5, 0.999), eps=1e-7,
                                 weight_decay=opts.weight_decay)
        opt_d = torch.optim.Adam(disc.parameters(), lr=opts.lr, betas=(0.5, 0.999))
        engine = Engine(run_dir, cfg, {"gen": gen, "disc": disc, "opt_g": opt_g, "opt_d": opt_d},
                        resume_enabled=cfg.resume, log_class=SquidLossLog, device=device)
        start = engine.resume()
        store = VolumeStore(files, card.size, card.slice_axis, cfg.cache_gb)
        amp = cfg.amp and device.type == "cuda"
        bce = F.binary_cross_entropy_with_logits

        def batches(epoch: int) -> Iterable[torch.Tensor]:
            gen.train()
            disc.train()
            epoch_seed = cfg.seed * 1_000_003 + epoch  # per-epoch streams: resuming reproduces them
            torch.manual_seed(epoch_seed)
            aug_gen.manual_seed(epoch_seed)
            lr = cosine_lr(opts.lr, opts.lr * opts.lr_min_factor, epoch, cfg.epochs)
            for group in opt_g.param_groups:
                group["lr"] = lr
            loader = epoch_slices(store, epoch, cfg.seed, cfg.batch_size, cfg.workers, cfg.max_batches_per_pair,
                                  device)
            # augmented here, whole batches (under torchrun the engine then gives each rank its part)
            return (_augment(x.to(device, dtype, non_blocking=True), aug_gen) if opts.augment else x for x in loader)

        def train_step(x: torch.Tensor, epoch: int, step: int) -> Step:
            """The discriminator every step; the generator every ``n_critic``-th, against the updated
            discriminator. Generator losses are averaged over the generator's steps."""
            x = x.to(device, dtype, non_blocking=True)
            gen_step = step % opts.n_critic == 0
            with autocast(device, amp), torch.set_grad_enabled(gen_step):
                out = gen(x)
            opt_d.zero_grad(set_to_none=True)
            with autocast(device, amp):
                real, fake = at_least_float32(disc(x)), at_least_float32(disc(out.recon.detach()))
            d_loss = opts.w_disc * (bce(real, torch.ones_like(real)) + bce(fake, torch.zeros_like(fake)))
            rank_share(d_loss).backward()
            opt_d.step()
            if not gen_step:
                return Step({"d_loss": d_loss}, x.shape[0])
            opt_g.zero_grad(set_to_none=True)
            with autocast(device, amp):
                adv_logit = at_least_float32(disc(out.recon))
            terms = {"recon": F.mse_loss(at_least_float32(out.recon), x),
                     "teacher": F.mse_loss(at_least_float32(out.teacher), x),
                     "dist": at_least_float32(out.dist), "adv": bce(adv_logit, torch.ones_like(adv_logit))}
            loss = (opts.w_recon * terms["recon"] + opts.w_teacher * terms["teacher"]
                    + opts.w_dist * terms["dist"] + opts.w_gen * terms["adv"])
            rank_share(loss).backward()
            opt_g.step()
            gen.commit()  # copy this batch's features (all ranks' parts, in rank order) into the memory queue
            return Step({"loss": loss, **terms, "d_loss": d_loss}, x.shape[0])

        engine.run([Phase("squid", range(cfg.epochs), batches, train_step, log_name=lambda epoch: "train",
                          lr=lambda: opt_g.param_groups[0]["lr"])], start)
        if opts.final_bn:  # after the last checkpoint: a resumed run continues from the training statistics
            det.recompute_bn_store(store, cfg.batch_size, cfg.seed)
        det.calibrate(store, cfg)
        return det.eval()

    # --- final BatchNorm statistics ---------------------------------------------------------------------------
    @torch.no_grad()
    def recompute_bn(self, files: Sequence[Path], batches: int = BN_BATCHES, seed: int = 0) -> "SQUIDDetector":
        """``export --bn-data``: recompute the BatchNorm statistics and refill the memory queue from the volumes
        ``files`` (the training data), as training ends (:meth:`recompute_bn_store`, batches of the card's
        training batch size), then recompute the score statistics (:meth:`calibrate`) from them, as training
        does: they were measured on the discriminator's logits and the reconstructions that the new statistics
        change."""
        cfg = TrainConfig(detector=self.name, kind=self.card.kind, size=self.size, width=self.card.width,
                          batch_size=int(self.card.extra.get("batch_size", 16)), seed=seed)
        store = VolumeStore(files, self.size, self.slice_axis)
        self.recompute_bn_store(store, cfg.batch_size, seed, batches)
        self.calibrate(store, cfg)
        return self.eval()

    @torch.no_grad()
    def recompute_bn_store(self, store: VolumeStore, batch_size: int, seed: int = 0,
                           batches: int = BN_BATCHES) -> "SQUIDDetector":
        """Recompute every BatchNorm statistic over up to ``batches`` batches of ``batch_size`` training slices
        that mix volumes (:func:`mixed_slices`), and refill the memory queue to match.

        Training batches each hold slices of one volume (``SliceBatches``), so the running statistics
        (momentum 0.1) follow the last 1-3 volumes seen, and the queue holds the training-mode features of the
        last few batches, normalised by their one-volume batch statistics while it is queried at inference
        with features normalised by the running statistics. In order:

        1. the generator's BatchNorm statistics are recomputed (``update_bn``, an equal-weight average over the
           batches) with the generator in training mode, masked shortcuts included, as it was trained (the
           features it stages for the queue are dropped). The layers after the shortcuts learned with batch
           statistics that include the 5% of positions passing the un-memorised feature. Measured on a tiny
           trained model (docs/squid.md), statistics recomputed with the shortcuts off raised the held-out
           reconstruction MSE from 0.024 to 0.029, and with them on it stayed at 0.024;
        2. the queue is **refilled** (not left as it is) with the inference-mode bottleneck features of
           ``queue_slots`` mixed slices (repeated if there are fewer). The queue is a lookup of normal
           features, not learned state: refilled, its items are normalised exactly as the queries are, and they
           come from all volumes rather than the last few batches. The encoder and the bottleneck come before
           the shortcuts and the queue, so these features are final after step 1. (On the tiny model the
           reconstruction did not depend on the queue's contents at all, because the decoder's memories replace
           the in-painted features; the refill is for consistency, not a measured gain);
        3. the generator's statistics are recomputed once more, because the layers after the queue read-out see
           new read-outs;
        4. the discriminator's statistics are recomputed on the inference-mode reconstructions of the same
           batches: at scoring time it only sees reconstructions, and in training it normalised its all-fake
           batches by their own statistics, which this reproduces. The logit statistics are calibrated
           afterwards.

        The global random state is left as it was (the shortcut masks draw from a forked generator seeded with
        ``seed``).
        """
        pool = mixed_slices(store, batches * batch_size, seed)
        chunks = list(pool.split(batch_size))
        if len(chunks) > 1 and len(chunks[-1]) < batch_size:
            chunks = chunks[:-1]  # update_bn weights every batch equally: no small, noisy last batch
        chunks = [c.to(self.device, next(self.gen.parameters()).dtype) for c in chunks]
        gen, disc = self.gen, self.disc
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(seed)
            update_bn(chunks, gen)
            gen.inpaint._pending = None  # staged queue features of a training-mode forward: not committed
            gen.eval()
            self.refill_queue(pool)
            update_bn(chunks, gen)
            gen.inpaint._pending = None
        gen.eval()
        recons = [gen(c).recon for c in chunks]
        update_bn(recons, disc)
        disc.eval()
        self.card.extra["bn_recomputed"] = (f"{len(chunks)} batches of {len(chunks[0])} slices mixed from "
                                            f"{len(store)} volumes; queue refilled")
        log.info("squid: BatchNorm statistics recomputed over %d mixed batches; memory queue refilled",
                 len(chunks))
        return self

    @torch.no_grad()
    def refill_queue(self, slices: torch.Tensor, batch_size: int = 64) -> None:
        """Replace the memory queue's items by the inference-mode bottleneck features of ``slices`` (k, 1, s, s),
        in order, cycling through them when there are fewer than the queue's slots."""
        gen = self.gen
        block, queue = gen.inpaint, gen.inpaint.queue
        was = gen.training
        gen.eval()
        idx = torch.arange(queue.slots) % len(slices)
        queue.ptr.zero_()
        queue.filled.zero_()
        for part in idx.split(batch_size):
            feats, _ = gen.encode(slices[part].to(self.device, next(gen.parameters()).dtype))
            queue.push(block.reduce(feats).reshape(len(part), block.positions, block.dim))
        gen.train(was)

    # --- score statistics -----------------------------------------------------------------------------------
    @torch.no_grad()
    def calibrate(self, store: VolumeStore, cfg: TrainConfig) -> dict[str, float]:
        """Mean/std of the discriminator logit on reconstructions of (up to ``calib_slices``) non-empty
        training slices, each pixel map's ``tau`` and the ``residual`` slice score's ``tau_slice`` (the median
        of its raw value); stored as extra tensors and in the card."""
        self.eval()
        n_vol = len(store)
        per_vol = max(1, math.ceil(self.opts.calib_slices / n_vol / cfg.batch_size))
        loader = slice_loader(store, list(range(n_vol)), cfg.batch_size, seed=cfg.seed + 424_242,
                              max_batches_per_volume=per_vol)
        logits: list[torch.Tensor] = []
        q99: dict[str, list[torch.Tensor]] = {m: [] for m in PIXEL_MAPS}
        slice_raw: list[torch.Tensor] = []
        count = 0
        for x in tqdm(loader, desc="squid calibration", unit="batch", leave=False):
            x = x.to(self.device, next(self.gen.parameters()).dtype)  # float32; float64 in the fixed-seed test
            recon = self.gen(x).recon
            logits.append(self.disc(recon).float().cpu())
            for name, raw in self.raw_maps(x, recon, PIXEL_MAPS).items():
                q99[name].append(torch.quantile(raw.flatten(1), 0.99, dim=1).cpu())
                if name == "residual":
                    slice_raw.append(foreground_quantile(raw, x, self.opts.slice_quantile).cpu())
            count += x.shape[0]
            if count >= self.opts.calib_slices:
                break
        if not logits:
            raise ValueError("no non-empty training slices for SQUID's score statistics")
        lg = torch.cat(logits).double()
        def median(values: list[torch.Tensor]) -> float:  # the lower median, as torch.median
            return quantile_scale(values, 0.5, floor=1e-6, method="lower")

        stats = {"logit_mean": float(lg.mean()), "logit_std": max(float(lg.std(unbiased=False)), 1e-6),
                 "tau_residual": median(q99["residual"]), "tau_gradres": median(q99["gradres"]),
                 "tau_slice": median(slice_raw)}
        self.stats = torch.tensor([stats[k] for k in STAT_NAMES], dtype=torch.float32)
        self.card.extra.update(stats)
        self.card.extra["calib_slices_used"] = int(lg.numel())
        log.info("squid score statistics over %d training slices: %s", lg.numel(), json.dumps(stats))
        return stats
