"""The volumetric detector: a compact 3D U-Net that segments anomalies in whole volumes at about 2 mm.

Why volumetric. A 2D slice cannot tell a region whose content was shifted through the slice plane, reflected
from the other hemisphere or smoothly warped from normal anatomy of another level; the MOOD entries that did
well after 2020 are volumetric (the 2022 winner trains a 3D U-Net on large patches with patches pasted from
other locations; Baugh et al., MICCAI 2023, train a 3D U-Net at 2 mm with coordinate channels on several
self-supervised tasks and choose checkpoints on tasks held out from training). This detector follows them:

* **Network** (:mod:`.network`): 3D U-Net with three coordinate channels (where the patch lies in the volume)
  and instance normalisation (statistics of each patch or volume scored: a batch of one or two patches is too
  few for batch statistics).
* **Training**: the shared engine; each step draws ``patches_per_step`` random patches of ``patch``³ voxels from
  the training volumes (resampled to ``size``³, 128³ by default: 2 mm for a 256³ brain), plants one synthetic
  anomaly of a random task family in each (:mod:`mood_detector.tasks.volumetric`: blending from another
  subject, intensity up or down, texture, and same-volume moves of tissue: translation, flip, rotation,
  rescaling, smooth warps, on irregular shapes) and trains per-voxel binary cross-entropy against the *soft*
  label of the actual change (``tau``). The evaluation's sphere generators are never used.
* **Scoring**: the whole network volume in one pass (``infer_patch=0``), or sliding windows of
  ``infer_patch``³ with Gaussian weighting (:mod:`mood_detector.inference.sliding`); voxel score =
  sigmoid(logit).

Detector options (``--opt KEY=VALUE``): see :class:`UNet3DOptions`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar, Iterable, Sequence

import logging

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from mood_detector import distributed
from mood_detector.detector import COMMON_FIELDS, Detector, PatchScores, TrainConfig
from mood_detector.errors import OptionError
from mood_detector.evaluation.metrics import average_precision, counts_from_scores
from mood_detector.models.unet3d.network import UNet3D, coordinate_channels
from mood_detector.tasks.volumetric import FAMILIES, VolumeTaskConfig, make_example
from mood_detector.training.data import VolumeStore
from mood_detector.training.engine import Engine, Phase, Step, rank_share
from mood_detector.training.loop import at_least_float32, autocast, load_checkpoint, seed_everything
from mood_detector.weights import ModelCard

log = logging.getLogger(__name__)

#: the network volume's edge when ``--size`` is not given: 2 mm for a 256^3 brain
DEFAULT_SIZE = 128
#: a patch's centre is drawn among voxels above this (inside the object)
FOREGROUND = 0.05


@dataclass
class UNet3DOptions:
    """Volumetric detector options (``--opt KEY=VALUE``).

    Attributes:
        base: channels of the first U-Net stage (doubled per stage).
        levels: U-Net stages (the volume edge must be a multiple of 2 ** (levels - 1)).
        patch: edge of the training patches (voxels of the network volume).
        patches_per_step: patches per optimisation step (the batch).
        steps_per_epoch: optimisation steps per epoch (an epoch is a checkpoint and loss-log row).
        families: comma-separated task families trained on (of blend, intensity, texture, translate, flip,
            rotate, rescale, warp), or all.
        tau: soft label: an intensity change of tau (of the [0, 1] range) or more is labelled 1.
        p_normal: share of training patches left without an anomaly.
        infer_patch: edge of the sliding window at scoring (0: the whole network volume in one pass).
        holdout: task families never trained on: the checkpoint kept is the one that finds them best
            (pixel AP) in ``val_volumes`` training volumes that are themselves not trained on.
        val_volumes: training volumes set aside for that choice (the last ones; 0: no choice, the last epoch
            is kept).
        val_examples: validation patches per held-out family (fixed: the same every epoch). With 4 the choice
            was noise: on 16 other patches the epoch it chose (4 of 22) scored 0.09, the last 0.26.
    """

    base: int = 8
    levels: int = 4
    patch: int = 64
    patches_per_step: int = 2
    steps_per_epoch: int = 50
    families: str = "all"
    tau: float = 0.05
    p_normal: float = 0.1
    infer_patch: int = 0
    holdout: str = "rotate,rescale"
    val_volumes: int = 2
    val_examples: int = 16

    def __post_init__(self) -> None:
        for name in ("families", "holdout"):
            listed = _families(getattr(self, name))
            if any(f not in FAMILIES for f in listed) or (name == "families" and not listed):
                raise ValueError(f"unet3d options: {name} must be a comma list of {', '.join(FAMILIES)}, "
                                 f"got {getattr(self, name)!r}")
        if not self.train_families:
            raise ValueError("unet3d options: every family is held out; train on at least one")
        if self.val_volumes < 0 or self.val_examples < 1:
            raise ValueError("unet3d options: val_volumes must be >= 0 and val_examples >= 1")
        if self.base < 1 or self.levels < 2 or self.patches_per_step < 1 or self.steps_per_epoch < 1:
            raise ValueError("unet3d options: base, patches_per_step, steps_per_epoch must be >= 1, levels >= 2")
        stride = 2 ** (self.levels - 1)
        for name in ("patch", "infer_patch"):
            value = getattr(self, name)
            if value < 0 or value % stride or (name == "patch" and value == 0):
                raise ValueError(f"unet3d options: {name}={value} must be a positive multiple of {stride} "
                                 f"(2 ** (levels - 1)){'' if name == 'patch' else ', or 0'}")
        if not (0 < self.tau <= 1 and 0 <= self.p_normal < 1):
            raise ValueError("unet3d options: tau must be in (0, 1] and p_normal in [0, 1)")

    @property
    def train_families(self) -> tuple[str, ...]:
        """The families trained on: ``families`` less ``holdout``."""
        held = _families(self.holdout)
        return tuple(f for f in _families(self.families) if f not in held)


def _families(text: str) -> tuple[str, ...]:
    if text.strip() == "all":
        return FAMILIES
    return tuple(f.strip() for f in text.split(",") if f.strip())


class UNet3DDetector(Detector):
    """Volumetric anomaly segmentation by a 3D U-Net trained on synthetic anomalies in 3D."""

    name = "unet3d"
    dims = 3
    options_cls = UNet3DOptions
    # the batch is options.patches_per_step and the channels options.base; slices per volume pair mean nothing
    train_fields = COMMON_FIELDS - {"batch_size", "max_batches_per_pair", "width"}
    supports_distributed = True  # through the training engine (each rank its part of every batch)

    #: the weights' layout: channels-last, in which oneDNN's 3D convolutions on the CPU run 1.4-2.5x faster
    #: (measured on 2 cores)
    weight_format: ClassVar[torch.memory_format] = torch.channels_last_3d

    def __init__(self, card: ModelCard, net: nn.Module) -> None:
        super().__init__(card)
        self.net = net.to(memory_format=self.weight_format)

    @classmethod
    def build(cls, card: ModelCard) -> "UNet3DDetector":
        return cls(card, UNet3D(int(card.extra.get("base", 8)), int(card.extra.get("levels", 4))))

    def modules(self) -> dict[str, nn.Module]:
        return {"net": self.net}

    @property
    def patch_size(self) -> tuple[int, int, int]:
        edge = int(self.card.extra.get("infer_patch", 0)) or self.size
        return (min(edge, self.size),) * 3

    def score_patches(self, x: torch.Tensor, origins: torch.Tensor) -> PatchScores:
        """Voxel scores (N, d, h, w) in [0, 1] of patches ``x`` (N, 1, d, h, w) whose first voxels lie at
        ``origins`` (N, 3) of the network volume."""
        dtype = next(self.net.parameters()).dtype
        x = x.to(self.device, dtype)
        coords = coordinate_channels(origins, tuple(x.shape[2:]), (self.size,) * 3, dtype, self.device)
        logits = self.net(torch.cat([x, coords], dim=1).contiguous(memory_format=torch.channels_last_3d))
        return PatchScores(pixel=torch.sigmoid(at_least_float32(logits))[:, 0])

    def score_slices(self, x: torch.Tensor):  # noqa: D102 - a volumetric detector scores patches
        raise TypeError("the unet3d detector is volumetric: the harness scores it with score_patches")

    # --- training ----------------------------------------------------------------------------------
    @classmethod
    def check_config(cls, cfg: TrainConfig) -> None:
        o = cls.options(cfg)
        size = cfg.size or DEFAULT_SIZE
        stride = 2 ** (o.levels - 1)
        if size % stride or size < o.patch:
            raise OptionError("--size", f"{size} must be a multiple of {stride} and at least the patch "
                                        f"({o.patch}) for the unet3d detector")

    @classmethod
    def card_for(cls, cfg: TrainConfig, n_files: int) -> ModelCard:
        card = super().card_for(cfg, n_files)
        extra = {k: v for k, v in card.extra.items() if k != "batch_size"}
        return replace(card, size=int(cfg.size or DEFAULT_SIZE), mode="soft-bce", extra=extra)

    @classmethod
    def fit(cls, files: Sequence[Path], cfg: TrainConfig, run_dir: Path) -> "UNet3DDetector":
        """Adam on per-voxel BCE against soft labels of synthetic anomalies planted in random patches; a
        checkpoint every epoch (``steps_per_epoch`` steps), so ``--resume`` loses little. With ``val_volumes``,
        the last volumes are set aside and the weights of the epoch that best finds the held-out task families
        in them (pixel AP, logged as ``val_ap``) are the ones returned."""
        o = cls.options(cfg)
        n_val = o.val_volumes if _families(o.holdout) else 0
        train_files, val_files = list(files[:len(files) - n_val]), list(files[len(files) - n_val:])
        if len(train_files) < 2:
            raise ValueError(f"the unet3d detector needs at least two training volumes besides the {n_val} set "
                             f"aside for validation (blending takes tissue from another subject)")
        seed_everything(cfg.seed)
        det = cls.build(cls.card_for(cfg, len(files)))
        device = distributed.device_for_rank(cfg.device)
        det.to(device)
        net = det.net
        dtype = next(net.parameters()).dtype  # torch's default dtype (float32; float64 in the fixed-seed test)
        opt = torch.optim.Adam(net.parameters(), lr=cls.learning_rate(cfg))
        best = BestWeights(net)
        engine = Engine(Path(run_dir), cfg, {"net": net, "opt": opt, "best": best}, resume_enabled=cfg.resume,
                        device=device)
        start = engine.resume()
        store = VolumeStore(train_files, det.size, det.slice_axis, cfg.cache_gb)
        task = patch_task(o, o.train_families, det.size, o.p_normal)
        val = (validation_set(VolumeStore(val_files, det.size, det.slice_axis, cfg.cache_gb), det.slice_axis, o,
                              np.random.default_rng([cfg.seed, 777])) if val_files else None)
        amp = cfg.amp and device.type == "cuda"

        def batches(epoch: int) -> Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
            net.train()
            rng = np.random.default_rng([cfg.seed, 4242, epoch])  # per-epoch stream: resuming reproduces it
            return (patch_batch(store, det.slice_axis, o.patch, o.patches_per_step, task, rng)
                    for _ in range(o.steps_per_epoch))

        def train_step(batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor], epoch: int, index: int) -> Step:
            x, origins, label = batch
            x, label = x.to(device, dtype), label.to(device, dtype)
            coords = coordinate_channels(origins, tuple(x.shape[2:]), (det.size,) * 3, dtype, device)
            with autocast(device, amp):
                logits = net(torch.cat([x, coords], dim=1).contiguous(memory_format=torch.channels_last_3d))
            loss = F.binary_cross_entropy_with_logits(at_least_float32(logits), label)
            opt.zero_grad(set_to_none=True)
            rank_share(loss).backward()
            opt.step()
            return Step({"loss": loss}, x.shape[0])

        def end(epoch: int, steps: int) -> None:
            if val is not None:
                ap = validation_ap(det, val)
                best.offer(ap, epoch)
                log.info("epoch %d: held-out task pixel AP %.4f (best %.4f, epoch %d)", epoch + 1, ap,
                         best.score, best.epoch + 1)

        engine.run([Phase("train", range(cfg.epochs), batches, train_step, end=end)], start)
        if val is not None and best.state is not None:
            best.apply(det, o.holdout)
        return det.eval()

    @classmethod
    def from_checkpoint(cls, run_dir: Path) -> "UNet3DDetector":
        """The model of a training run's last checkpoint (``export`` of a run that has not finished, or was
        stopped): the weights of the epoch that found the held-out families best so far (the last epoch's
        without validation); the card says which epoch and how many were planned."""
        ckpt = load_checkpoint(Path(run_dir))
        if ckpt is None:
            raise ValueError(f"{run_dir}: no {cls.name} training checkpoint (checkpoint.pt) there")
        cfg = TrainConfig.from_json(ckpt["config"])
        card = cls.card_for(cfg, 0)
        card.extra.pop("n_train_volumes", None)
        det = cls.build(card)
        best = BestWeights(det.net)
        if ckpt.get("best"):
            best.load_state_dict(ckpt["best"])
        if best.state is not None:
            best.apply(det, cls.options(cfg).holdout)
            card.epochs = best.epoch + 1
        else:
            det.net.load_state_dict(ckpt["net"])
            card.epochs = int(ckpt["epoch"])
        card.extra["checkpoint_of"] = f"{cfg.epochs} epochs planned, {int(ckpt['epoch'])} done"
        return det.eval()


class BestWeights:
    """The weights with the highest validation score so far (checkpointed with the run)."""

    def __init__(self, net: nn.Module) -> None:
        self.net = net
        self.score, self.epoch, self.state = -1.0, -1, None

    def offer(self, score: float, epoch: int) -> None:
        if score > self.score:
            self.score, self.epoch = score, epoch
            self.state = {k: v.detach().clone() for k, v in self.net.state_dict().items()}

    def apply(self, det: "UNet3DDetector", holdout: str) -> None:
        """Load the best weights into ``det`` and record on its card what chose them."""
        det.net.load_state_dict(self.state)
        det.card.extra.update(val_ap=round(float(self.score), 4), val_epoch=int(self.epoch) + 1,
                              val_families=holdout)

    def state_dict(self) -> dict:
        return {"score": self.score, "epoch": self.epoch, "state": self.state}

    def load_state_dict(self, state: dict) -> None:
        self.score, self.epoch, self.state = state["score"], state["epoch"], state["state"]


def patch_task(o: UNet3DOptions, families: tuple[str, ...], size: int, p_normal: float) -> VolumeTaskConfig:
    """The task of ``families`` on patches of ``o.patch`` voxels cut from volumes of ``size``: the shapes'
    radii are the default fraction of the *volume's* edge (5-20 voxels at 128^3), not of the patch's, so an
    anomaly has the same size in training patches as in the whole volumes scored."""
    lo, hi = VolumeTaskConfig().radius
    scale = size / o.patch
    return VolumeTaskConfig(families=families, tau=o.tau, p_normal=p_normal,
                            radius=(min(lo * scale, 0.5), min(hi * scale, 0.5)))


def validation_set(store: VolumeStore, slice_axis: int, o: UNet3DOptions,
                   rng: np.random.Generator) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Fixed validation batches: ``val_examples`` patches per held-out family, from ``store``'s volumes."""
    out = []
    size = store.size
    for family in _families(o.holdout):
        task = patch_task(o, (family,), size, 0.0)
        out.append(patch_batch(store, slice_axis, o.patch, o.val_examples, task, rng, allow_same=True))
    return out


@torch.no_grad()
def validation_ap(det: UNet3DDetector, batches: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> float:
    """Pixel AP of ``det`` over the validation batches (a voxel is anomalous where its soft label is > 0.5)."""
    was = det.net.training
    det.net.eval()
    scores, labels = [], []
    for x, origins, label in batches:
        for i in range(x.shape[0]):  # one patch at a time: the memory of a single forward pass
            scores.append(det.score_patches(x[i:i + 1], origins[i:i + 1]).pixel.cpu().numpy().ravel())
            labels.append(label[i].numpy().ravel() > 0.5)
    det.net.train(was)
    return average_precision(counts_from_scores(np.concatenate(scores), np.concatenate(labels)))


def volume(store: VolumeStore, i: int, slice_axis: int) -> np.ndarray:
    """Training volume ``i`` of ``store`` in its original axis order: a view of the cached float16 array (a
    patch is cut from it and converted, not the whole volume)."""
    return np.moveaxis(store.slices(i), 0, slice_axis)


def random_origin(vol: np.ndarray, patch: int, rng: np.random.Generator) -> np.ndarray:
    """A patch origin whose patch is centred, as far as the edges allow, on a random object voxel."""
    size = np.array(vol.shape)
    inside = np.argwhere(vol[::4, ::4, ::4] > FOREGROUND) * 4
    centre = inside[rng.integers(len(inside))] if len(inside) else size // 2
    return np.clip(centre - patch // 2, 0, size - patch).astype(np.int64)


def patch_batch(store: VolumeStore, slice_axis: int, patch: int, n: int, task: VolumeTaskConfig,
                rng: np.random.Generator, allow_same: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` training examples: patches (n, 1, p, p, p) with planted anomalies, their origins (n, 3) and soft
    labels (n, 1, p, p, p). The tissue a blend takes comes from another volume (the same one, at another
    place, where ``allow_same`` and ``store`` holds one volume)."""
    xs, origins, labels = [], [], []
    for _ in range(n):
        i, j = rng.choice(len(store), 2, replace=False) if len(store) > 1 or not allow_same else (0, 0)
        vol, other = volume(store, int(i), slice_axis), volume(store, int(j), slice_axis)
        o, o2 = random_origin(vol, patch, rng), random_origin(other, patch, rng)
        box = tuple(slice(a, a + patch) for a in o)
        box2 = tuple(slice(a, a + patch) for a in o2)
        out, label, _ = make_example(np.ascontiguousarray(vol[box], dtype=np.float32),
                                     np.ascontiguousarray(other[box2], dtype=np.float32), rng, task)
        xs.append(torch.from_numpy(out)[None])
        labels.append(torch.from_numpy(label)[None])
        origins.append(torch.from_numpy(o))
    return torch.stack(xs), torch.stack(origins), torch.stack(labels)
