"""DDAD detector: NDM/UDM ensembles of reconstruction networks, intra/inter discrepancy, ASR-Net refinement.

Paper: "Dual-distribution Discrepancy with Self-supervised Refinement for Anomaly Detection in Medical Images"
(Cai et al.), with details the paper leaves open taken from the authors' public code.

Deviations from the paper, which works on 2D X-ray / MRI / fundus images:

* 3D volumes are scored slice by slice along the kind's slice axis, like FPI: the harness resamples a volume to
  ``size``^3; each slice is resized to 64x64 (bilinear, antialiased when shrinking, as PIL's resize in the authors'
  loader) and mapped from [0, 1] to [-1, 1]; the 64x64 score map is resized back (bilinear) to the slice size.
* Training uses the non-empty slices of the training volumes (a "slice bank" resized to 64x64 once, kept as
  float16 in RAM: 8 KiB per slice; ``max_slices`` caps it). Batches are drawn from the whole bank, as the
  paper's image datasets are, instead of one volume at a time, so that BatchNorm sees mixed batches.
* ASR synthesis (Eqs. 9-10) pastes the patch from a slice at about the same relative position of another
  volume (FPI's pairing by slice index), and labels only patch pixels where the two sources differ.
* Rec./A_intra/A_inter raw scores are unbounded; they are mapped to [0, 1) by ``raw / (raw + c)`` with ``c``
  the ``calib_quantile`` (0.99) quantile of the score over foreground pixels of normal training slices (saved as
  the extra tensor ``scales``). The map is strictly increasing, so no ranking changes.
* Everything runs in float32 (the networks are small; bf16 would quantise the ensemble discrepancies).
* ``asr_rec=true`` (not the paper; off by default) gives the ASR-Net the reconstruction residual
  ``|x - mu_NDM|`` (the root of A_rec, in the units of A_intra) as a first extra channel. The discrepancy maps
  compare reconstructions with each other only, so an outlier that every ensemble member repairs alike leaves
  them flat; the residual is the one input-aware map (measured: on a tiny model a planted cube had A_rec pixel
  AP 0.91 and R_intra 0.0035, chance).

All-background slices (every voxel <= 0) score 0 and are skipped by the harness (``skip_empty_slices``): the
networks are trained, calibrated and refined on non-empty slices only.

Volume score: the package's common aggregation (``inference.aggregate.sample_score``): the harness takes the
mean pixel score of each slice (``SliceScores.slice`` is None), smooths the slice scores with a Savitzky-Golay
filter and averages the top 25%.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from mood_detector import distributed
from mood_detector.detector import COMMON_FIELDS, Detector, Flag, SliceScores, TrainConfig, load_detector
from mood_detector.io.nifti import list_volumes
from mood_detector.models.ddad.asr import ASRNet, focal_loss, partner_indices, synthesise
from mood_detector.models.ddad.networks import BACKBONES, ReconstructionNet, reconstruction_loss
from mood_detector.models.ddad.scores import Discrepancy, discrepancy, squash
from mood_detector.training.calibration import quantile_scale
from mood_detector.training.data import VolumeStore, nonempty
from mood_detector.training.engine import Engine, Phase, Step, rank_share
from mood_detector.training.loop import LossLog, seed_everything
from mood_detector.weights import ModelCard

log = logging.getLogger(__name__)

#: variant -> (needs the UDM, ASR-Net input channels (0 = no ASR-Net)).
VARIANTS: dict[str, tuple[bool, int]] = {
    "rec": (False, 0),      # A_rec of the NDM ensemble (reconstruction baseline)
    "a_intra": (False, 0),  # raw intra-discrepancy (Eq. 3 / 6)
    "a_inter": (True, 0),   # raw inter-discrepancy (Eq. 4 / 7)
    "intra": (False, 1),    # R_intra = F(A_intra) (Eq. 13)
    "dual": (True, 2),      # R_dual = F([A_inter, A_intra]) (Eq. 8)
}
SCALE_NAMES = ("rec", "intra", "inter")


@dataclass
class DDADOptions:
    """DDAD settings, read from ``--opt KEY=VALUE`` (defaults: the paper and the authors' configs).

    Attributes:
        backbone: ``ae``, ``aeu`` (AE-U) or ``memae``.
        variant: ``rec``, ``a_intra``, ``a_inter``, ``intra`` (R_intra) or ``dual`` (R_dual); default ``dual``
            when an unlabeled folder is given, else ``intra``.
        k: networks per module (NDM and UDM).
        input_size: side of the network input (slices are resized to it).
        latent, mem_slots, hidden: bottleneck size, MemAE memory size, width of the fully connected layers.
        asr_mid: channels of the ASR-Net's hidden layers.
        ae_epochs, ae_batch, ae_lr: schedule of each reconstruction network (Adam, betas (0.5, 0.999)).
        asr_epochs, asr_batch, asr_lr, asr_wd: ASR-Net schedule (Adam, betas (0.5, 0.999), weight decay).
        asr_steps: cap on ASR steps per epoch (0 = one pass over the normal slices).
        asr_rec: also feed the residual ``|x - mu_NDM|`` to the ASR-Net (a deviation, see the module text).
        unlabeled: folder of unlabeled volumes for the UDM (``--unlabeled``).
        max_slices: cap on the slices of each bank (0 = all non-empty slices), drawn at random.
        ckpt_every: checkpoint every N epochs of a stage (and at its end).
        calib_quantile, calib_slices: how the [0, 1] mapping of raw scores is fitted.
    """

    backbone: str = "ae"
    variant: str = ""
    k: int = 3
    input_size: int = 64
    latent: int = 16
    mem_slots: int = 25
    hidden: int = 2048
    asr_mid: int = 128
    ae_epochs: int = 250
    ae_batch: int = 64
    ae_lr: float = 5e-4
    asr_epochs: int = 100
    asr_batch: int = 8
    asr_lr: float = 1e-4
    asr_wd: float = 1e-4
    asr_steps: int = 0
    asr_rec: bool = False
    unlabeled: str = ""
    max_slices: int = 0
    ckpt_every: int = 10
    calib_quantile: float = 0.99
    calib_slices: int = 2048

    def __post_init__(self) -> None:
        o = self
        if not o.variant:
            o.variant = "dual" if o.unlabeled else "intra"
        if o.backbone not in BACKBONES:
            raise ValueError(f"ddad backbone must be one of {', '.join(BACKBONES)}, got {o.backbone!r}")
        if o.variant not in VARIANTS:
            raise ValueError(f"ddad variant must be one of {', '.join(VARIANTS)}, got {o.variant!r}")
        if o.k < 2:
            raise ValueError(f"ddad needs k >= 2 networks per module (a standard deviation over k), got {o.k}")
        if o.input_size < 16 or o.input_size % 16:
            raise ValueError(f"ddad input_size must be a positive multiple of 16, got {o.input_size}")
        if min(o.ae_epochs, o.ae_batch, o.asr_batch, o.ckpt_every, o.hidden, o.asr_mid, o.latent) < 1 \
                or o.asr_epochs < 0 or o.mem_slots < 1:
            raise ValueError("ddad epochs, batch sizes, layer sizes and ckpt_every must be positive")
        if not 0.0 < o.calib_quantile < 1.0:
            raise ValueError(f"ddad calib_quantile must be in (0, 1), got {o.calib_quantile}")


@dataclass
class SliceBank:
    """Training slices at the network input size: ``images`` (n, 1, s, s) float16 in [-1, 1], their relative
    position along the slice axis (n,) and volume id (n,)."""

    images: torch.Tensor
    position: np.ndarray
    volume: np.ndarray

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @classmethod
    def from_files(cls, files: Sequence[Path], size: int, slice_axis: int, input_size: int,
                   max_slices: int = 0, seed: int = 0, desc: str = "slices") -> "SliceBank":
        """Read ``files`` (resampled to ``size``^3 as in the harness), keep non-empty slices, resize to
        ``input_size`` and map to [-1, 1]."""
        store = VolumeStore(files, size, slice_axis, cache_gb=0.0)
        images, pos, vol = [], [], []
        for i in tqdm(range(len(store)), desc=desc, unit="vol", leave=False):
            sl = store.slices(i)
            keep = np.flatnonzero(nonempty(sl))
            for j in range(0, keep.size, 256):
                idx = keep[j:j + 256]
                x = torch.from_numpy(sl[idx].astype(np.float32))[:, None]
                images.append(to_network(x, input_size).half())
            pos.append(keep / max(1, len(sl) - 1))
            vol.append(np.full(keep.size, i))
        if not images:
            raise ValueError(f"no non-empty slices in {len(files)} volume(s) (first: {files[0]})")
        bank = cls(torch.cat(images), np.concatenate(pos).astype(np.float32), np.concatenate(vol).astype(np.int64))
        if max_slices and len(bank) > max_slices:
            sel = np.sort(np.random.default_rng([seed, 7]).choice(len(bank), max_slices, replace=False))
            bank = cls(bank.images[torch.from_numpy(sel)], bank.position[sel], bank.volume[sel])
        log.info("%s: %d slices from %d volumes", desc, len(bank), len(files))
        return bank

    @staticmethod
    def concat(a: "SliceBank", b: "SliceBank") -> "SliceBank":
        """Both banks as one (volume ids of ``b`` shifted past ``a``'s)."""
        off = int(a.volume.max()) + 1 if len(a) else 0
        return SliceBank(torch.cat([a.images, b.images]), np.concatenate([a.position, b.position]),
                         np.concatenate([a.volume, b.volume + off]))


def to_network(x: torch.Tensor, input_size: int) -> torch.Tensor:
    """Slices (N, 1, S, S) in [0, 1] -> (N, 1, input_size, input_size) in [-1, 1] (bilinear; antialiased when
    shrinking)."""
    x = x.float()
    if x.shape[-1] != input_size or x.shape[-2] != input_size:
        shrink = x.shape[-1] > input_size or x.shape[-2] > input_size
        x = F.interpolate(x, size=(input_size, input_size), mode="bilinear", align_corners=False, antialias=shrink)
    return x.clamp(0, 1) * 2.0 - 1.0


class DDADDetector(Detector):
    """DDAD: ``k`` NDM and (for ``a_inter``/``dual``) ``k`` UDM reconstruction networks, and (for
    ``intra``/``dual``) an ASR-Net. Pixel score: ASR softmax class 1, or the squashed raw score."""

    name = "ddad"
    options_cls = DDADOptions
    flags = (Flag("--unlabeled", "unlabeled", "Folder of unlabeled volumes (may contain anomalies): the UDM trains "
                                              "on normal + unlabeled slices.", path="dir",
                  default_text="none (variant intra)"),)
    #: through the training engine: each stage's network trains on every rank's part of each batch
    supports_distributed = True
    #: the networks' schedules are options (ae_epochs, ae_batch, ae_lr, ...); the slice bank is float16 in RAM
    train_fields = COMMON_FIELDS - {"epochs", "batch_size", "lr", "max_batches_per_pair", "workers", "cache_gb", "amp"}
    #: all-background slices never reach the networks in training (the slice bank keeps non-empty slices only),
    #: so the harness does not run them and they score 0 (see :meth:`score_slices`)
    skip_empty_slices = True

    def __init__(self, card: ModelCard, ndm: list[ReconstructionNet], udm: list[ReconstructionNet],
                 asr: ASRNet | None) -> None:
        super().__init__(card)
        self.ndm, self.udm, self.asr = ndm, udm, asr
        self.scales = torch.ones(len(SCALE_NAMES))

    @property
    def variant(self) -> str:
        return self.card.mode

    @property
    def input_size(self) -> int:
        return int(self.card.extra.get("input_size", 64))

    @classmethod
    def build(cls, card: ModelCard) -> "DDADDetector":
        if card.mode not in VARIANTS:
            raise ValueError(f"ddad card has unknown variant {card.mode!r}")
        ex = card.extra
        needs_udm, asr_in = VARIANTS[card.mode]
        k = int(ex.get("k", 3))

        def net() -> ReconstructionNet:
            return ReconstructionNet(card.arch, int(ex.get("input_size", 64)), int(ex.get("latent", 16)),
                                     card.width, int(ex.get("mem_slots", 25)), int(ex.get("hidden", 2048)))

        ndm = [net() for _ in range(k)]
        udm = [net() for _ in range(k)] if needs_udm else []
        asr = ASRNet(asr_channels(card.mode, bool(ex.get("asr_rec", False))), int(ex.get("asr_mid", 128))) \
            if asr_in else None
        return cls(card, ndm, udm, asr)

    def modules(self) -> dict[str, nn.Module]:
        out: dict[str, nn.Module] = {f"ndm{i}": m for i, m in enumerate(self.ndm)}
        out.update({f"udm{i}": m for i, m in enumerate(self.udm)})
        if self.asr is not None:
            out["asr"] = self.asr
        return out

    def extra_tensors(self) -> dict[str, torch.Tensor]:
        return {"scales": self.scales.detach().float().cpu()}

    def load_extra_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        if "scales" in tensors:
            self.scales = tensors["scales"].float().cpu()

    def with_variant(self, variant: str) -> "DDADDetector":
        """The same trained networks scored as another variant (e.g. ``rec``/``a_intra``/``a_inter`` from a
        ``dual`` model); raises ValueError when the networks it needs were not trained."""
        needs_udm, asr_in = VARIANTS[variant] if variant in VARIANTS else (None, None)
        if needs_udm is None:
            raise ValueError(f"unknown ddad variant {variant!r}")
        if needs_udm and not self.udm:
            raise ValueError(f"variant {variant!r} needs the UDM, which this {self.variant!r} model lacks")
        want = asr_channels(variant, self.with_rec)
        if asr_in and (self.asr is None or self.asr.in_channels != want):
            raise ValueError(f"variant {variant!r} needs a {want}-channel ASR-Net, which this "
                             f"{self.variant!r} model lacks")
        card = ModelCard(**{**asdict(self.card), "mode": variant})
        card.extra["score"] = _score_text(variant)
        other = DDADDetector(card, self.ndm, self.udm if needs_udm else [], self.asr if asr_in else None)
        other.scales, other.device = self.scales.clone(), self.device
        return other

    # --- scoring -----------------------------------------------------------------------------------
    def maps(self, z: torch.Tensor, need_udm: bool | None = None) -> Discrepancy:
        """Raw DDAD maps of network inputs ``z`` (N, 1, s, s) in [-1, 1] (networks in their current mode)."""
        need_udm = bool(self.udm) if need_udm is None else need_udm
        recs = [m(z) for m in self.ndm]
        ndm = torch.stack([r.mean for r in recs])
        logvar = torch.stack([r.logvar for r in recs]) if recs[0].logvar is not None else None
        udm = torch.stack([m(z).mean for m in self.udm]) if need_udm and self.udm else None
        return discrepancy(z, ndm, udm, logvar)

    @property
    def with_rec(self) -> bool:
        """Whether the ASR-Net also sees the residual ``|x - mu_NDM|`` (option ``asr_rec``)."""
        return bool(self.card.extra.get("asr_rec", False))

    @staticmethod
    def asr_input(d: Discrepancy, channels: int, rec: bool = False) -> torch.Tensor:
        """ASR-Net input: ``[inter, intra]`` (2 channels, R_dual) or ``[intra]`` (1 channel, R_intra); with
        ``rec`` the residual ``sqrt(A_rec) = |x - mu_NDM|`` comes first (``channels`` counts it)."""
        maps = [d.rec.clamp_min(0).sqrt()] if rec else []
        if channels - len(maps) == 2:
            if d.inter is None:
                raise ValueError("R_dual needs the inter-discrepancy (no UDM)")
            maps.append(d.inter)
        maps.append(d.intra)
        return torch.cat(maps, dim=1)

    def score_maps(self, z: torch.Tensor) -> torch.Tensor:
        """Pixel scores (N, 1, s, s) in [0, 1] of network inputs ``z``."""
        v = self.variant
        d = self.maps(z, need_udm=VARIANTS[v][0])
        if self.asr is not None and VARIANTS[v][1]:
            return ASRNet.score(self.asr(self.asr_input(d, self.asr.in_channels, self.with_rec)))[:, None]
        raw = {"rec": d.rec, "a_intra": d.intra, "a_inter": d.inter}[v]
        return squash(raw, self.scales[SCALE_NAMES.index({"a_intra": "intra", "a_inter": "inter"}.get(v, v))])

    def score_slices(self, x: torch.Tensor) -> SliceScores:
        """Pixel scores of slices ``x`` (N, 1, H, W) in [0, 1]; all-background slices score 0: the networks never
        saw one in training (slice bank, calibration and ASR-Net use non-empty slices only), so their maps there
        are unconstrained, and such slices hold no anomaly."""
        h, w = x.shape[-2:]
        empty = x.flatten(1).amax(dim=1) <= 0
        with torch.autocast(device_type=x.device.type, enabled=False):
            p = self.score_maps(to_network(x, self.input_size))
            if (h, w) != tuple(p.shape[-2:]):
                p = F.interpolate(p, size=(h, w), mode="bilinear", align_corners=False)
        p = p[:, 0].clamp(0, 1)
        return SliceScores(pixel=torch.where(empty[:, None, None], torch.zeros_like(p), p))

    # --- training ----------------------------------------------------------------------------------
    @classmethod
    def card_for(cls, cfg: TrainConfig, n_files: int) -> ModelCard:
        """The common card with the backbone as ``arch``, the variant as ``mode`` and the networks' own schedule
        (``fit`` adds the unlabeled volumes' count)."""
        o = cls.options(cfg)
        card = replace(super().card_for(cfg, n_files), arch=o.backbone, mode=o.variant, epochs=o.ae_epochs)
        for key in ("variant", "backbone", "batch_size", "lr"):  # in the card's fields, or not used
            card.extra.pop(key)
        card.extra.update(classes=2, unlabeled=o.unlabeled if VARIANTS[o.variant][0] else "",
                          score=_score_text(o.variant),
                          volume_score="common: mean slice score, Savitzky-Golay, top-25% mean")
        return card

    @classmethod
    def fit(cls, files: Sequence[Path], cfg: TrainConfig, run_dir: Path) -> "DDADDetector":
        """Stage 1: k NDM nets on the normal slices and (variants ``a_inter``/``dual``) k UDM nets on normal +
        unlabeled slices, each with its own seed and shuffles; then the [0, 1] scales; stage 2 (``intra``/
        ``dual``): the ASR-Net. Each stage checkpoints into ``run_dir/<stage>/``; ``cfg.resume`` skips finished
        stages and continues the interrupted one. The networks' schedules are options (:class:`DDADOptions`):
        ``train`` refuses ``--epochs``, ``--batch-size`` and ``--lr`` for this detector."""
        run_dir = Path(run_dir)
        o = cls.options(cfg)
        needs_udm, asr_in = VARIANTS[o.variant]
        unl_files: list[Path] = []
        if o.unlabeled:
            if not needs_udm:
                log.warning("variant %r does not use the unlabeled folder %s", o.variant, o.unlabeled)
            else:
                if not Path(o.unlabeled).is_dir():
                    raise ValueError(f"{o.unlabeled}: unlabeled folder does not exist")
                unl_files = list_volumes(Path(o.unlabeled))
                if not unl_files:
                    raise ValueError(f"{o.unlabeled}: no .nii/.nii.gz volumes in the unlabeled folder")
        elif needs_udm:
            log.warning("variant %r without --unlabeled: the UDM is trained on the normal data only, so "
                        "A_inter is a discrepancy between two normal ensembles", o.variant)
        seed_everything(cfg.seed)
        card = cls.card_for(cfg, len(files))
        card.extra["n_unlabeled_volumes"] = len(unl_files)
        det = cls.build(card)
        device = distributed.device_for_rank(cfg.device)
        det.to(device)
        losses = LossLog(run_dir) if distributed.is_main() else None  # rank 0 writes the loss log
        bank = SliceBank.from_files(files, card.size, card.slice_axis, o.input_size, o.max_slices, cfg.seed,
                                    desc="normal slices")
        ran = 0  # epochs of reconstruction training done in this call (0: all stage-1 nets came from checkpoints)
        for i, net in enumerate(det.ndm):
            ran += cls._train_reconstruction(f"ndm{i}", i, net, bank, o, cfg, run_dir, losses, device)
        if needs_udm:
            both = bank
            if unl_files:
                unl = SliceBank.from_files(unl_files, card.size, card.slice_axis, o.input_size, o.max_slices,
                                           cfg.seed + 1, desc="unlabeled slices")
                both = SliceBank.concat(bank, unl)
            for i, net in enumerate(det.udm):
                ran += cls._train_reconstruction(f"udm{i}", 100 + i, net, both, o, cfg, run_dir, losses, device)
        det.eval()
        det.scales = cls._calibrate(det, bank, o, cfg.seed, device)
        card.extra["scales"] = {n: float(s) for n, s in zip(SCALE_NAMES, det.scales)}
        if asr_in and o.asr_epochs:
            # an ASR checkpoint is only valid for the very networks it was trained on
            cls._train_asr(det, bank, o, cfg, run_dir, losses, device, may_resume=ran == 0)
        elif asr_in:
            log.warning("asr_epochs=0: the ASR-Net is left untrained")
        return det.eval()

    @staticmethod
    def _signature(o: DDADOptions, cfg: TrainConfig, stage: str) -> str:
        """What a stage checkpoint must agree on to be resumed: the settings the stage depends on (epoch counts
        may grow). NDM members do not depend on the variant, the unlabeled data or the ASR settings, so a run of
        another variant in the same run folder reuses them; UDM members depend on the unlabeled folder too."""
        skip = {"ae_epochs", "asr_epochs", "ckpt_every"}
        if stage != "asr":
            skip |= {"variant", "asr_batch", "asr_lr", "asr_wd", "asr_steps", "asr_mid", "asr_rec",
                     "calib_quantile", "calib_slices"}
        if stage.startswith("ndm"):
            skip.add("unlabeled")
        sig = {k: v for k, v in asdict(o).items() if k not in skip}
        sig.update(seed=cfg.seed, size=cfg.net_size, width=cfg.width, kind=cfg.kind, stage=stage)
        return json.dumps(sig, sort_keys=True)

    @staticmethod
    def _engine(stage_dir: Path, cfg: TrainConfig, signature: str, state: dict[str, Any], losses: LossLog | None,
                every: int, device: torch.device, may_resume: bool = True) -> Engine:
        """The engine of one stage: its own checkpoint in ``stage_dir``, resumed only under the same settings
        (``signature``), rows in the run's common loss log (``None`` on the ranks that write none)."""
        return Engine(stage_dir, signature, state, resume_enabled=cfg.resume and may_resume, same_config=True,
                      loss_log=losses, every_epochs=every, device=device)

    @staticmethod
    def _fresh(module: nn.Module, seed: int) -> None:
        """Re-initialise ``module`` from ``seed`` (each ensemble member gets its own initialisation)."""
        torch.manual_seed(seed)
        for m in module.modules():
            if m is not module and hasattr(m, "reset_parameters"):
                m.reset_parameters()

    @classmethod
    def _train_reconstruction(cls, stage: str, stage_no: int, net: ReconstructionNet, bank: SliceBank,
                              o: DDADOptions, cfg: TrainConfig, run_dir: Path, losses: LossLog | None,
                              device: torch.device) -> int:
        """Train one ensemble member; returns the number of epochs run (0 when its checkpoint was complete)."""
        n = len(bank)
        if n < 2:
            raise ValueError(f"{stage}: need at least 2 training slices, got {n}")
        cls._fresh(net, cfg.seed * 1_000_003 + stage_no)
        opt = torch.optim.Adam(net.parameters(), lr=o.ae_lr, betas=(0.5, 0.999))
        engine = cls._engine(run_dir / stage, cfg, cls._signature(o, cfg, stage), {"net": net, "opt": opt}, losses,
                             o.ckpt_every, device)
        start = engine.resume(o.ae_epochs)
        bs = min(o.ae_batch, n)
        dtype = next(net.parameters()).dtype  # torch's default dtype (float32; float64 in the distributed tests)

        def batches(epoch: int) -> list[np.ndarray]:
            net.train()
            perm = np.random.default_rng([cfg.seed, stage_no, epoch]).permutation(n)
            return [perm[b * bs:(b + 1) * bs] for b in range(n // bs)]  # drop_last, as the authors' loader

        def train_step(idx: np.ndarray, epoch: int, index: int) -> Step:
            x = bank.images[torch.from_numpy(idx)].to(device, dtype)
            loss, _ = reconstruction_loss(net(x), x)
            opt.zero_grad(set_to_none=True)
            rank_share(loss).backward()
            opt.step()
            return Step({"loss": loss}, len(idx))

        engine.run([Phase(stage, range(o.ae_epochs), batches, train_step, lr=lambda: o.ae_lr)], start)
        net.eval()
        return o.ae_epochs - start

    @staticmethod
    @torch.no_grad()
    def _calibrate(det: "DDADDetector", bank: SliceBank, o: DDADOptions, seed: int,
                   device: torch.device) -> torch.Tensor:
        """Scales of the [0, 1] mapping: the ``calib_quantile`` quantile of each raw score (rec, intra, inter)
        over foreground pixels of up to ``calib_slices`` normal training slices."""
        n = len(bank)
        sel = np.random.default_rng([seed, 11]).permutation(n)[: o.calib_slices]
        vals: dict[str, list[np.ndarray]] = {k: [] for k in SCALE_NAMES}
        for j in range(0, sel.size, 256):
            z = bank.images[torch.from_numpy(np.sort(sel[j:j + 256]))].to(device, next(det.ndm[0].parameters()).dtype)
            d = det.maps(z)
            fg = z > -1.0 + 1e-3
            if not bool(fg.any()):
                fg = torch.ones_like(z, dtype=torch.bool)
            for name, m in zip(SCALE_NAMES, (d.rec, d.intra, d.inter)):
                if m is not None:
                    vals[name].append(m[fg].float().cpu().numpy())
        scales = [quantile_scale(vals[name], o.calib_quantile, default=1.0) for name in SCALE_NAMES]
        log.info("score scales (q%.3g over normal foreground): %s", o.calib_quantile,
                 dict(zip(SCALE_NAMES, [f"{s:.4g}" for s in scales])))
        return torch.tensor(scales, dtype=torch.float32)

    @classmethod
    def _train_asr(cls, det: "DDADDetector", bank: SliceBank, o: DDADOptions, cfg: TrainConfig, run_dir: Path,
                   losses: LossLog | None, device: torch.device, may_resume: bool = True) -> None:
        asr = det.asr
        assert asr is not None
        cls._fresh(asr, cfg.seed * 1_000_003 + 1000)
        opt = torch.optim.Adam(asr.parameters(), lr=o.asr_lr, betas=(0.5, 0.999), weight_decay=o.asr_wd)
        engine = cls._engine(run_dir / "asr", cfg, cls._signature(o, cfg, "asr"), {"net": asr, "opt": opt}, losses,
                             o.ckpt_every, device, may_resume)
        start = engine.resume(o.asr_epochs)
        if cfg.resume and not may_resume:
            log.info("stage-1 networks were (re)trained: training the ASR-Net from scratch")
        n = len(bank)
        bs = min(o.asr_batch, n)
        steps = n // bs if not o.asr_steps else min(o.asr_steps, n // bs)
        for m in det.ndm + det.udm:
            m.eval()
        dtype = next(asr.parameters()).dtype

        def batches(epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            """The epoch's synthesised batches (whole batches: under torchrun the engine gives each rank its
            part)."""
            asr.train()
            rng = np.random.default_rng([cfg.seed, 1000, epoch])
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + 1000 + epoch)
            perm = rng.permutation(n)
            for b in range(steps):
                idx = perm[b * bs:(b + 1) * bs]
                src = partner_indices(bank.position, bank.volume, rng, idx)
                x = bank.images[torch.from_numpy(idx)].to(device, dtype)
                s = bank.images[torch.from_numpy(src)].to(device, dtype)
                yield synthesise(x, s, gen)

        def train_step(batch: tuple[torch.Tensor, torch.Tensor], epoch: int, index: int) -> Step:
            xs, target = batch
            with torch.no_grad():
                inp = cls.asr_input(det.maps(xs), asr.in_channels, det.with_rec)
            loss = focal_loss(asr(inp), target)
            opt.zero_grad(set_to_none=True)
            rank_share(loss).backward()
            opt.step()
            return Step({"loss": loss}, len(xs))

        engine.run([Phase("asr", range(o.asr_epochs), batches, train_step, lr=lambda: o.asr_lr)], start)
        asr.eval()


def asr_channels(variant: str, rec: bool) -> int:
    """Input channels of a variant's ASR-Net (0: the variant has none): its discrepancy maps, plus the residual
    with ``asr_rec``."""
    base = VARIANTS[variant][1]
    return base + int(rec) if base else 0


def _score_text(variant: str) -> str:
    """Plain words for the model card: how a variant's pixel score is made."""
    if VARIANTS[variant][1]:
        return "ASR-Net softmax class 1"
    return ("raw / (raw + scale), scale = the calib_quantile quantile of the raw score on normal training "
            "foreground")


def export_variant(weights: str | Path, out: str | Path, variant: str) -> Path:
    """Re-score trained DDAD ``weights`` as ``variant`` without retraining: load them, save them to ``out`` scored
    as ``variant`` (keeping only the networks that variant uses; e.g. a ``dual`` model also serves ``rec``,
    ``a_intra`` and ``a_inter``) and return the saved path. ValueError if the weights are not DDAD's or lack the
    networks the variant needs."""
    det = load_detector(weights)
    if not isinstance(det, DDADDetector):
        raise ValueError(f"{weights}: not DDAD weights (detector {det.card.detector!r})")
    other = det.with_variant(variant)
    other.card.training_data = f"{det.card.training_data} (networks of {Path(weights).name}, scored as {variant})"
    path = other.save(out)
    log.info("wrote %s (%s from %s)", path, variant, weights)
    return path
