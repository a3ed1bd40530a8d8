"""Atomic file writes: write to a temporary file in the target folder, then rename it to its final name.

A reader (or the MOOD evaluator) therefore sees either no file or the complete one, never a truncated one; an
error or interrupt while writing leaves no temporary file behind.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator


def publish(tmp: str | Path, path: Path, mode: int | None = 0o644) -> None:
    """Set a finished temporary file's permissions (``mode``; None keeps mkstemp's 0600) and rename it to
    ``path`` atomically."""
    if mode is not None:
        os.chmod(tmp, mode)
    os.replace(tmp, path)


@contextmanager
def atomic_path(path: str | Path, mode: int | None = 0o644) -> Iterator[str]:
    """Yield the name of a new temporary file beside ``path``; publish it as ``path`` when the block ends
    normally, delete it when the block raises."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        publish(tmp, path, mode)
    finally:
        Path(tmp).unlink(missing_ok=True)


@contextmanager
def atomic_open(path: str | Path, binary: bool = True, fsync: bool = True) -> Iterator[IO[Any]]:
    """Yield a file open for writing (``wb``, or ``w`` in UTF-8 with ``binary=False``) that appears as ``path``,
    flushed and (``fsync``) synced to disk, only once the block ends normally."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb" if binary else "w", encoding=None if binary else "utf-8") as fh:
            yield fh
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
