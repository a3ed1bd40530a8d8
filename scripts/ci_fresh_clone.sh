#!/usr/bin/env bash
# CI (.ci/run): the README's quick-start command 1 (`bash scripts/demo.sh`) in a fresh clone of this checkout's
# HEAD, as a new user runs it (own .venv, nothing ignored by git carried over), then checks what the demo wrote:
# every output path it prints exists, and its predictions follow the MOOD contract (pixel: a NIfTI per input with
# the input's shape, values in [0, 1]; sample: <name>.txt holding one float in [0, 1]).
# The test suite is not run again in the clone (.ci/run runs it once in the checkout).
#
# usage: bash scripts/ci_fresh_clone.sh [demo options...]      (passed to `bash scripts/demo.sh`)
# environment: MOOD_CI_KEEP=1 keeps the clone (its path is printed).
set -euo pipefail
cd "$(dirname "$0")/.."
git rev-parse --git-dir >/dev/null 2>&1 || { echo "ci_fresh_clone: $PWD is not a git checkout" >&2; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/mood-fresh-clone.XXXXXX")
if [ "${MOOD_CI_KEEP:-0}" = 1 ]; then
  trap 'echo "ci_fresh_clone: clone kept in $tmp/clone"' EXIT
else
  trap 'rm -rf "$tmp"' EXIT
fi
echo "ci_fresh_clone: cloning $(git rev-parse --short HEAD) into $tmp/clone"
git clone -q . "$tmp/clone"
cd "$tmp/clone"

bash scripts/demo.sh "$@" | tee "$tmp/demo.log"

.venv/bin/python - "$tmp/demo.log" <<'EOF'
"""Check the demo's printed outputs and its predictions against the MOOD contract."""
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

lines = Path(sys.argv[1]).read_text(encoding="utf-8").splitlines()
problems = []
if "demo outputs:" not in lines:
    sys.exit("ci_fresh_clone: the demo printed no 'demo outputs:' list")
outputs = {}
for line in lines[lines.index("demo outputs:") + 1:]:
    if not line.startswith("  ") or not line.strip():
        break
    name, path = line.strip().rsplit(None, 1)
    outputs[name.strip()] = Path(path)
    if not Path(path).exists():
        problems.append(f"{name.strip()}: {path} does not exist")
# "[<kind> ]predictions" holds the pixel and sample outputs of "[<kind> ]test inputs" (a folder of volumes) or,
# where no such entry is printed, of "[<kind> ]test set"/toy (a make-testset folder).
pred_keys = [k for k in outputs if k.endswith("predictions")]
if not pred_keys:
    problems.append("the demo printed no predictions folder")
checked = 0
for key in pred_keys if not problems else []:
    prefix = key[: -len("predictions")]
    src = outputs.get(prefix + "test inputs") or (outputs[prefix + "test set"] / "toy"
                                                   if prefix + "test set" in outputs else None)
    if src is None:
        problems.append(f"'{key}': the demo printed no '{prefix}test inputs' or '{prefix}test set'")
        continue
    inputs = sorted(p for p in src.iterdir() if p.name.endswith((".nii", ".nii.gz")))
    if not inputs:
        problems.append(f"no volumes in {src}")
    for f in inputs:
        pixel, sample = outputs[key] / f.name, outputs[key] / (f.name + ".txt")
        if not pixel.is_file() or not sample.is_file():
            problems.append(f"{f.name}: missing {pixel if not pixel.is_file() else sample}")
            continue
        data = np.asarray(nib.load(str(pixel)).dataobj, dtype=np.float32)
        if data.shape != nib.load(str(f)).shape or not (np.isfinite(data).all() and 0 <= data.min() <= data.max() <= 1):
            problems.append(f"{pixel}: shape {data.shape} or values outside [0, 1]")
        value = float(sample.read_text().strip())
        if not 0 <= value <= 1:
            problems.append(f"{sample}: {value} outside [0, 1]")
        checked += 1
print(f"ci_fresh_clone: {len(outputs)} printed outputs exist; pixel and sample predictions of {checked} inputs checked")
if problems:
    sys.exit("ci_fresh_clone: " + "\nci_fresh_clone: ".join(problems))
EOF
echo "ci_fresh_clone: ok"
