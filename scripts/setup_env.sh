#!/usr/bin/env bash
# Create ./.venv (if missing) and install mood-detector with its pinned requirements and the given extras
# requirements file (default: requirements-dev.txt). Idempotent; safe to run on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
REQ="${1:-requirements-dev.txt}"
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install --quiet -r "$REQ"
.venv/bin/python -m pip install --quiet --no-deps -e .
