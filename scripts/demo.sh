#!/usr/bin/env bash
# README command 1: set up, then run the whole job on the embedded default data (no download, no MOOD data).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh requirements-dev.txt
exec .venv/bin/mood-detector demo --out demo "$@"
