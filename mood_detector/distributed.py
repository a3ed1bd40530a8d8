"""torch.distributed plumbing shared by training and inference (``torchrun`` / multi-node rendezvous).

Without ``torchrun`` (no ``WORLD_SIZE`` in the environment, or ``WORLD_SIZE=1``) every helper here is a no-op:
no process group is created and single-process behaviour is unchanged.

Under ``torchrun`` the rank, world size and local rank come from the ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``
variables it sets; :func:`session` creates the default process group (``nccl`` on CUDA, ``gloo`` on CPU) and
destroys it again at the end if it created it. Each rank uses ``cuda:LOCAL_RANK`` when the requested device is
``auto`` or ``cuda`` and CUDA is visible, else the CPU.

Helpers for training and inference: :func:`convert_sync_bn` / :func:`revert_sync_bn` (BatchNorm statistics over all
ranks' batches: ``torch.nn.SyncBatchNorm`` on CUDA, the :class:`DistBatchNorm` below on CPU, where
``SyncBatchNorm`` is not supported), :func:`shard` (this rank's share of a list), :func:`split_batch` (this rank's
part of a batch that every rank drew; :class:`Pieces`, a batch split between whole pieces), :func:`sum_gradients`
and :func:`broadcast_module` (what the training engine uses to train any detector's networks under ``torchrun``),
:func:`all_gather_cat`,
:func:`is_main`, :func:`barrier`, :func:`all_gather_object`, :func:`broadcast_object`, :func:`all_reduce_sum`,
:func:`check_same`.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import logging
import os
import sys
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, NoReturn, Sequence, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How long a collective may wait for the other ranks before failing (a rank that died, a node that is gone).
TIMEOUT = datetime.timedelta(minutes=30)


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands in the job: global ``rank`` of ``world_size``, ``local_rank`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """True when there is more than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from None


def env_from_environ() -> DistEnv:
    """The job layout torchrun exported (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``); one process if unset."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world or local < 0:
        raise ValueError(f"inconsistent torchrun environment: RANK={rank} WORLD_SIZE={world} LOCAL_RANK={local}")
    return DistEnv(rank, world, local)


def is_initialized() -> bool:
    """True when a default process group exists."""
    return dist.is_available() and dist.is_initialized()


def current() -> DistEnv:
    """The layout of the running process group, or of the environment when there is none."""
    if is_initialized():
        env = env_from_environ()
        rank, world = dist.get_rank(), dist.get_world_size()
        local = env.local_rank if env.world_size == world else rank
        return DistEnv(rank, world, local)
    return env_from_environ()


def is_distributed() -> bool:
    """True inside a process group of more than one rank."""
    return is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return current().rank


def world_size() -> int:
    return current().world_size


def is_main() -> bool:
    """True on rank 0 (and always without torchrun): the rank that writes files and prints summaries."""
    return current().rank == 0


def device_for_rank(device: str, env: DistEnv | None = None) -> torch.device:
    """The device this rank computes on: ``auto``/``cuda`` -> ``cuda:LOCAL_RANK`` when CUDA is visible (``auto``
    falls back to the CPU); an explicit ``cuda:N`` or ``cpu`` is used as given."""
    env = env or current()
    if device == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        device = "cuda"
    if device == "cuda" and env.enabled:
        return torch.device("cuda", env.local_rank)
    return torch.device(device)


def backend_for(device: torch.device) -> str:
    """``nccl`` for CUDA devices, ``gloo`` otherwise."""
    return "nccl" if device.type == "cuda" else "gloo"


def init(device: torch.device, env: DistEnv | None = None) -> bool:
    """Create the default process group for ``env`` (from the environment by default) if it has more than one
    rank and none exists yet. Returns True when this call created it."""
    env = env or env_from_environ()
    if not env.enabled or is_initialized():
        return False
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = backend_for(device)
    dist.init_process_group(backend=backend, init_method="env://", rank=env.rank, world_size=env.world_size,
                            timeout=TIMEOUT)
    log.info("process group: rank %d of %d (local rank %d), backend %s, device %s", env.rank, env.world_size,
             env.local_rank, backend, device)
    return True


def cleanup() -> None:
    """Destroy the default process group (if any)."""
    if is_initialized():
        dist.destroy_process_group()


def end_process(code: int) -> NoReturn:
    """End this torchrun worker now with exit status ``code``, after destroying the process group and flushing
    the logs and standard streams, without the interpreter's shutdown.

    Why: two-process test runs on the 2-core development machine had a rank abort with SIGABRT ("terminate
    called without an active exception", a native thread still running when its owner is destroyed) during
    interpreter shutdown, after their work was done and written: about one run in ten at one time, none in
    54 later runs (40 of the ``train`` and ``predict`` commands, 14 of the test job). The exact thread was not
    pinned down; torch's issue tracker describes gloo's worker threads aborting at interpreter shutdown the
    same way. Once a command has finished, its outputs are in place (every file is written atomically) and
    the shutdown has nothing left to do but that teardown; ``os._exit`` skips it, so the exit status is the
    command's."""
    try:
        cleanup()
    finally:
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - a closed stream: nothing left to flush
                pass
        os._exit(code)


@contextlib.contextmanager
def session(device: str = "auto") -> Iterator[tuple[DistEnv, torch.device]]:
    """Context for one distributed job step: yields ``(env, device)`` for this rank, creating the process group
    under torchrun when needed and destroying it on exit only if it was created here (so sessions nest and a
    caller that set up its own group keeps it)."""
    env = current()
    dev = device_for_rank(device, env)
    created = init(dev, env)
    try:
        yield current(), dev
    finally:
        if created:
            cleanup()


def barrier() -> None:
    """Wait for all ranks (no-op in a single process)."""
    if not is_distributed():
        return
    if dist.get_backend() == "nccl":
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


def shard_indices(n: int, rank_: int | None = None, world: int | None = None) -> list[int]:
    """Indices ``i`` of ``range(n)`` with ``i % world == rank``: every index on exactly one rank."""
    env = current()
    r = env.rank if rank_ is None else rank_
    w = env.world_size if world is None else world
    return list(range(r, n, w))


def shard(items: Sequence[T], rank_: int | None = None, world: int | None = None) -> list[T]:
    """This rank's share of ``items`` (round robin: item ``i`` goes to rank ``i % world``). Sort ``items`` the
    same way on every rank first; the union over ranks is ``items``, each item exactly once."""
    return [items[i] for i in shard_indices(len(items), rank_, world)]


def all_gather_object(obj: T) -> list[T]:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` in a single process."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: T, src: int = 0) -> T:
    """Rank ``src``'s ``obj`` on every rank (the argument is ignored on the others)."""
    if not is_distributed():
        return obj
    box = [obj if dist.get_rank() == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum of ``t`` over ranks (in place; returns ``t``)."""
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather_cat(t: torch.Tensor) -> torch.Tensor:
    """Every rank's ``t`` concatenated along dim 0 in rank order (the ranks' first dimensions may differ; the
    other dimensions, the dtype and the device must agree); ``t`` itself in a single process."""
    if not is_distributed():
        return t
    t = t.contiguous()
    sizes = torch.tensor([t.shape[0]], dtype=torch.int64, device=t.device)
    gathered_sizes = [torch.zeros_like(sizes) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered_sizes, sizes)
    counts = [int(c) for c in gathered_sizes]
    padded = t.new_zeros((max(counts),) + tuple(t.shape[1:]))
    padded[: t.shape[0]] = t
    parts = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(parts, padded)
    return torch.cat([part[:c] for part, c in zip(parts, counts)])


def check_same(value: Any, what: str) -> None:
    """Raise on every rank if ranks disagree about ``value`` (e.g. the training file list on different nodes)."""
    if not is_distributed():
        return
    digest = hashlib.sha256(repr(value).encode()).hexdigest()
    digests = all_gather_object(digest)
    if len(set(digests)) > 1:
        differ = [r for r, d in enumerate(digests) if d != digests[0]]
        raise RuntimeError(f"ranks disagree about {what} (ranks {differ} differ from rank 0): every rank must see "
                           f"the same inputs at the same paths")


# --- training helpers ----------------------------------------------------------------------------------
def _leaves(batch: Any) -> Iterator[Any]:
    if isinstance(batch, (torch.Tensor, np.ndarray)):
        yield batch
    elif isinstance(batch, (tuple, list)):
        for item in batch:
            yield from _leaves(item)
    elif isinstance(batch, dict):
        for item in batch.values():
            yield from _leaves(item)


def _take(batch: Any, start: int, stop: int) -> Any:
    if isinstance(batch, (torch.Tensor, np.ndarray)):
        return batch[start:stop]
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # a NamedTuple
        return type(batch)(*(_take(item, start, stop) for item in batch))
    if isinstance(batch, (tuple, list)):
        return type(batch)(_take(item, start, stop) for item in batch)
    if isinstance(batch, dict):
        return {key: _take(item, start, stop) for key, item in batch.items()}
    return batch


@dataclass
class Pieces:
    """A batch of whole pieces that :func:`split_batch` shares out among the ranks without cutting any (a training
    step's pair-batches, each of which makes its examples with a random stream of its own): ``items`` in order
    and ``sizes``, the number of examples each one makes (what a rank's share of the batch's mean loss counts)."""

    items: list[Any]
    sizes: list[int]

    def __post_init__(self) -> None:
        if len(self.items) != len(self.sizes):
            raise ValueError(f"{len(self.items)} pieces but {len(self.sizes)} sizes")

    def __len__(self) -> int:
        return len(self.items)


def part_range(n: int, rank_: int | None = None, world: int | None = None) -> range:
    """Rank ``r``'s part of ``n`` units: the ``r``-th of ``world`` contiguous runs (sizes differing by at most one,
    the longer ones first), so the parts in rank order make up ``range(n)``."""
    env = current()
    r = env.rank if rank_ is None else rank_
    w = env.world_size if world is None else world
    base, extra = divmod(n, w)
    start = r * base + min(r, extra)
    return range(start, start + base + (1 if r < extra else 0))


def batch_units(batch: Any) -> int:
    """The units :func:`split_batch` shares out: the pieces of :class:`Pieces`, else the examples."""
    if isinstance(batch, Pieces):
        return len(batch)
    first = next(_leaves(batch), None)
    if first is None:
        raise TypeError(f"cannot split a batch of {type(batch).__name__} among processes: no tensor or array in it")
    return int(first.shape[0])


def split_batch(batch: Any, rank_: int | None = None, world: int | None = None) -> tuple[Any, int, int]:
    """This rank's part of ``batch``, a batch that every rank drew alike: ``(part, n_part, n)`` in examples.

    ``batch`` is a tensor or NumPy array of ``n`` examples along its first dimension, or a tuple, list or dict of
    them (all of ``n`` examples; other values are passed on unchanged), or :class:`Pieces` (split between whole
    pieces, counted by their sizes). Rank ``r`` of ``N`` takes the ``r``-th of ``N`` contiguous runs of examples
    or pieces (:func:`part_range`), so the parts in rank order make up ``batch``."""
    part = part_range(batch_units(batch), rank_, world)
    if isinstance(batch, Pieces):
        return (Pieces(batch.items[part.start:part.stop], batch.sizes[part.start:part.stop]),
                sum(batch.sizes[part.start:part.stop]), sum(batch.sizes))
    return _take(batch, part.start, part.stop), len(part), batch_units(batch)


def sum_gradients(params: Iterable[torch.Tensor]) -> None:
    """Replace the gradient of every parameter in ``params`` that has one by its sum over the ranks (one
    all-reduce over all of them; no-op in a single process). Every rank must pass the same parameters, with
    gradients on the same ones."""
    if not is_distributed():
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    for g, value in zip(grads, flat.split([g.numel() for g in grads])):
        g.copy_(value.view_as(g))


def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers of ``module`` to every rank (no-op in a single process)."""
    if not is_distributed():
        return
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=src)


class _AllReduceSum(torch.autograd.Function):
    """Differentiable all-reduce (sum): the backward of a sum over ranks is the sum of the ranks' gradients."""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


class DistBatchNorm(_BatchNorm):
    """BatchNorm whose training-mode statistics cover the batches of all ranks (any backend, CPU included).

    ``torch.nn.SyncBatchNorm`` only runs on GPUs; this is the same computation with autograd-aware all-reduces
    (two passes: the mean, then the variance about it, for the same accuracy as the single-process layer). The
    running statistics follow ``nn.BatchNorm`` exactly (momentum, or the cumulative average when ``momentum`` is
    None as in ``update_bn``; the unbiased variance) and so are identical on every rank. In eval mode, or
    outside a process group, it is a plain BatchNorm. Like ``SyncBatchNorm`` it assumes that every rank's loss
    is its share of the global loss (``training.engine.rank_share``), so that the gradients summed over the ranks
    are the full gradient.
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        if not (self.training and is_distributed()):
            return super().forward(x)
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        xf = x if x.dtype == torch.float64 else x.float()  # at least float32 (bf16/fp16 under autocast)
        count = torch.tensor([float(xf.numel() // xf.shape[1])], device=x.device, dtype=xf.dtype)
        first = _AllReduceSum.apply(torch.cat([xf.sum(dims), count]))
        n = first[-1].detach()
        mean = first[:-1] / n
        centred = xf - mean.view(shape)
        var = _AllReduceSum.apply((centred * centred).sum(dims)) / n
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                unbiased = var.detach() * (n / (n - 1).clamp(min=1))
                self.running_mean.mul_(1 - factor).add_(mean.detach().to(self.running_mean.dtype), alpha=factor)
                self.running_var.mul_(1 - factor).add_(unbiased.to(self.running_var.dtype), alpha=factor)
        return y.to(x.dtype)


def convert_sync_bn(module: nn.Module, device: torch.device) -> nn.Module:
    """Replace every BatchNorm layer by a cross-rank one (``SyncBatchNorm`` on CUDA, :class:`DistBatchNorm`
    elsewhere), sharing parameters and buffers, so state dicts keep their keys. No-op outside a process group."""
    if not is_distributed():
        return module
    return _convert(module, device.type == "cuda")


def _convert(module: nn.Module, cuda: bool) -> nn.Module:
    out = module
    if isinstance(module, _BatchNorm) and not isinstance(module, (nn.SyncBatchNorm, DistBatchNorm)):
        cls = nn.SyncBatchNorm if cuda else DistBatchNorm
        out = cls(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        _share_state(module, out)
        out._mood_original_class = type(module)  # type: ignore[assignment]
    for name, child in module.named_children():
        out.add_module(name, _convert(child, cuda))
    return out


def revert_sync_bn(module: nn.Module) -> nn.Module:
    """Undo :func:`convert_sync_bn`: the original BatchNorm classes, same parameters and buffers."""
    out = module
    original = getattr(module, "_mood_original_class", None)
    if original is not None:
        out = original(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        _share_state(module, out)
    for name, child in module.named_children():
        out.add_module(name, revert_sync_bn(child))
    return out


def _share_state(src: _BatchNorm, dst: _BatchNorm) -> None:
    if src.affine:
        dst.weight, dst.bias = src.weight, src.bias
    dst.running_mean, dst.running_var = src.running_mean, src.running_var
    dst.num_batches_tracked = src.num_batches_tracked
    dst.train(src.training)
    dst.to(src.weight.device if src.affine else src.running_mean.device)
