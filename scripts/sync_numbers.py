"""Keep the numbers of the Markdown tables equal to their source files.

A table quoted from a source is put between two markers in README.md, docs/*.md or a model card::

    <!-- numbers: docs/results/readme.json -->
    | detector | pixel AP | ... |
    ...
    <!-- /numbers -->

The source (a path from the repository root) is a JSON file kept beside what measured it::

    {"what": "...", "command": "the command that measured the rows", "measured": "date, model version",
     "columns": ["detector", "pixel AP", ...],
     "format": {"pixel AP": ".3f"},              # per column: how a number is printed (default: as stored)
     "rows": [{"detector": "nsa", "pixel AP": 0.536,
               "_bold": ["pixel AP"],            # optional: cells printed in bold
               "_format": {"pixel AP": ".4f"}}]} # optional: a cell printed otherwise than its column

``python scripts/sync_numbers.py`` rewrites every marked table from its source; ``--check`` only reports the
tables that differ (exit 1), which is what tests/docs/test_numbers.py runs; ``--adopt`` writes a missing
source from the table found between new markers (to bring an existing table under the scheme once).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("sync_numbers")

REPO = Path(__file__).resolve().parents[1]
BEGIN = re.compile(r"^<!-- numbers: (\S+) -->\s*$")
END = "<!-- /numbers -->"
NUMBER = re.compile(r"^-?\d+(?:\.\d+)?$")


def pages(repo: Path = REPO) -> list[Path]:
    """The Markdown files that may hold marked tables: README, docs/ and the model cards."""
    return [repo / "README.md", *sorted((repo / "docs").glob("**/*.md")),
            *sorted((repo / "weights").glob("**/*.md"))]


@dataclass
class Region:
    """One marked table: its page, source file, and the line span of its body (between the markers)."""

    page: Path
    source: str
    start: int  # index of the first body line
    end: int    # index of the closing marker line

    def body(self, lines: list[str]) -> list[str]:
        return lines[self.start:self.end]


def regions(page: Path) -> list[Region]:
    """The marked tables of ``page``; an unclosed marker is a ``ValueError``."""
    lines = page.read_text(encoding="utf-8").splitlines()
    out, i = [], 0
    while i < len(lines):
        m = BEGIN.match(lines[i].strip())
        if m:
            j = next((k for k in range(i + 1, len(lines)) if lines[k].strip() == END), None)
            if j is None:
                raise ValueError(f"{page}:{i + 1}: '<!-- numbers: {m.group(1)} -->' has no '{END}'")
            out.append(Region(page, m.group(1), i + 1, j))
            i = j
        i += 1
    return out


def _cell(value: Any, fmt: str | None, bold: bool) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        text = str(value)
    else:
        text = format(value, fmt) if fmt else str(value)
    return f"**{text}**" if bold else text


def render(source: dict[str, Any]) -> list[str]:
    """The Markdown table of a source."""
    cols = source["columns"]
    fmts = source.get("format", {})
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in source["rows"]:
        bold, own = set(row.get("_bold", [])), row.get("_format", {})
        cells = [_cell(row.get(c, ""), own.get(c, fmts.get(c)), c in bold) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _split(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def adopt(table: list[str]) -> dict[str, Any]:
    """A source holding the numbers of an existing table exactly as printed (formats inferred from the digits)."""
    rows_text = [r for r in table if r.strip().startswith("|")]
    cols = _split(rows_text[0])
    rows, col_fmts = [], {c: {} for c in cols}
    for line in rows_text[2:]:
        row: dict[str, Any] = {}
        for col, cell in zip(cols, _split(line)):
            bold = cell.startswith("**") and cell.endswith("**") and len(cell) > 4
            text = cell[2:-2] if bold else cell
            if NUMBER.match(text):
                decimals = len(text.partition(".")[2])
                row[col] = float(text) if decimals else int(text)
                fmt = f".{decimals}f" if decimals else "d"
                row.setdefault("_cellfmt", {})[col] = fmt
                col_fmts[col][fmt] = col_fmts[col].get(fmt, 0) + 1
                if bold:
                    row.setdefault("_bold", []).append(col)
            else:
                row[col] = cell
        rows.append(row)
    fmts = {c: max(f, key=f.get) for c, f in col_fmts.items() if f}
    for row in rows:
        own = {c: f for c, f in row.pop("_cellfmt", {}).items() if f != fmts.get(c)}
        if own:
            row["_format"] = own
    return {"what": "", "command": "", "measured": "", "columns": cols, "format": fmts, "rows": rows}


def load(source: str, repo: Path = REPO) -> dict[str, Any]:
    return json.loads((repo / source).read_text(encoding="utf-8"))


def diff(expected: list[str], found: list[str]) -> list[str]:
    """Line-level differences, numbers first: the cells whose text differs."""
    out = []
    for i in range(max(len(expected), len(found))):
        want = expected[i] if i < len(expected) else "(no row)"
        got = found[i] if i < len(found) else "(no row)"
        if want != got:
            cells = [f"{g!r} should be {w!r}" for w, g in zip(_split(want), _split(got)) if w != g]
            out.append(f"row {i + 1}: " + ("; ".join(cells) if cells else f"{got!r} should be {want!r}"))
    return out


def check(repo: Path = REPO) -> list[str]:
    """One problem line per marked table whose numbers differ from its source (empty: all in sync)."""
    problems = []
    for page in pages(repo):
        lines = page.read_text(encoding="utf-8").splitlines()
        for reg in regions(page):
            where = f"{page.relative_to(repo)}:{reg.start}"
            if not (repo / reg.source).is_file():
                problems.append(f"{where}: source {reg.source} does not exist")
                continue
            found = [x for x in reg.body(lines) if x.strip()]
            for d in diff(render(load(reg.source, repo)), found):
                problems.append(f"{where} (source {reg.source}): {d}")
    return problems


def sync(repo: Path = REPO, adopt_missing: bool = False) -> list[Path]:
    """Rewrite every marked table from its source; returns the pages changed. With ``adopt_missing``, a
    missing source is first written from the table between the markers."""
    changed = []
    for page in pages(repo):
        lines = page.read_text(encoding="utf-8").splitlines()
        for reg in reversed(regions(page)):  # from the end: earlier line numbers stay valid
            path = repo / reg.source
            if not path.is_file():
                if not adopt_missing:
                    raise FileNotFoundError(f"{page}: source {reg.source} does not exist (--adopt writes it)")
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(adopt(reg.body(lines)), indent=2, ensure_ascii=False) + "\n",
                                encoding="utf-8")
                log.info("wrote %s from %s", reg.source, page.relative_to(repo))
            lines[reg.start:reg.end] = render(load(reg.source, repo))
        text = "\n".join(lines) + "\n"
        if text != page.read_text(encoding="utf-8"):
            page.write_text(text, encoding="utf-8")
            changed.append(page)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Rewrite the marked Markdown tables from their JSON sources.")
    parser.add_argument("--check", action="store_true", help="Only report tables that differ (exit 1 if any).")
    parser.add_argument("--adopt", action="store_true",
                        help="Write a missing source from the table found between its markers, then sync.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.check:
        problems = check()
        for p in problems:
            log.error("%s", p)
        return 1 if problems else 0
    for page in sync(adopt_missing=args.adopt):
        log.info("updated %s", page.relative_to(REPO))
    return 0


if __name__ == "__main__":
    sys.exit(main())
