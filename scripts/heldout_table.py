"""Merge results of ``scripts/heldout_real.py --results`` into one numbers source with a ``model`` column.

Usage::

    python scripts/heldout_table.py --out docs/results/heldout_brain.json \
        "nsa (bundled)=heldout/brain_old.json" "nsa, random=heldout/brain_new.json"

Each argument is ``LABEL=PATH``; the rows of PATH are copied in order with ``model`` = LABEL, and the commands
of every input are kept, so ``scripts/sync_numbers.py`` can render the marked tables from the merged file.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path

from mood_detector.io.nifti import write_text_atomic


def merge(parts: list[tuple[str, Path]], what: str, drop: frozenset[str] = frozenset()) -> dict:
    """One source from ``(label, results file)`` pairs, without the rows of the sources in ``drop``."""
    rows, commands, columns = [], [], ["model"]
    for label, path in parts:
        src = json.loads(path.read_text(encoding="utf-8"))
        columns += [c for c in src["columns"] if c not in columns]
        commands.append(f"{label}: {src['command']}")
        rows += [{"model": label, **row} for row in src["rows"] if row["source"] not in drop]
    return {"what": what, "command": commands, "measured": date.today().isoformat(), "columns": columns,
            "rows": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="the merged numbers source to write")
    ap.add_argument("--what", default="held-out real scans with planted outliers", help="what the table shows")
    ap.add_argument("--drop-source", action="append", default=[],
                    help="leave out this source's rows (repeatable), e.g. one a model was trained on [default: none]")
    ap.add_argument("parts", nargs="+", help="LABEL=PATH of a heldout_real.py --results file")
    args = ap.parse_args(argv)
    parts = []
    for item in args.parts:
        label, sep, path = item.partition("=")
        if not sep:
            ap.error(f"{item!r}: expected LABEL=PATH")
        parts.append((label, Path(path)))
    write_text_atomic(args.out, json.dumps(merge(parts, args.what, frozenset(args.drop_source)), indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
