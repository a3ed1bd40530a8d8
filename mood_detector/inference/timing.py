"""Cheap per-stage wall-clock accounting for the predictor (no prints, no synchronisation of its own)."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Iterator

#: the predictor's stages, in pipeline order
STAGES = ("read", "preprocess", "network", "postprocess", "write")


class StageTimer:
    """Seconds and call counts per named stage, summed over all threads (readers and writers run concurrently
    with the network, so the sum of the stages can exceed the wall time). Thread-safe; costs two
    ``perf_counter`` calls per timed block."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - t0)

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self.seconds[stage] += seconds
            self.calls[stage] += 1

    def as_dict(self) -> dict[str, float]:
        """``{stage: seconds}`` for the known stages (0 when not run) and any others."""
        with self._lock:
            out = {s: float(self.seconds.get(s, 0.0)) for s in STAGES}
            out.update({k: float(v) for k, v in self.seconds.items() if k not in out})
        return out
