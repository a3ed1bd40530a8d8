"""Device set-up for inference: CPU threads, batch size from free GPU memory, guarded ``torch.compile``."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Callable

import torch

log = logging.getLogger(__name__)

CPU_BATCH = 8         # slices of 256^2 per call on the CPU: throughput is flat beyond a few; small batches crop
#                       tighter; larger slices get proportionally fewer (activation memory grows with the area)
GPU_BATCH_CAP = 256   # upper bound of the automatic CUDA batch size
GPU_MEMORY_SHARE = 0.5  # share of the free GPU memory the automatic batch size plans to use


def available_cores() -> int:
    """CPU cores this process may run on (affinity mask / cgroup-pinned set), shared among the local ranks
    when started by ``torchrun`` (``LOCAL_WORLD_SIZE``)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    try:
        local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        local = 1
    return max(1, cores // local)


def set_cpu_threads(requested: int = 0) -> int:
    """Set torch's intra-op threads to ``requested`` (0 = all available cores); returns the number set."""
    n = requested if requested > 0 else available_cores()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def auto_batch_size(score: Callable[[torch.Tensor], object], size: int, device: torch.device,
                    autocast: Callable[[], object]) -> int:
    """Slices per network call. CPU: :data:`CPU_BATCH` for 256^2 slices, scaled by the slice area (2 for
    512^2). CUDA: measured, by running ``score`` on two blank
    ``size``^2 slices and planning :data:`GPU_MEMORY_SHARE` of the free memory at that peak per slice (power of
    two, at most :data:`GPU_BATCH_CAP`); the predictor still halves it on out-of-memory."""
    if device.type != "cuda":
        return max(1, min(CPU_BATCH, CPU_BATCH * 256 * 256 // (size * size)))
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    probe = torch.zeros(2, 1, size, size, device=device)
    with torch.inference_mode(), autocast():
        score(probe)
    torch.cuda.synchronize(device)
    per_slice = max(1, (torch.cuda.max_memory_allocated(device) - base) // 2)
    del probe
    torch.cuda.empty_cache()
    fit = int(GPU_MEMORY_SHARE * free // per_slice)
    bs = 1 << max(0, min(fit, GPU_BATCH_CAP).bit_length() - 1) if fit >= 1 else 1
    log.info("batch size %d (%.0f MiB per slice, %.1f GiB free on %s)", bs, per_slice / 2**20, free / 2**30, device)
    return bs


def _writable_dir(path: Path) -> str | None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        return f"{path} is not writable ({exc.strerror or exc})"
    return None


def compile_cache_dirs(device: torch.device) -> list[Path]:
    """Folders ``torch.compile`` writes to: Inductor's cache (``$TORCHINDUCTOR_CACHE_DIR``, default
    ``<tmp>/torchinductor_<user>``) and, on CUDA, Triton's home (``$TRITON_HOME`` or ``$HOME``: ``.triton``) and
    ``$TRITON_CACHE_DIR`` when set."""
    inductor = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if not inductor:
        try:
            from torch._inductor.runtime.cache_dir_utils import default_cache_dir

            inductor = default_cache_dir()
        except Exception:  # noqa: BLE001 - private API; same rule as torch 2.x
            inductor = os.path.join(tempfile.gettempdir(), f"torchinductor_{os.getuid()}")
    dirs = [Path(inductor)]
    if device.type == "cuda":
        home = os.environ.get("TRITON_HOME") or os.environ.get("HOME") or "/"
        dirs.append(Path(home) / ".triton")
        if os.environ.get("TRITON_CACHE_DIR"):
            dirs.append(Path(os.environ["TRITON_CACHE_DIR"]))
    return dirs


def compile_cache_problem(device: torch.device) -> str | None:
    """``None`` when every folder ``torch.compile`` needs can be written, else why not (e.g. the container's
    read-only root: compiling there would fail or recompile on every start)."""
    for d in compile_cache_dirs(device):
        problem = _writable_dir(d)
        if problem:
            return problem
    return None


class CompiledScorer:
    """``torch.compile`` of a detector's ``score_slices``, falling back to eager (with one warning) if
    compiling fails, e.g. without a C++ compiler on the CPU. Out-of-memory errors are passed on."""

    def __init__(self, fn: Callable[[torch.Tensor], object]) -> None:
        self.eager = fn
        self.compiled: Callable[[torch.Tensor], object] | None = torch.compile(fn)

    def __call__(self, x: torch.Tensor) -> object:
        if self.compiled is not None:
            try:
                return self.compiled(x)
            except torch.cuda.OutOfMemoryError:
                raise
            except Exception as exc:  # noqa: BLE001 - any compiler failure: run eager instead
                log.warning("torch.compile failed (%s: %s); running eager", type(exc).__name__,
                            str(exc).splitlines()[0] if str(exc) else "")
                self.compiled = None
        return self.eager(x)
