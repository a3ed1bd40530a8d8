#!/bin/sh
# MOOD harness script (POSIX sh): sample task, abdom weights.
#   sh /workspace/run_sample_abdom.sh <input folder> <output folder> [mood-detector predict options...]
# Writes <out>/<input file name>.txt: one float in [0, 1].
# MOOD_WORKSPACE (default /workspace) is where entrypoint.sh lives (the tests run the scripts from the repo).
set -eu
MOOD_INPUT_DIR=${1:-${MOOD_INPUT_DIR:-/mnt/data}}
MOOD_OUTPUT_DIR=${2:-${MOOD_OUTPUT_DIR:-/mnt/pred}}
export MOOD_INPUT_DIR MOOD_OUTPUT_DIR
if [ $# -gt 2 ]; then shift 2; else set --; fi
exec sh "${MOOD_WORKSPACE:-/workspace}/entrypoint.sh" sample abdom "$@"
