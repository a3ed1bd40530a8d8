"""The one training loop: phases of epochs of steps, with resume, checkpoints, the loss log and progress.

A detector describes its training as :class:`Phase` objects (its batches per epoch and one ``train_step``) and
hands the engine the named objects whose state a checkpoint holds (networks, optimisers, anything with
``state_dict``/``load_state_dict``). The engine owns everything around the steps:

- **resume**: :meth:`Engine.resume` loads the run folder's checkpoint (rank 0 reads it and sends it to the
  others, so the folder need only exist on its node), restores every named object and returns the number of
  epochs done; :meth:`Engine.run` skips those epochs. A phase's epochs are numbered globally, so a run of several
  phases resumes inside any of them;
- **checkpoints** after every ``every_epochs``-th epoch, when ``every_minutes`` have passed since the last one,
  and after each phase's last epoch, written atomically by rank 0 alone (the other ranks wait at a barrier);
- **the loss log**: one row per epoch with the mean of each loss the steps returned (each averaged over the
  steps that returned it; under ``torchrun`` summed over the ranks, so a step returns its rank's share), the
  learning rate, the time and the throughput (the slices of all ranks);
- **progress** (``tqdm``, rank 0 only) and the **empty-epoch check**: an epoch without a single step is an error;
- **distributed training** (``torchrun``; see :meth:`Engine.run`): every rank draws the same batches (the
  detector seeds its streams alike on every rank) and the engine hands each rank its part of every batch
  (:func:`~mood_detector.distributed.split_batch`: contiguous runs of examples, or whole pieces of a
  :class:`~mood_detector.distributed.Pieces` batch such as FPI's pair-batches of a step), so all ranks make the
  same steps in lockstep. For the duration of :meth:`Engine.run` the networks in ``state`` have cross-rank
  BatchNorm layers and the same initial weights on every rank, and each optimiser's step first sums the ranks'
  gradients. A step backpropagates
  :func:`rank_share` of its loss (its rank's share of the loss of the whole batch), so the summed gradient is
  the one-process gradient of that batch; it returns its losses as before (the engine weights them).

Seeding stays with the detector (its per-epoch streams are part of what a fixed seed reproduces):
``batches(epoch)`` is the place to seed an epoch.
"""

from __future__ import annotations

import contextvars
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence

import torch
from torch import nn
from tqdm import tqdm

from mood_detector import distributed
from mood_detector.training.loop import LossLog, Timer, load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)

EMPTY = "no training batches: are all training volumes empty?"

#: this rank's share of the batch of the step being run (None: the whole batch, one process); a context
#: variable because the detector's step, not the engine, calls :func:`rank_share` and the optimiser hook
_SHARE: contextvars.ContextVar[float | None] = contextvars.ContextVar("rank_share", default=None)


def rank_share(loss: torch.Tensor) -> torch.Tensor:
    """The part of a step's ``loss`` (a mean over the step's examples) to backpropagate on this rank: under
    ``torchrun`` the rank's share of the whole batch's mean (``loss * n_rank / n_batch``), so that the gradients
    the engine sums over the ranks are those of the whole batch, cross-rank BatchNorm included; ``loss`` itself
    in a single process."""
    share = _SHARE.get()
    return loss if share is None else loss * share


class Stateful(Protocol):
    """Anything a checkpoint can hold: networks, optimisers, averaged models."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> Any: ...


@dataclass
class Step:
    """What one training step reports: its ``losses`` (tensors or numbers; ``loss`` is the one shown in the
    progress bar) and the number of ``slices`` it trained on."""

    losses: Mapping[str, torch.Tensor | float]
    slices: int


@dataclass
class Phase:
    """Epochs trained the same way.

    Attributes:
        name: the loss log's ``phase`` column and the progress label.
        epochs: the global indices of this phase's epochs (``range(first, stop)``).
        batches: ``epoch -> iterable`` of that epoch's batches; seeds the epoch and sets training mode. Under
            ``torchrun`` every rank draws the same batches and the engine gives each rank its part
            (:func:`~mood_detector.distributed.split_batch`: contiguous runs of examples, or whole pieces of a
            :class:`~mood_detector.distributed.Pieces` batch). A step must then not skip (return ``None`` for) a
            batch that is not empty: filter batches here instead.
        step: ``(batch, epoch, index) -> Step`` trains on one batch; ``None`` = the batch was skipped.
        offset: subtracted from the global epoch index for the progress label and the loss log, so that a group
            of phases after another (training after pre-training) counts its own epochs from 1.
        total: the epoch count shown after the slash (default: the phase's last epoch number, less ``offset``).
        lr: the learning rate logged (default: the first optimiser's, read after the epoch).
        end: ``(epoch, steps) -> None`` after each epoch, before its checkpoint (averaging, diagnostics).
        log_name: ``epoch -> name`` for the loss log when it varies within the phase.
        empty: the error message of an epoch without steps.
        stop: ``() -> bool`` after each epoch and its checkpoint: true ends the run there (an early stop; the
            checkpoint is saved first).
    """

    name: str
    epochs: range
    batches: Callable[[int], Iterable[Any]]
    step: Callable[[Any, int, int], Step | None]
    offset: int = 0
    total: int = 0
    lr: Callable[[], float] | None = None
    end: Callable[[int, int], None] | None = None
    log_name: Callable[[int], str] | None = None
    empty: str = EMPTY
    stop: Callable[[], bool] | None = None


class GeneratorState:
    """A random generator as a checkpointable object (a stream that runs across epochs resumes where it was)."""

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator

    def state_dict(self) -> dict[str, Any]:
        return {"state": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["state"])


@dataclass
class Engine:
    """Runs :class:`Phase` objects for one run folder.

    Attributes:
        run_dir: the run folder (checkpoint and loss log).
        config: the training configuration, saved with each checkpoint (a dataclass or a JSON string).
        state: name -> object whose state each checkpoint holds and :meth:`resume` restores.
        resume_enabled: whether :meth:`resume` may load a checkpoint (``--resume``).
        same_config: resume only a checkpoint saved with the same ``config`` (a stage that must not continue
            under other settings; otherwise the settings may change, e.g. more epochs).
        loss_log: where the epoch rows go (default: a ``log_class`` in ``run_dir``); rank 0 alone writes rows.
        log_class: the loss log's class (a detector's extra loss columns) when ``loss_log`` is not given.
        extra: ``() -> dict`` of further plain values (numbers, strings, lists) for each checkpoint.
        every_epochs, every_minutes: checkpoint cadence within a phase (its last epoch is always saved).
        device: where the ranks' loss sums are added up (the process group's device).
    """

    run_dir: Path
    config: Any
    state: dict[str, Stateful]
    resume_enabled: bool = False
    same_config: bool = False
    loss_log: LossLog | None = None
    log_class: type[LossLog] = LossLog
    extra: Callable[[], dict[str, Any]] | None = None
    every_epochs: int = 1
    every_minutes: float = 0.0
    device: torch.device = torch.device("cpu")
    checkpoint: dict[str, Any] | None = field(default=None, init=False)
    _last_save: float = field(default_factory=time.monotonic, init=False)

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir)
        if not distributed.is_main():
            self.loss_log = None
        elif self.loss_log is None:
            self.loss_log = self.log_class(self.run_dir)

    # --- resume and checkpoints ---------------------------------------------------------------------
    def _config_text(self) -> str:
        return self.config if isinstance(self.config, str) else json.dumps(asdict(self.config), sort_keys=True)

    def resume(self, epochs: int | None = None) -> int:
        """Restore the named objects from the run folder's checkpoint when resuming; the epochs it had done
        (0 when not resuming, there is none, or it does not fit: another config with :attr:`same_config`, or
        more than ``epochs`` done). The loaded checkpoint stays in :attr:`checkpoint` for detector-specific
        values (:attr:`extra`)."""
        main = distributed.is_main()
        ckpt = distributed.broadcast_object(load_checkpoint(self.run_dir) if self.resume_enabled and main else None)
        if ckpt is None:
            if self.resume_enabled:
                log.info("no checkpoint in %s: starting from scratch", self.run_dir)
            return 0
        if self.same_config and ckpt.get("config") != self._config_text():
            log.warning("%s: checkpoint was made with other settings; training from scratch", self.run_dir)
            return 0
        if epochs is not None and int(ckpt["epoch"]) > epochs:
            log.warning("%s: checkpoint has %d epochs, more than the %d asked for; training from scratch",
                        self.run_dir, int(ckpt["epoch"]), epochs)
            return 0
        for name, obj in self.state.items():
            if ckpt.get(name) is not None:
                obj.load_state_dict(ckpt[name])
        self.checkpoint = ckpt
        log.info("resuming %s at epoch %d", self.run_dir, int(ckpt["epoch"]))
        return int(ckpt["epoch"])

    def save(self, epochs_done: int) -> None:
        """Write the checkpoint after ``epochs_done`` epochs (rank 0; every rank waits for it)."""
        if distributed.is_main():
            save_checkpoint(self.run_dir, {"epoch": epochs_done, **{k: v.state_dict() for k, v in self.state.items()},
                                           **(self.extra() if self.extra else {}), "config": self._config_text()})
        self._last_save = time.monotonic()
        distributed.barrier()

    def _due(self, epoch: int, phase: Phase) -> bool:
        if epoch == phase.epochs[-1] or (epoch + 1 - phase.epochs.start) % self.every_epochs == 0:
            return True
        return self.every_minutes > 0 and time.monotonic() - self._last_save >= 60 * self.every_minutes

    # --- distributed training ----------------------------------------------------------------------------
    def optimizer(self, opt: torch.optim.Optimizer) -> torch.optim.Optimizer:
        """``opt`` with its step preceded, under ``torchrun`` and during a step the engine runs, by the sum of
        the ranks' gradients of its parameters. The engine does this for every optimiser in ``state``; a
        detector that makes optimisers during training (one per stage) passes each one through here."""
        # marked on the optimiser itself (an id() would be reused by the next stage's optimiser once the last one
        # is freed, and that on one rank but not another)
        if distributed.is_distributed() and not getattr(opt, "_mood_sums_gradients", False):
            opt.register_step_pre_hook(_sum_gradients)
            opt._mood_sums_gradients = True  # type: ignore[attr-defined]
        return opt

    def _modules(self) -> list[nn.Module]:
        return [obj for obj in self.state.values() if isinstance(obj, nn.Module)]

    def _distribute(self) -> None:
        """Under ``torchrun``: the networks of ``state`` with cross-rank BatchNorm and rank 0's weights, the
        optimisers of ``state`` summing the ranks' gradients."""
        for module in self._modules():
            distributed.convert_sync_bn(module, self.device)  # in place: the children are replaced
            distributed.broadcast_module(module)
        for obj in self.state.values():
            if isinstance(obj, torch.optim.Optimizer):
                self.optimizer(obj)

    def _undistribute(self) -> None:
        for module in self._modules():
            distributed.revert_sync_bn(module)  # plain BatchNorm again (same parameters and buffers)

    # --- the loop -------------------------------------------------------------------------------------
    def run(self, phases: Sequence[Phase], start: int = 0) -> None:
        """Train the epochs of ``phases`` from global epoch ``start`` on (the epochs :meth:`resume` returned),
        until a phase's ``stop`` says so.

        Under ``torchrun`` the networks in ``state`` train with cross-rank BatchNorm from rank 0's weights and
        every optimiser step sums the ranks' gradients (see the module docstring); afterwards they have plain
        BatchNorm layers again, with the same statistics on every rank, so what follows training (calibration,
        final statistics) runs alike on every rank without collectives."""
        if not distributed.is_distributed():
            self._run(phases, start)
            return
        self._distribute()
        try:
            self._run(phases, start)
        finally:
            self._undistribute()

    def _run(self, phases: Sequence[Phase], start: int) -> None:
        for phase in phases:
            for epoch in phase.epochs:
                if epoch < start:
                    continue
                self._epoch(phase, epoch)
                stop = phase.stop is not None and phase.stop()
                if stop or self._due(epoch, phase):
                    self.save(epoch + 1)
                if stop:
                    log.info("stopping after epoch %d", epoch - phase.offset + 1)
                    return

    def _epoch(self, phase: Phase, epoch: int) -> None:
        main = distributed.is_main()
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        timer, n_steps, n_slices = Timer(), 0, 0
        total = phase.total or phase.epochs.stop - phase.offset
        bar = tqdm(phase.batches(epoch), desc=f"{phase.name} {epoch - phase.offset + 1}/{total}", unit="batch",
                   leave=False, disable=not main)
        world = distributed.world_size()
        split = distributed.is_distributed()
        for index, batch in enumerate(bar):
            weight = 1.0
            if split:  # this rank's part of the batch every rank drew
                if distributed.batch_units(batch) < world:  # (the same on every rank) too small to share out
                    continue
                batch, n_part, n_batch = distributed.split_batch(batch)
                weight = n_part / n_batch
            token = _SHARE.set(weight if split else None)
            try:
                out = phase.step(batch, epoch, index)
            finally:
                _SHARE.reset(token)
            if out is None:
                continue
            for key, value in out.losses.items():
                value = float(value.detach() if isinstance(value, torch.Tensor) else value)
                sums[key] = sums.get(key, 0.0) + (value * weight if split else value)
                counts[key] = counts.get(key, 0) + 1
            n_steps += 1
            n_slices += out.slices
            if "loss" in sums and distributed.world_size() == 1:  # (the global loss is known at the epoch's end)
                bar.set_postfix(loss=f"{sums['loss'] / counts['loss']:.4f}")
        if n_steps == 0:
            raise ValueError(phase.empty)
        if distributed.world_size() > 1:  # each rank's share of the global mean loss; all ranks' slices
            keys = sorted(sums)
            summed = distributed.all_reduce_sum(torch.tensor([sums[k] for k in keys] + [n_slices],
                                                             dtype=torch.float64, device=self.device))
            sums = {k: float(v) for k, v in zip(keys, summed)}
            n_slices = int(summed[-1])
        if phase.end is not None:
            phase.end(epoch, n_steps)
        secs = timer()
        if self.loss_log is not None:
            self.loss_log.write(phase=phase.log_name(epoch) if phase.log_name else phase.name, epoch=epoch - phase.offset + 1,
                                batches=n_steps, **{k: round(sums[k] / counts[k], 6) for k in sums},
                                lr=phase.lr() if phase.lr else self._lr(), seconds=round(secs, 2),
                                slices_per_s=round(n_slices / max(secs, 1e-9), 2))

    def _lr(self) -> float | str:
        for obj in self.state.values():
            if isinstance(obj, torch.optim.Optimizer):
                return float(obj.param_groups[0]["lr"])
        return ""


def _sum_gradients(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    """Optimiser step pre-hook: the ranks' gradients summed, during a step the engine runs under ``torchrun``."""
    if _SHARE.get() is not None:
        distributed.sum_gradients(p for group in opt.param_groups for p in group["params"])
