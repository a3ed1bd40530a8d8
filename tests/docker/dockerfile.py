"""A small Dockerfile reader for the tests: instructions with line continuations joined, exec/shell forms split,
COPY sources and destinations, and the .dockerignore decision for a context path."""

from __future__ import annotations

import fnmatch
import json
import shlex
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction: upper-case keyword, raw argument text, first line number."""

    keyword: str
    args: str
    line: int

    def words(self) -> list[str]:
        """Arguments as a list: the JSON (exec) form if it is one, else shell-style words."""
        text = self.args.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                value = None
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                return value
        return shlex.split(text)


def parse(path: Path) -> list[Instruction]:
    """Instructions of the Dockerfile at ``path`` (comments and blank lines dropped, ``\\`` continuations joined)."""
    out: list[Instruction] = []
    buf: list[str] = []
    start = 0
    for no, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.rstrip()
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if buf and line.lstrip().startswith("#"):
            continue  # comment lines inside a continued instruction are ignored by Docker
        if not buf:
            start = no
        if line.endswith("\\"):
            buf.append(line[:-1])
            continue
        buf.append(line)
        text = " ".join(part.strip() for part in buf)
        buf = []
        keyword, _, args = text.partition(" ")
        out.append(Instruction(keyword.upper(), args.strip(), start))
    if buf:
        raise ValueError(f"{path}: unterminated line continuation at line {start}")
    return out


def copies(instructions: list[Instruction]) -> list[tuple[list[str], str]]:
    """(sources, destination) of every COPY/ADD without ``--from`` (flags such as --chown dropped)."""
    out = []
    for ins in instructions:
        if ins.keyword not in ("COPY", "ADD"):
            continue
        words = ins.words()
        if any(w.startswith("--from") for w in words):
            continue
        words = [w for w in words if not w.startswith("--")]
        out.append((words[:-1], words[-1]))
    return out


def last(instructions: list[Instruction], keyword: str) -> Instruction | None:
    """The last instruction with ``keyword`` (the one that takes effect for USER, ENTRYPOINT, ...)."""
    found = [i for i in instructions if i.keyword == keyword]
    return found[-1] if found else None


def env(instructions: list[Instruction]) -> dict[str, str]:
    """All ``ENV key=value`` settings (later ones win)."""
    out: dict[str, str] = {}
    for ins in instructions:
        if ins.keyword == "ENV":
            for word in shlex.split(ins.args):
                key, sep, value = word.partition("=")
                if sep:
                    out[key] = value
    return out


def dockerignored(rel_path: str, patterns: list[str]) -> bool:
    """Whether ``.dockerignore`` ``patterns`` leave ``rel_path`` out of the build context (last match wins; a
    pattern that matches a parent folder matches the path). Close to Docker's rules for simple patterns."""
    parts = Path(rel_path.rstrip("/")).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for raw in patterns:
        pat = raw.strip()
        if not pat or pat.startswith("#"):
            continue
        negate = pat.startswith("!")
        pat = pat.lstrip("!").strip().strip("/")
        if any(fnmatch.fnmatchcase(c, pat) for c in candidates):
            excluded = not negate
    return excluded
