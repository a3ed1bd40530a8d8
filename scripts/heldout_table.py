"""Merge results of ``scripts/heldout_real.py --results`` into one numbers source with a ``model`` column.

Usage::

    python scripts/heldout_table.py --out docs/results/heldout_brain.json \
        "nsa (bundled)=heldout/brain_old.json" "nsa, random=heldout/brain_new.json"

Each argument is ``LABEL=PATH``; the rows of PATH are copied in order with ``model`` = LABEL, and the commands
of every input are kept, so ``scripts/sync_numbers.py`` can render the marked tables from the merged file.

With ``--per-type`` each PATH is instead a ``heldout_real.py --out`` folder, and the table has one row per
source with the pixel AP of each outlier type (one case each: indicative only) and overall::

    python scripts/heldout_table.py --per-type --out docs/results/heldout_per_type.json \
        "nsa (bundled)=heldout/brain" "nsa (bundled), --adapt finetune=heldout/brain_ft"
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


#: outlier types in the order of ``make-testset`` (the FPI paper's five), then the overall row
TYPES = ("uniform_addition", "noise_addition", "sink_source", "uniform_shift", "reflection", "overall")


def per_type(parts: list[tuple[str, Path]], what: str, drop: frozenset[str] = frozenset()) -> dict:
    """One source with the pixel AP of each outlier type per ``(label, heldout_real.py --out folder)`` and
    source in it (read from ``summary.json``)."""
    columns = ["model", "source", *(t.replace("_", " ") for t in TYPES)]
    rows, commands = [], []
    for label, folder in parts:
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
        commands.append(f"{label}: scripts/heldout_real.py --out {folder}")
        for entry in (e for e in summary if e["source"] not in drop):
            pixel = entry["pixel"]
            rows.append({"model": label, "source": entry["source"],
                         **{t.replace("_", " "): round(pixel[t]["ap"], 3) for t in TYPES if t in pixel}})
    return {"what": what, "command": commands, "measured": date.today().isoformat(), "columns": columns,
            "format": {c: ".3f" for c in columns[2:]}, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="the merged numbers source to write")
    ap.add_argument("--what", default="held-out real scans with planted outliers", help="what the table shows")
    ap.add_argument("--drop-source", action="append", default=[],
                    help="leave out this source's rows (repeatable), e.g. one a model was trained on [default: none]")
    ap.add_argument("--per-type", action="store_true",
                    help="PATH is a heldout_real.py --out folder; one column per outlier type [default: off]")
    ap.add_argument("parts", nargs="+",
                    help="LABEL=PATH of a heldout_real.py --results file (--per-type: --out folder)")
    args = ap.parse_args(argv)
    parts = []
    for item in args.parts:
        label, sep, path = item.partition("=")
        if not sep:
            ap.error(f"{item!r}: expected LABEL=PATH")
        parts.append((label, Path(path)))
    build = per_type if args.per_type else merge
    table = build(parts, args.what, frozenset(args.drop_source))
    write_text_atomic(args.out, json.dumps(table, indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
