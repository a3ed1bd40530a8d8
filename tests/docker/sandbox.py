"""Run a command the way ``docker run --read-only`` would: nothing writable but the folders it is given.

Two ways, the strongest available is used (``Sandbox.mode`` says which):

* ``namespace`` (root with CAP_SYS_ADMIN, ``unshare`` and ``setpriv``; the case on the project's machines): a
  private mount namespace in which every mount point (``/``, ``/tmp``, ``/dev/shm``, ...; not ``/proc``, ``/sys``,
  ``/dev/pts``) is remounted read-only and only the given folders are bind-mounted writable; then every capability
  is dropped, so the command cannot undo it. Any write elsewhere fails with EROFS, exactly as under
  ``--read-only``. Nothing outside the namespace is affected.
* ``permissions`` (fallback): the caller makes its folders read-only with :func:`read_only`; a root caller drops
  every capability with ``setpriv`` so permission bits bind it (without setpriv a root caller cannot be confined
  and the test is skipped).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator, Mapping, Sequence

# Runs inside the new mount namespace: WRITABLE... -- COMMAND...
_SETUP = r"""
set -eu
keep=""
while [ "$1" != "--" ]; do
  mount --bind "$1" "$1"
  keep="$keep|$1"
  shift
done
shift
for m in $(awk '{print $2}' /proc/self/mounts | sort -u); do
  case "$m" in /proc | /proc/* | /sys | /sys/* | /dev/pts) continue ;; esac
  case "|$keep|" in *"|$m|"*) continue ;; esac
  mount -o remount,bind,ro "$m"
done
exec setpriv --bounding-set=-all --inh-caps=-all --no-new-privs -- "$@"
"""

_DROP_CAPS = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--no-new-privs", "--"]


class Sandbox:
    """Runs commands with only some folders writable."""

    def __init__(self) -> None:
        self.mode = self._detect()

    @staticmethod
    def _namespace_possible() -> bool:
        return os.geteuid() == 0 and bool(shutil.which("unshare")) and bool(shutil.which("setpriv"))

    def _detect(self) -> str:
        if self._namespace_possible():
            with tempfile.TemporaryDirectory() as d:
                rw, ro = Path(d, "rw"), Path(d, "ro")
                rw.mkdir()
                ro.mkdir()
                probe = self._namespace_cmd(
                    ["/bin/sh", "-c", f'touch "{rw}/ok" && ! touch "{ro}/no" 2>/dev/null && ! touch "{d}/no" 2>/dev/null'],
                    [rw])
                res = subprocess.run(probe, capture_output=True, text=True, timeout=60)
                if res.returncode == 0 and (rw / "ok").exists() and not (ro / "no").exists():
                    return "namespace"
        if os.geteuid() == 0 and not shutil.which("setpriv"):
            return "unavailable"
        return "permissions"

    @staticmethod
    def _namespace_cmd(cmd: Sequence[str], writable: Sequence[Path]) -> list[str]:
        ws = [str(Path(w).resolve()) for w in writable]
        return ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", _SETUP, "sandbox", *ws,
                "--", *cmd]

    def command(self, cmd: Sequence[str], writable: Sequence[Path]) -> list[str]:
        """``cmd`` wrapped so that only ``writable`` (existing folders) can be written."""
        for w in writable:
            if not Path(w).is_dir():
                raise ValueError(f"{w}: writable folders must exist (they are bind-mounted)")
        if self.mode == "namespace":
            return self._namespace_cmd(cmd, writable)
        if self.mode == "permissions":
            return [*_DROP_CAPS, *cmd] if os.geteuid() == 0 else list(cmd)
        raise RuntimeError("no way to confine writes here (root without setpriv)")

    def run(self, cmd: Sequence[str], *, writable: Sequence[Path], env: Mapping[str, str], cwd: Path,
            timeout: float = 300) -> subprocess.CompletedProcess:
        """Run ``cmd`` confined; returns the completed process (text stdout/stderr)."""
        return subprocess.run(self.command(cmd, writable), env=dict(env), cwd=cwd, capture_output=True, text=True,
                              timeout=timeout)


def _set_write(path: Path, writable: bool) -> None:
    for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
        if p.is_symlink():
            continue
        mode = p.stat().st_mode
        mode = mode | stat.S_IWUSR if writable else mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
        p.chmod(mode)


@contextlib.contextmanager
def read_only(*paths: Path) -> Iterator[None]:
    """Remove every write permission bit below ``paths`` for the duration (restored afterwards, so pytest can
    clean up)."""
    for p in paths:
        _set_write(Path(p), False)
    try:
        yield
    finally:
        for p in paths:
            _set_write(Path(p), True)


def listing(folder: Path) -> dict[str, tuple[int, int]]:
    """Relative path -> (size, mtime_ns) of everything below ``folder``: compare before/after to see writes."""
    return {str(p.relative_to(folder)): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in folder.rglob("*")}
