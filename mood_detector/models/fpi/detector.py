"""FPI detector: the wide residual encoder-decoder trained on the foreign-patch-interpolation task.

Training follows the paper (Sec. 2): Adam, lr 1e-3, 50 epochs; optional SWA phase of plain SGD with a
per-epoch cyclic learning rate falling from 1e-3 to 1e-4, the weights averaged at each epoch's minimum
(``torch.optim.swa_utils.AveragedModel``), BatchNorm statistics recomputed afterwards (``update_bn``).
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar, Iterable, Iterator, NamedTuple, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.optim.swa_utils import AveragedModel, update_bn

from mood_detector import distributed
from mood_detector.detector import Detector, Flag, SliceScores, TrainConfig, check_multiple
from mood_detector.errors import OptionError
from mood_detector.inference.aggregate import parse_slice_rule
from mood_detector.models.fpi.network import ENCODER, WideResEncoderDecoder
from mood_detector.tasks.augment import ContrastAugment, SourceIntensity, SourceShift
from mood_detector.tasks.fpi import CLASS_VALUES, FPIBatch, FPIConfig, fpi_pair, labels_to_classes, logits_to_score
from mood_detector.training import diagnostic
from mood_detector.training.budget import StepPlan, announce, plan_steps, summary
from mood_detector.training.data import PairBatches, VolumeStore, epoch_pairs, pair_loader
from mood_detector.training.engine import Engine, Phase, Step, rank_share
from mood_detector.training.loop import at_least_float32, autocast, load_best, load_checkpoint, save_best, seed_everything
from mood_detector.training.verdict import PATIENCE, BestTracker, verdict
from mood_detector.weights import ModelCard

log = logging.getLogger(__name__)

SWA_LR = (1e-4, 1e-3)  # (min, max) of the cyclic learning rate in the SWA phase (paper Sec. 2)
BN_BATCHES = 64        # FPI batches used to recompute BatchNorm statistics after SWA
TIMED_STEPS = 3        # optimiser steps timed (on a copy of the network) for the estimate before training
DIAGNOSTIC_CSV = "diagnostic.csv"
MODES = ("discrete", "continuous")  # the task's output: 5 classes (softmax, CE) or one channel (sigmoid, BCE)

#: the ``train`` flags of FPI's options (NSA's too: its training is FPI's)
FLAGS = (
    Flag("--mode", "mode", "The task's output: a 5-class discrete factor (softmax, CE) or a continuous factor "
                           "(sigmoid, BCE); the model card records it as its mode.", choices=MODES),
    Flag("--steps", "steps", "The budget in optimiser steps, whatever the number of volumes (fewer volumes: more "
                             "epochs over them); the epochs follow from it and the cosine schedule spans them. "
                             "0 = --epochs.", minimum=0),
    Flag("--patience", "patience", "Stop when the held-out probe loss has not improved over this many optimiser "
                                   "steps (and 3 epochs); the run keeps the weights of its best probe loss either "
                                   "way. 0 = never stop early.", minimum=0),
    Flag("--swa-epochs", "swa_epochs", "Extra SWA epochs (SGD, cyclic lr 1e-3..1e-4, per-epoch minima averaged); "
                                       "0 = off.", minimum=0),
    Flag("--batches-per-step", "batches_per_step",
         "Batches (of --batch-size, each from one volume pair) per optimiser step, split across torchrun "
         "processes; a multiple of their number. 0 = one per process. Fix it to get the same result whatever the "
         "number of processes.", minimum=0),
)


@dataclass(frozen=True)
class FPIOptions:
    """FPI options (``--opt KEY=VALUE``); the defaults are the paper's setting, except ``out_bias`` (measured in
    docs/fpi-cpu.md; ``--opt out_bias=0`` gives the reference network exactly). ``train --preset cpu`` sets several.

    Attributes:
        skips: U-Net-like skip connections in the network (this package's variant; see the network module).
        out_bias: a learnable output bias initialised to the class prior (the reference network has none and
            starts far above a constant predictor's loss; see the network module).
        contrast: probability of a random contrast remap per volume pair (:class:`ContrastAugment`; 0 = off).
        source_intensity: probability that the second source of a pair gets its own brightness/gamma change
            (:class:`SourceIntensity`; 0 = off, the paper's task).
        source_shift: probability per slice that the second source is translated in-plane, so its patch comes
            from another location (:class:`SourceShift`; 0 = off, the paper's same-location task).
        lr_schedule: ``constant`` (the paper: Adam at ``--lr``) or ``cosine`` (decay to 1% of ``--lr`` over
            ``--epochs``, for short CPU budgets).
        equal_tol: source pixels with ``|A - B| <= equal_tol`` get label 0 (paper Eq. 5 with a tolerance; the
            paper leaves it open); -1 = the kind's default (brain 0, abdomen 1e-3).
        slice_score: how the predictor makes a slice score from the pixel scores: ``mean`` (the reference
            code's rule) or ``top:Q`` (mean of the highest fraction Q; see ``inference.aggregate``).
        final_bn: after training without SWA, recompute the BatchNorm statistics over one batch from each of up
            to 64 volume pairs (as the SWA phase does): training batches each come from one pair, so the running
            statistics otherwise follow the last pairs seen.
        train_axes: ``model`` (slices along the kind's slice axis, the paper) or ``all`` (each volume pair is
            sliced along a random one of the three axes, in either in-plane orientation), for a model that
            ``predict`` then runs along all three axes and averages (the card's ``train_axes`` sets the
            predictor's default; ``predict --axes`` overrides it).
        mode: the task's output (``train --mode``): ``discrete`` (five classes of the foreign fraction, softmax
            and cross-entropy) or ``continuous`` (the fraction itself, sigmoid and binary cross-entropy); the
            model card records it as its ``mode``.
        swa_epochs: extra SWA epochs after training (``train --swa-epochs``; 0 = off).
        batches_per_step: loader batches (of ``--batch-size`` each) per optimiser step, split across the
            distributed ranks (``train --batches-per-step``; a multiple of the world size; 0 = the world size, one
            per rank). Fixing it makes the run independent of the number of processes.
        disk_cache: ``on``: decode every training volume once into ``<run_dir>/cache`` as float16 ``.npy`` files
            that the data-loader workers memory-map (shared pages instead of one private cache per worker);
            ``off``: the RAM cache only; ``auto``: on when ``--workers`` > 0.
        probe_volumes: training volumes held out (the last ones by name) to measure the task each epoch
            (:mod:`mood_detector.training.diagnostic`); only when it is at least 2 and at least 4x as many
            remain, else the probe set is made from the first training volumes (in-sample); 0 = no probe.
        steps: the training budget in optimiser steps (``train --steps``; 0 = ``--epochs`` sets it): the epochs
            needed are counted in advance and the last one is cut short, so the number of volumes does not change
            the amount of training (:mod:`mood_detector.training.budget`).
        patience: stop when the probe loss has not improved over this many optimiser steps (and at least 3
            epochs); the run ends with its best weights by probe loss (``best.pt`` in the run folder) either way
            (``train --patience``; 0 = never stop early; needs the probe, not used with SWA).
    """

    skips: bool = False
    out_bias: bool = True
    contrast: float = 0.0
    source_intensity: float = 0.0
    source_shift: float = 0.0
    lr_schedule: str = "constant"
    probe_volumes: int = 2
    equal_tol: float = -1.0
    slice_score: str = "mean"
    final_bn: bool = True
    train_axes: str = "model"
    mode: str = "discrete"
    swa_epochs: int = 0
    batches_per_step: int = 0
    disk_cache: str = "auto"
    steps: int = 0
    patience: int = PATIENCE

    def __post_init__(self) -> None:
        for name in ("contrast", "source_intensity", "source_shift"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {getattr(self, name)}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}")
        parse_slice_rule(self.slice_score)
        if self.mode not in MODES:
            raise ValueError(f"mode must be 'continuous' or 'discrete', got {self.mode!r}")
        if self.train_axes not in ("model", "all"):
            raise ValueError(f"train_axes must be 'model' or 'all', got {self.train_axes!r}")
        if self.probe_volumes < 0:
            raise ValueError(f"probe_volumes must be >= 0, got {self.probe_volumes}")
        if self.steps < 0 or self.patience < 0:
            raise ValueError(f"steps and patience must be >= 0, got {self.steps}, {self.patience}")
        if self.swa_epochs < 0 or self.batches_per_step < 0:
            raise ValueError(f"swa_epochs and batches_per_step must be >= 0, got {self.swa_epochs}, "
                             f"{self.batches_per_step}")
        if self.disk_cache not in ("auto", "on", "off"):
            raise ValueError(f"disk_cache must be auto, on or off, got {self.disk_cache!r}")


class PairBatch(NamedTuple):
    """One piece of an optimiser step: slices ``a`` and ``b`` (k, H, W) of a volume pair from pair stream
    ``stream``."""

    stream: int
    a: torch.Tensor
    b: torch.Tensor


class _Averaged:
    """The SWA average of the network's weights, made at the first SWA epoch; checkpointed by the engine."""

    def __init__(self, net: nn.Module) -> None:
        self.net, self.model = net, None

    def update(self, net: nn.Module) -> None:
        if self.model is None:
            self.model = AveragedModel(net)
        self.model.update_parameters(net)

    def state_dict(self) -> dict | None:  # type: ignore[type-arg]
        return self.model.state_dict() if self.model is not None else None

    def load_state_dict(self, state: dict) -> None:  # type: ignore[type-arg]
        self.model = AveragedModel(self.net)
        self.model.load_state_dict(state)


class FPIDetector(Detector):
    """Foreign Patch Interpolation; pixel score = sigmoid output (continuous) or expected foreign fraction
    sum_c p_c a_c (discrete, 5 classes)."""

    name = "fpi"
    supports_distributed = True  # fit runs under torchrun (the training engine); see fit's docstring
    supports_presets = True
    gives_verdict = True
    # fully convolutional, trained on non-empty slices only: the CPU path may skip empty slices and crop
    # batches to the foreground box aligned to the network's stride (mood_detector.inference.fastpath)
    skip_empty_slices = True
    supports_crop = True
    supports_finetune = True  # task_loss: the synthetic task (predict --adapt finetune)
    #: the ``--opt`` dataclass (a subclass's task adds its own fields)
    options_cls: ClassVar[type[FPIOptions]] = FPIOptions
    flags = FLAGS
    former_config_fields = {"swa_epochs": 0, "batches_per_step": 0, "disk_cache": False, "mode": "discrete"}

    def __init__(self, card: ModelCard, net: WideResEncoderDecoder) -> None:
        super().__init__(card)
        self.net = net

    @classmethod
    def build(cls, card: ModelCard) -> "FPIDetector":
        return cls(card, WideResEncoderDecoder(card.arch, cls.output_channels(card), card.width,
                                               skips=bool(card.extra.get("skips", False)),
                                               out_bias=bool(card.extra.get("out_bias", False))))

    @staticmethod
    def output_channels(card: ModelCard) -> int:
        """The network's output channels: the card's ``extra.classes`` (5 for the ``discrete`` mode, 1 for
        ``continuous``)."""
        return int(card.extra.get("classes", len(CLASS_VALUES) if card.mode == "discrete" else 1))

    def modules(self) -> dict[str, nn.Module]:
        return {"net": self.net}

    @property
    def crop_stride(self) -> int:
        return int(self.net.stride)

    def to(self, device: torch.device | str) -> "FPIDetector":
        super().to(device)
        if self.device.type == "cuda":
            self.net.to(memory_format=torch.channels_last)
        return self

    def score_slices(self, x: torch.Tensor) -> SliceScores:
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        return SliceScores(pixel=logits_to_score(self.net(x)))

    # --- training ----------------------------------------------------------------------------------
    @staticmethod
    def task_config(card: ModelCard) -> FPIConfig:
        return FPIConfig.for_kind(card.kind, card.mode, float(card.extra.get("equal_tol", -1.0)))

    @staticmethod
    def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """BCE against the soft foreign fraction (C=1, Eq. 6) or CE over the 5 classes (Eq. 7)."""
        logits = at_least_float32(logits)
        if logits.shape[1] == 1:
            return F.binary_cross_entropy_with_logits(logits[:, 0], labels.to(logits.dtype))
        return F.cross_entropy(logits, labels_to_classes(labels))

    def task_loss(self, a: torch.Tensor, b: torch.Tensor, step: int, gen: torch.Generator, seed: int,
                  device: torch.device | str) -> torch.Tensor:
        """:meth:`loss` of :attr:`net` on the task's examples (:meth:`_step_batch`, :meth:`task_config`: a
        subclass's task) from the pair-batch ``(a, b)`` as stream 0 of epoch 0 at ``step``."""
        batch = self._step_batch([(a, b)], [0], self.task_config(self.card), gen, seed, 0, step, device)
        return self.loss(self.net(batch.images.to(device)), batch.labels.to(device))

    @classmethod
    def check_config(cls, cfg: TrainConfig) -> None:
        """Slices must tile the network's stride-2 stages (16 for brain, 32 for abdom); a known mode; known
        options."""
        arch = cfg.kind_cfg.name
        stride = 2 ** sum(1 for _, _, s in ENCODER[arch] if s == 2)
        check_multiple("--size", cfg.net_size, stride, f"the total stride of the fpi {arch} network")
        mode = cfg.options.get("mode", cls.options_cls.mode)
        if mode not in MODES:
            raise OptionError("--mode", f"{mode!r} is not an fpi mode; choose discrete or continuous")
        cls.options(cfg)

    @classmethod
    def card_for(cls, cfg: TrainConfig, n_files: int) -> ModelCard:
        """The common card with the ``mode`` option as the card's ``mode`` (not in ``extra``) and the network's
        output channels as ``extra.classes``."""
        mode = cls.options(cfg).mode
        card = super().card_for(cfg, n_files)
        card.extra.pop("mode")
        card = replace(card, mode=mode)
        card.extra.update(classes=len(CLASS_VALUES) if mode == "discrete" else 1,
                          max_batches_per_pair=cfg.max_batches_per_pair)
        return card

    @classmethod
    def card_options(cls, card: ModelCard) -> dict[str, object]:
        """The options in ``extra``, and the card's ``mode`` as the option ``mode``."""
        return {**super().card_options(card), "mode": card.mode}

    @classmethod
    def fit(cls, files: Sequence[Path], cfg: TrainConfig, run_dir: Path) -> "FPIDetector":
        """Train on ``files``; runs unchanged in one process or under ``torchrun`` (one rank per process), on the
        training engine (:mod:`mood_detector.training.engine`).

        An optimiser step takes ``P`` (the option ``batches_per_step``; default: one per rank) pair-batches, one
        from each of ``P`` streams of volume pairs (stream ``c`` holds pairs ``c, c+P, ...`` of the epoch's pair
        list, which is seeded by (seed, epoch)), the FPI patches of each one seeded by (seed, epoch, step,
        stream). Every rank draws the same steps (:meth:`_steps`); the engine gives each rank a contiguous run of
        ``P/N`` of a step's pair-batches (:class:`~mood_detector.distributed.Pieces`), whose task examples and
        network pass it alone makes; BatchNorm statistics cover all ranks' examples and each rank backpropagates
        its share of the step's mean loss, so with a fixed ``batches_per_step`` the result for N=1 and N=2 agrees
        up to floating-point order. An epoch ends at the first step at which a stream runs out (the tails of
        longer streams are dropped; nothing is dropped with P=1). The checkpoint holds no per-rank state, so a run
        can resume under another world size.
        """
        with distributed.session(cfg.device) as (_, device):
            run = _Training.prepare(cls, files, cfg, Path(run_dir), device)
            run.train()
            return run.finish()

    @staticmethod
    def _give_verdict(card: ModelCard, tracker: BestTracker, held_out: bool) -> None:
        """Announce the run's verdict and record it in the card (no probe: say so)."""
        if not tracker.best_epoch:
            announce("no verdict: no probe set (--opt probe_volumes=0)")
            return
        v = verdict(tracker.best_loss, tracker.const_loss, tracker.prior_loss)
        card.extra.update(v.card_values())
        card.extra["probe_best_epoch"] = tracker.best_epoch
        card.extra["probe_held_out"] = held_out
        where = "held-out" if held_out else "in-sample (too few volumes to hold some out)"
        announce(f"verdict: {v.text}; {where} probe, best at epoch {tracker.best_epoch}")

    @classmethod
    def _epoch_steps(cls, store: VolumeStore, cfg: TrainConfig, epoch: int, per_step: int,
                     opts: FPIOptions) -> int:
        """The optimiser steps of ``epoch``, counted without making a batch (:meth:`_steps`: the pairs and their
        batches are fixed by the seed; a step takes one batch from each of ``per_step`` streams of pairs and the
        epoch ends when a stream runs out)."""
        pairs = epoch_pairs(len(store), np.random.default_rng([cfg.seed, epoch]))
        counts = PairBatches(store, pairs, cfg.batch_size, cfg.seed * 7919 + epoch, cfg.max_batches_per_pair,
                             all_axes=opts.train_axes == "all").batch_counts()
        return min(sum(counts[c::per_step]) for c in range(per_step))

    @classmethod
    def _time_steps(cls, net: nn.Module, store: VolumeStore, cfg: TrainConfig, per_step: int, task: FPIConfig,
                    device: torch.device, opts: FPIOptions, dtype: torch.dtype,
                    amp: bool) -> tuple[float | None, int]:
        """(seconds per optimiser step, steps timed): the first :data:`TIMED_STEPS` steps of epoch 0 run on a
        copy of the network with its own optimiser, loading and task included, the first one not counted
        (warm-up). The run's network, optimiser and random streams are left as they were."""
        copy_net = copy.deepcopy(net)
        optim = torch.optim.Adam(copy_net.parameters(), lr=1e-6)
        ends = []
        with torch.random.fork_rng(devices=[]):
            t0 = time.perf_counter()
            items = itertools.islice(cls._steps(store, cfg, 0, per_step, device, opts), TIMED_STEPS)
            for step, pieces in enumerate(items):
                batch = cls._pieces_batch(pieces, task, torch.Generator(), cfg.seed, 0, step, device)
                optim.zero_grad(set_to_none=True)
                with autocast(device, amp):
                    logits = copy_net(batch.images.to(dtype))
                (cls.loss_sum(logits, batch.labels) / len(batch.labels)).backward()
                optim.step()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                ends.append(time.perf_counter())
        if not ends:
            return None, 0
        if len(ends) == 1:
            return ends[0] - t0, 1
        return (ends[-1] - ends[0]) / (len(ends) - 1), len(ends) - 1

    @classmethod
    def from_checkpoint(cls, run_dir: Path) -> "FPIDetector":
        """The model of a training run's last checkpoint (``run_dir/checkpoint.pt``, loaded without unpickling
        code), e.g. to score a run that has not finished; the card says at which epoch it stopped. During the
        SWA phase these are the current (not the averaged) weights; after a finished run, its final weights (the
        best epoch's, with recomputed BatchNorm statistics)."""
        ckpt = load_checkpoint(Path(run_dir))
        if ckpt is None:
            raise ValueError(f"{run_dir}: no {cls.name} training checkpoint (checkpoint.pt) there")
        cfg = TrainConfig.from_json(ckpt["config"])
        card = cls.card_for(cfg, 0)
        card.epochs = int(ckpt["epoch"])
        card.extra["checkpoint_of"] = f"{cfg.epochs} + {cls.options(cfg).swa_epochs} SWA epochs planned"
        card.extra.pop("n_train_volumes", None)
        det = cls.build(card)
        det.net.load_state_dict(ckpt.get("final_net") or ckpt["net"])
        return det.eval()

    def recompute_bn(self, files: Sequence[Path], batches: int = BN_BATCHES, seed: int = 0) -> "FPIDetector":
        """Recompute the BatchNorm statistics as an average over ``batches`` FPI batches from ``files`` (as the
        SWA phase does). Training batches each come from one volume pair, so the running statistics follow the
        last few pairs seen; averaging over many pairs removes that drift."""
        card = self.card
        cfg = TrainConfig(detector=self.name, kind=card.kind, size=card.size, width=card.width,
                          batch_size=int(card.extra.get("batch_size", 32)), seed=seed,
                          options={"mode": card.mode, **{k: str(card.extra[k]) for k in ("contrast",)
                                                         if k in card.extra}})
        store = VolumeStore(files, card.size, card.slice_axis)
        opts = self.options(cfg)
        dtype = next(self.net.parameters()).dtype
        inputs = list(self._bn_inputs(store, cfg, 0, distributed.world_size(), self.task_config(card),
                                      torch.Generator(), self.device, opts, dtype, batches))
        if not inputs:
            raise ValueError(f"no non-empty slices in the {len(files)} volumes: no batches to recompute BatchNorm from")
        update_bn_all_ranks(self.net, inputs, self.device)
        card.extra["bn_recomputed"] = f"{len(inputs)} batches (one per volume pair) from {len(files)} volumes"
        return self.eval()

    @classmethod
    def _bn_inputs(cls, store: VolumeStore, cfg: TrainConfig, first_epoch: int, per_step: int, task: FPIConfig,
                   gen: torch.Generator, device: torch.device, opts: FPIOptions, dtype: torch.dtype,
                   batches: int) -> Iterator[torch.Tensor]:
        """This rank's part of up to ``batches`` steps of FPI input batches for a BatchNorm recompute
        (:func:`update_bn_all_ranks`), one batch per volume pair, from the epochs' pair lists from ``first_epoch`` on
        (each seeded like training: seed, epoch, step, stream); stops early when an epoch has no batches (all
        volumes empty)."""
        one = replace(cfg, max_batches_per_pair=1)

        def epoch_batches(epoch: int) -> Iterator[torch.Tensor] | None:
            """The batches of ``epoch``, made as they are drawn; None when it has none (the stream ends)."""
            steps = enumerate(cls._steps(store, one, epoch, per_step, device, opts))
            made = (cls._pieces_batch(distributed.split_batch(pieces)[0], task, gen, cfg.seed, epoch, step,
                                      device).images.to(dtype) for step, pieces in steps)
            first = next(made, None)
            return None if first is None else itertools.chain([first], made)

        epochs = itertools.takewhile(lambda made: made is not None, map(epoch_batches, itertools.count(first_epoch)))
        return itertools.islice(itertools.chain.from_iterable(epochs), batches)

    @staticmethod
    def _probe_set(stacks: list[np.ndarray], task: FPIConfig, seed: int) -> FPIBatch:
        """The fixed held-out task examples the diagnostic scores each epoch."""
        return diagnostic.make_probe_set(stacks, task, seed=seed)

    @staticmethod
    def loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Sum over examples of :meth:`loss` per example (mean over its pixels)."""
        pixels = labels.shape[-1] * labels.shape[-2]
        logits = at_least_float32(logits)
        if logits.shape[1] == 1:
            total = F.binary_cross_entropy_with_logits(logits[:, 0], labels.to(logits.dtype), reduction="sum")
        else:
            total = F.cross_entropy(logits, labels_to_classes(labels), reduction="sum")
        return total / pixels

    @staticmethod
    def _steps(store: VolumeStore, cfg: TrainConfig, epoch: int, per_step: int, device: torch.device,
               opts: FPIOptions = FPIOptions()) -> Iterator[distributed.Pieces]:
        """The optimiser steps of ``epoch``, the same on every rank: each one ``per_step`` :class:`PairBatch`
        pieces, one from each stream of pairs (stream ``c``: pairs ``c, c+P, ...`` of the epoch's pair list), of
        two FPI examples per slice pair; the epoch ends when a stream runs out."""
        pairs = epoch_pairs(len(store), np.random.default_rng([cfg.seed, epoch]))
        if len(pairs) < per_step:
            raise ValueError(f"{per_step} batches per step need at least {per_step} volume pairs "
                             f"({2 * per_step} training volumes); got {len(store)} volumes")
        loaders = [pair_loader(store, pairs, cfg.batch_size, seed=cfg.seed * 7919 + epoch, workers=cfg.workers,
                               max_batches_per_pair=cfg.max_batches_per_pair, rank=c, world_size=per_step,
                               pin_memory=device.type == "cuda",
                               augment=ContrastAugment(p=opts.contrast) if opts.contrast > 0 else None,
                               source=SourceIntensity(p=opts.source_intensity) if opts.source_intensity > 0 else None,
                               shift=SourceShift(p=opts.source_shift) if opts.source_shift > 0 else None,
                               all_axes=opts.train_axes == "all")
                   for c in range(per_step)]
        return (distributed.Pieces([PairBatch(c, a, b) for c, (a, b) in enumerate(step)],
                                   [2 * len(a) for a, _ in step]) for step in zip(*loaders))

    @classmethod
    def _pieces_batch(cls, pieces: distributed.Pieces, task: FPIConfig, gen: torch.Generator, seed: int,
                      epoch: int, step: int, device: torch.device) -> FPIBatch:
        """The task's examples of a step's pair-batches ``pieces`` (:meth:`_step_batch`)."""
        items: list[PairBatch] = pieces.items
        return cls._step_batch([(p.a, p.b) for p in items], [p.stream for p in items], task, gen, seed, epoch, step,
                               device)

    @staticmethod
    def _step_batch(chunks: list[tuple[torch.Tensor, torch.Tensor]], streams: list[int], task: FPIConfig,
                    gen: torch.Generator, seed: int, epoch: int, step: int, device: torch.device) -> FPIBatch:
        """FPI examples of pair-batches ``chunks`` of pair ``streams``; each one's patches seeded by (seed,
        epoch, step, stream), so they do not depend on which rank makes them."""
        images, labels, boxes, factors = [], [], [], []
        for (a, b), c in zip(chunks, streams):
            gen.manual_seed(int(np.random.SeedSequence([seed, epoch, step, c]).generate_state(1, np.uint64)[0])
                            % 2**63)
            fb = fpi_pair(a.to(device, non_blocking=True), b.to(device, non_blocking=True), task, gen)
            images.append(fb.images)
            labels.append(fb.labels)
            boxes.append(fb.boxes)
            factors.append(fb.factors)
        if len(images) == 1:
            return FPIBatch(images[0], labels[0], boxes[0], factors[0])
        return FPIBatch(torch.cat(images), torch.cat(labels), torch.cat(boxes), torch.cat(factors))


def update_bn_all_ranks(model: nn.Module, inputs: Iterable[torch.Tensor], device: torch.device) -> None:
    """``update_bn`` of ``model`` over ``inputs`` (this rank's part of each batch), with cross-rank BatchNorm
    under ``torchrun``: every rank ends with the statistics of all ranks' batches, those of one process."""
    distributed.convert_sync_bn(model, device)
    try:
        update_bn(inputs, model)
    finally:
        distributed.revert_sync_bn(model)


def _probe_split(files: Sequence[Path], k: int) -> tuple[list[Path], list[Path]]:
    """(training files, held-out probe files) of ``files`` sorted by name: the last ``k`` are held out when
    ``k`` >= 2 and at least ``4 k`` remain; otherwise none (the probe is then made in-sample)."""
    files = sorted(files, key=lambda f: Path(f).name)
    if k >= 2 and len(files) - k >= 4 * k:
        return list(files[:-k]), list(files[-k:])
    return list(files), []


def _check_step_size(per_step: int, world: int) -> None:
    """Refuse a step size that does not share out evenly among ``world`` ranks."""
    if per_step % world:
        raise OptionError("--batches-per-step", f"{per_step} is not a multiple of the number of processes "
                                                f"({world})")


def _check_volumes(n: int, per_step: int) -> None:
    """Refuse fewer than 2 training volumes, or fewer pairs than ``per_step``."""
    if n < 2:
        raise OptionError("--input", f"fpi trains on pairs of volumes: needs at least 2 training volumes, found {n}")
    if (n + 1) // 2 < per_step:  # epoch_pairs: ceil(n / 2) pairs
        raise OptionError("--batches-per-step", f"{per_step} batches per step need at least {per_step} volume "
                                                f"pairs ({2 * per_step - 1} training volumes); found {n} volumes")


@dataclass
class _Data:
    """A run's training data: ``store`` (the training volumes), the ``held`` out probe files, the steps per
    optimiser step ``per_step`` and, with ``--steps``, the ``plan`` of epochs that makes the budget."""

    store: VolumeStore
    held: list[Path]
    per_step: int
    plan: StepPlan | None


@dataclass
class _Training:
    """One FPI (or subclass) training run on the engine: the network and its optimisers (Adam; SGD and the
    average for the SWA phase), the engine's phases (:meth:`batches`, :meth:`step`, :meth:`end_epoch`,
    :meth:`stop`) and what follows them (:meth:`finish`: best weights, BatchNorm recompute, verdict).

    Built by :meth:`prepare`; ``cfg`` has the epochs of the step budget when there is one.
    """

    detector: type[FPIDetector]
    cfg: TrainConfig
    opts: FPIOptions
    data: _Data
    run_dir: Path
    device: torch.device
    gen: torch.Generator
    det: FPIDetector = field(init=False)
    task: FPIConfig = field(init=False)
    dtype: torch.dtype = field(init=False)
    amp: bool = field(init=False)
    lr0: float = field(init=False)
    #: the learning rate of the current step (the loss log's)
    lr_now: float = field(init=False)
    opt: torch.optim.Optimizer = field(init=False)
    swa_opt: torch.optim.Optimizer = field(init=False)
    swa: _Averaged = field(init=False)
    tracker: BestTracker = field(init=False)
    #: whether the run ends with the weights of its best probe loss (a probe and no SWA)
    keep_best: bool = field(init=False)
    #: training and SWA epochs
    total: int = field(init=False)
    engine: Engine = field(init=False)
    #: epochs done before this process started (resume) and by now
    start: int = field(init=False)
    trained: int = field(init=False)
    probe: FPIBatch | None = field(init=False)
    #: optimiser steps of a training epoch: the length of the SWA phase's learning-rate cycle
    steps_per_epoch: int = field(default=0, init=False)
    #: the final weights when they are not the last epoch's (saved with the last checkpoint)
    final: dict[str, torch.Tensor] | None = field(default=None, init=False)

    @classmethod
    def prepare(cls, detector: type[FPIDetector], files: Sequence[Path], cfg: TrainConfig, run_dir: Path,
                device: torch.device) -> "_Training":
        """Check the setting, open the data (decoded once per node into the disk cache when it is on), plan the
        step budget and build the run."""
        env = distributed.current()
        opts = detector.options(cfg)
        per_step = opts.batches_per_step or env.world_size
        _check_step_size(per_step, env.world_size)
        distributed.check_same([Path(f).name for f in files], "the training files")
        gen = seed_everything(cfg.seed)
        files, held = _probe_split(files, opts.probe_volumes)
        if held:
            log.info("holding out %s for the FPI probe set", ", ".join(Path(f).name for f in held))
        _check_volumes(len(files), per_step)
        disk = opts.disk_cache == "on" or (opts.disk_cache == "auto" and cfg.workers > 0)
        store = VolumeStore(files, cfg.net_size, cfg.kind_cfg.slice_axis, cfg.cache_gb,
                            cache_dir=run_dir / "cache" if disk else None)
        store.prepare(rank=env.rank, world_size=env.world_size)  # decode once, before the loader workers start
        distributed.barrier()
        plan = None
        if opts.steps:  # a step budget: as many epochs as it takes, the last one cut short
            plan = plan_steps(opts.steps, lambda e: detector._epoch_steps(store, cfg, e, per_step, opts))
            cfg = replace(cfg, epochs=plan.epochs)
        return cls(detector, cfg, opts, _Data(store, held, per_step, plan), run_dir, device, gen)

    def __post_init__(self) -> None:
        card = self.detector.card_for(self.cfg, len(self.data.store))
        card.extra["batches_per_step"] = self.data.per_step
        self.det = self.detector.build(card)
        self.det.net.init_prior()
        self.det.to(self.device)
        self.task = self.detector.task_config(card)
        # the network is built in torch's default dtype (float32; the distributed tests train in float64) and
        # the FPI batches, made in float32, follow it
        self.dtype = next(self.net.parameters()).dtype
        self.amp = self.cfg.amp and self.device.type == "cuda"
        self.lr0 = self.lr_now = self.detector.learning_rate(self.cfg)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=self.lr0)
        self.swa_opt = torch.optim.SGD(self.net.parameters(), lr=SWA_LR[1])
        self.swa = _Averaged(self.net)
        # the best probe loss and the stop rule (the probe is scored on rank 0; SWA averages the last epochs, so
        # it keeps neither the best weights nor an early stop)
        self.tracker = BestTracker(patience=0 if self.opts.swa_epochs else self.opts.patience)
        self.keep_best = bool(self.opts.probe_volumes) and not self.opts.swa_epochs
        self.total = self.cfg.epochs + self.opts.swa_epochs
        self.engine = Engine(self.run_dir, self.cfg, {"net": self.net, "opt": self.opt, "swa_opt": self.swa_opt,
                                                      "swa": self.swa, "best": self.tracker},
                             resume_enabled=self.cfg.resume, device=self.device, extra=self._extra)
        self.start = self.trained = self.engine.resume()
        self._resume_steps_per_epoch()
        self.probe = self._probe() if distributed.is_main() else None
        if distributed.is_main():
            self._announce()

    @property
    def net(self) -> nn.Module:
        return self.det.net

    # --- setup ---------------------------------------------------------------------------------------
    def _extra(self) -> dict[str, object]:
        """The checkpoint's own values: the SWA cycle's length, the step size, the final weights if any."""
        return {"batches_per_epoch": self.steps_per_epoch, "batches_per_step": self.data.per_step,
                **({"final_net": self.final} if self.final is not None else {})}

    def _resume_steps_per_epoch(self) -> None:
        """The SWA cycle's length from the checkpoint, scaled when the step size changed since."""
        ckpt = self.engine.checkpoint
        if ckpt is None:
            return
        self.steps_per_epoch = int(ckpt["batches_per_epoch"])
        old = int(ckpt.get("batches_per_step", self.data.per_step))
        if old != self.data.per_step:  # steps per epoch scale inversely with the batches per step
            self.steps_per_epoch = max(1, round(self.steps_per_epoch * old / self.data.per_step))

    def _probe(self) -> FPIBatch | None:
        """The probe set the diagnostic scores each epoch (held-out volumes, else the first training ones)."""
        k = self.opts.probe_volumes
        if not k:
            return None
        held = self.data.held
        store = VolumeStore(held, self.det.card.size, self.det.card.slice_axis) if held else self.data.store
        return self.detector._probe_set([store.slices(i) for i in range(min(len(store), max(2, k)))], self.task,
                                        seed=self.cfg.seed + 12345)

    def _announce(self) -> None:
        """The plan and its time before any training (timed in one process only)."""
        data, k = self.data, self.opts.probe_volumes
        steps = (data.plan.steps if data.plan else
                 self.detector._epoch_steps(data.store, self.cfg, 0, data.per_step, self.opts) * self.total)
        per, n_timed = None, 0
        if distributed.world_size() == 1:
            per, n_timed = self.detector._time_steps(self.net, data.store, self.cfg, data.per_step, self.task,
                                                     self.device, self.opts, self.dtype, self.amp)
        probe = len(data.held) or (min(len(data.store), max(2, k)) if k else 0)
        announce(summary(self.detector.name, len(data.store), probe, bool(data.held), steps, self.total, per,
                         n_timed))

    # --- the engine's phases ----------------------------------------------------------------------------
    def train(self) -> None:
        """The training epochs (early stop by the probe), then the SWA epochs, from where a resume left off."""
        common = dict(batches=self.batches, step=self.step, total=self.total, lr=lambda: self.lr_now,
                      end=self.end_epoch)
        self.engine.run([Phase("train", range(self.cfg.epochs), stop=self.stop, **common),
                         Phase("swa", range(self.cfg.epochs, self.total), **common)], self.start)

    def batches(self, epoch: int) -> Iterable[distributed.Pieces]:
        """The steps of ``epoch`` (the budget's last epoch cut short); sets the epoch's learning rate."""
        self.net.train()
        self.lr_now = self.lr0
        if epoch < self.cfg.epochs and self.opts.lr_schedule == "cosine":  # per epoch: resumes alike
            self.lr_now = self.lr0 * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * epoch / max(1, self.cfg.epochs))))
            for group in self.opt.param_groups:
                group["lr"] = self.lr_now
        data = self.data
        steps = self.detector._steps(data.store, self.cfg, epoch, data.per_step, self.device, self.opts)
        limit = data.plan.limit(epoch) if data.plan is not None else None
        return steps if limit is None else itertools.islice(steps, limit)

    def step(self, pieces: distributed.Pieces, epoch: int, index: int) -> Step:
        """One optimiser step on this rank's pair-batches: the mean loss over their examples, of which the
        rank backpropagates its share (the engine sums the ranks' gradients)."""
        batch = self.detector._pieces_batch(pieces, self.task, self.gen, self.cfg.seed, epoch, index, self.device)
        x = batch.images.to(self.dtype)
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        optim = self._optimizer(epoch, index)
        optim.zero_grad(set_to_none=True)
        with autocast(self.device, self.amp):
            logits = self.net(x)
        loss = self.detector.loss_sum(logits, batch.labels) / len(batch.labels)
        rank_share(loss).backward()
        optim.step()
        return Step({"loss": loss}, len(batch.labels))

    def _optimizer(self, epoch: int, index: int) -> torch.optim.Optimizer:
        """Adam in the training epochs; SGD in the SWA epochs, its learning rate falling over each epoch."""
        if epoch < self.cfg.epochs:
            return self.opt
        frac = min(1.0, index / max(1, self.steps_per_epoch - 1))
        self.lr_now = SWA_LR[1] + (SWA_LR[0] - SWA_LR[1]) * frac
        for group in self.swa_opt.param_groups:
            group["lr"] = self.lr_now
        return self.swa_opt

    def end_epoch(self, epoch: int, steps: int) -> None:
        """After an epoch: its step count (training) or the SWA average (SWA); the probe's diagnostic, its row,
        the best weights so far (``best.pt``)."""
        if epoch < self.cfg.epochs:
            self.steps_per_epoch = steps
        else:
            self.swa.update(self.net)  # the weights at this epoch's learning-rate minimum
        if self.probe is not None:
            diag = diagnostic.diagnose(self.net, self.probe, device=self.device)
            log.info("epoch %d %s", epoch + 1, diag.summary())
            diagnostic.write_row(self.run_dir / DIAGNOSTIC_CSV, epoch + 1, diag)
            if epoch < self.cfg.epochs and self.keep_best and self.tracker.update(
                    diag.loss, epoch + 1, steps, diag.const_loss, diag.prior_loss):
                save_best(self.run_dir, {"net": self.net.state_dict(), "epoch": epoch + 1, "probe_loss": diag.loss})
        self.trained = epoch + 1

    def stop(self) -> bool:
        """The early stop: the same answer on every rank (rank 0 scores the probe)."""
        return bool(distributed.broadcast_object(self.tracker.stop if distributed.is_main() else None))

    # --- after training ----------------------------------------------------------------------------------
    def finish(self) -> FPIDetector:
        """The final weights: the best epoch's (by the probe) or the SWA average, with recomputed BatchNorm
        statistics; saved with the last checkpoint when they differ from the last epoch's. The verdict."""
        self.det.card.extra["epochs_trained"] = self.trained
        # the last epoch's weights and statistics stay the checkpoint's "net" (a resumed run continues from them,
        # as an uninterrupted one would); the final weights (best epoch, recomputed statistics) go beside them
        last = {key: value.detach().clone() for key, value in self.net.state_dict().items()}
        restored = self._restore_best()
        if self.swa.model is not None:
            self._swa_bn()
        elif self.opts.final_bn:
            # Training batches each come from one volume pair, so the running statistics follow the last pairs
            # seen (measured: docs/fpi-cpu.md); recompute them over one batch from each of many pairs.
            log.info("recomputing BatchNorm statistics over up to %d batches, one per volume pair", BN_BATCHES)
            data = self.data
            update_bn_all_ranks(self.net, self.detector._bn_inputs(data.store, self.cfg, self.total, data.per_step,
                                                            self.task, self.gen, self.device, self.opts,
                                                            self.dtype, BN_BATCHES), self.device)
        if self.swa.model is None and (self.opts.final_bn or restored):
            # the last checkpoint holds the final weights too (export from it = these weights)
            self.final = {key: value.detach().clone() for key, value in self.net.state_dict().items()}
            self.net.load_state_dict(last)
            self.engine.save(self.total)
            self.net.load_state_dict(self.final)
        if distributed.is_main():
            self.detector._give_verdict(self.det.card, self.tracker, bool(self.data.held))
        return self.det.eval()

    def _restore_best(self) -> bool:
        """Load the weights of the best probe loss (``best.pt``, read by rank 0) when the run keeps them."""
        main = distributed.is_main()
        if not (self.keep_best and distributed.broadcast_object(self.tracker.best_epoch if main else 0)):
            return False
        best = distributed.broadcast_object(load_best(self.run_dir) if main else None)
        if best is None:
            return False
        log.info("keeping the weights of epoch %d (best probe loss %.4f)", int(best["epoch"]),
                 float(best["probe_loss"]))
        self.net.load_state_dict(best["net"])
        return True

    def _swa_bn(self) -> None:
        """The SWA average's BatchNorm statistics, recomputed over the steps of the epoch after the last (this
        rank's part of each, with cross-rank BatchNorm), as the network's final weights."""
        model = self.swa.model
        log.info("SWA: averaged %d epoch minima; recomputing BatchNorm statistics", int(model.n_averaged))
        data = self.data
        steps = itertools.islice(self.detector._steps(data.store, self.cfg, self.total, data.per_step, self.device,
                                                      self.opts), BN_BATCHES)
        inputs = (self.detector._pieces_batch(distributed.split_batch(pieces)[0], self.task, self.gen, self.cfg.seed,
                                              self.total, step, self.device).images.to(self.dtype)
                  for step, pieces in enumerate(steps))
        update_bn_all_ranks(model, inputs, self.device)
        self.net.load_state_dict(model.module.state_dict())
