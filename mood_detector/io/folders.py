"""Input and output folders of a prediction run: what counts as an input, checks on the output folder, and
the clean-up of temporary files an interrupted run left behind.

Decisions (documented in docs/reliability.md):

* Inputs are the entries directly in the input folder whose name ends in ``.nii`` / ``.nii.gz`` (any case) and
  does not start with a dot. Symbolic links are followed wherever they point (the container only sees what is
  mounted into it, and a link the user put there is meant to be scored); a broken link, or one to a device or
  FIFO, is a failed input with its reason. Sub-folders, hidden files and files with other names are ignored
  with one log line listing them; sub-folders are not searched.
* The output folder is created if missing; if it cannot be created or written to, or (for the pixel task) it
  is the input folder itself, that is a usage error raised before any input is read.
* Outputs are written as hidden ``.<output name>.XXXXXXXX.tmp`` files and renamed when complete, so an output
  name never holds a partial file. A run killed mid-write leaves such hidden temp files; the next run removes
  those belonging to *its own* inputs' outputs (so concurrent runs on other inputs, e.g. other ranks of a
  sharded run, are never disturbed) and leaves every other file alone.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from mood_detector.errors import MoodError, OptionError
from mood_detector.io.nifti import is_nifti

log = logging.getLogger(__name__)

# tempfile.mkstemp's random part: 8 characters of this alphabet (CPython's tempfile._RandomNameSequence)
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp$")


@dataclass
class InputScan:
    """The entries of an input folder: ``volumes`` to score (sorted by name) and ``ignored`` (path, why)."""

    volumes: list[Path] = field(default_factory=list)
    ignored: list[tuple[Path, str]] = field(default_factory=list)


def scan_inputs(folder: str | Path) -> InputScan:
    """Classify the entries directly in ``folder`` (not recursive).

    Raises:
        MoodError: ``folder`` does not exist, is not a folder or cannot be listed (a usage error).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise MoodError(f"{folder}: input folder does not exist or is not a folder")
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        raise MoodError(f"{folder}: cannot list the input folder ({exc.strerror or exc})") from None
    scan = InputScan()
    for p in entries:
        if p.name.startswith("."):
            scan.ignored.append((p, "hidden"))
        elif p.is_dir():  # follows links: a link to a folder is a folder
            scan.ignored.append((p, "sub-folder, not searched"))
        elif not is_nifti(p):
            scan.ignored.append((p, "not a .nii/.nii.gz name"))
        else:
            scan.volumes.append(p)  # regular file, symlink (even broken), FIFO...: the reader decides
    return scan


def log_ignored(scan: InputScan, limit: int = 10) -> None:
    """One INFO line naming the ignored entries (hidden ones only counted)."""
    shown = [f"{p.name} ({why})" for p, why in scan.ignored if why != "hidden"]
    hidden = len(scan.ignored) - len(shown)
    if not shown and not hidden:
        return
    more = f", ... {len(shown) - limit} more" if len(shown) > limit else ""
    extra = f"; {hidden} hidden entries" if hidden else ""
    log.info("ignored %d entries that are not volumes to score: %s%s%s", len(scan.ignored),
             ", ".join(shown[:limit]), more, extra)


def prepare_output_dir(out_dir: str | Path, input_dirs: Iterable[str | Path] = (), pixel: bool = True) -> Path:
    """Create ``out_dir`` if needed and prove it is writable (a hidden probe file is created and removed).

    Raises:
        MoodError: it cannot be created or written to, or ``pixel`` outputs would overwrite the inputs
            (``out_dir`` is one of ``input_dirs``). The CLI turns this into a usage error (exit code 2).
    """
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise MoodError(f"{out_dir}: output path exists and is not a folder") from None
    except OSError as exc:
        raise MoodError(f"{out_dir}: cannot create the output folder ({exc.strerror or exc})") from None
    if not out_dir.is_dir():
        raise MoodError(f"{out_dir}: output path exists and is not a folder")
    if pixel and any(Path(d).is_dir() and os.path.samefile(d, out_dir) for d in set(map(Path, input_dirs))):
        raise MoodError(f"{out_dir}: output folder is the input folder; pixel outputs would overwrite the inputs")
    try:
        fd, probe = tempfile.mkstemp(prefix=".mood-write-probe.", suffix=".tmp", dir=out_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise MoodError(f"{out_dir}: output folder is not writable ({exc.strerror or exc})") from None
    return out_dir


def check_output_dir(out_dir: str | Path, option: str) -> Path:
    """:func:`prepare_output_dir` for the folder a command-line ``option`` names: failure is an
    :class:`~mood_detector.errors.OptionError` naming the option (a usage error, found before the work starts
    rather than when its first output is written)."""
    try:
        return prepare_output_dir(out_dir, pixel=False)
    except MoodError as exc:
        raise OptionError(option, str(exc)) from None


def stale_temps(out_dir: str | Path, output_names: Iterable[str]) -> list[Path]:
    """Hidden temp files ``.<name>.XXXXXXXX.tmp`` in ``out_dir`` whose ``<name>`` is one of ``output_names``."""
    names = set(output_names)
    found: list[Path] = []
    try:
        with os.scandir(out_dir) as it:
            for entry in it:
                m = _TEMP_RE.match(entry.name)
                if m and m.group("name") in names and entry.is_file(follow_symlinks=False):
                    found.append(Path(entry.path))
    except OSError:
        return []
    return sorted(found)


def clean_stale_temps(out_dir: str | Path, output_names: Iterable[str]) -> list[Path]:
    """Remove the temp files an interrupted run left for ``output_names``; returns what was removed."""
    removed = []
    for p in stale_temps(out_dir, output_names):
        try:
            p.unlink()
            removed.append(p)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("%s: cannot remove stale temporary file (%s)", p, exc.strerror or exc)
    if removed:
        log.info("%s: removed %d temporary files left by an interrupted run", out_dir, len(removed))
    return removed
