#!/usr/bin/env bash
# scripts/gpu_check.sh: the GPU check, one command on one CUDA GPU (H100/H200 class; sized for under 8 minutes).
#
# Usage: bash scripts/gpu_check.sh [--dry-run] [--out FILE] [--only STEPS] [--keep] [-h|--help]
#
# Runs every step, prints ONE table (step | what | result / time | pass/fail) and exits 1 if any step failed:
#   env   python, torch, the GPU (bf16 support) and the packages the steps need
#   a     the CUDA-only tests: pytest -m cuda tests/cuda (CPU vs GPU scores, bf16 training, NCCL, batch size)
#   data  16 generated 256^3 brains (mood-detector make-data brain), used by the steps below
#   b     nsa training on CUDA with bf16 autocast (mood-detector train --device cuda, --amp is the default)
#   c     nsa training under torchrun --standalone --nproc_per_node 1, then, under torchrun too, a process
#         group on the backend mood_detector/distributed.py picks for this rank's device (nccl on the GPU,
#         gloo on the CPU) with an all_reduce and a barrier (with one process the package itself creates no
#         process group, so the check makes this one)
#   d     predict pixel / sample on the 16 brains against the I/O floor (mood-detector benchmark-speed,
#         full-width FPI network)
#   e     predict --adapt finetune (600 steps) and --adapt auto with the bundled nsa brain model on the
#         16 brains: the fine-tune's time and share of the scoring, and what auto chose
#
# Options:
#   --dry-run     the same steps on the CPU at tiny sizes (6 brains of 32^3, 2 training steps, width 0.125,
#                 2 fine-tune steps; step e uses step b's model), well under 2 minutes on 2 cores; step a
#                 then shows the CUDA tests collected and skipped (no GPU)
#   --out FILE    also write the table to FILE
#   --only STEPS  comma list of the steps to run (env always runs; data, and in a dry run b, are added when
#                 a later step needs them), e.g. --only d,e
#   --keep        keep the scratch folder (its path is printed) instead of removing it
#   -h, --help    this text
#
# Environment: PYTHON (default: the repo's .venv/bin/python if present, else python3); the package's
# requirements (requirements.txt), nilearn and pytest must be importable there. GPU_CHECK_TIMEOUT (default
# 300): seconds each command of a step may run before it is stopped and its step fails. GPU_CHECK_FAIL=STEPS
# makes those steps fail on purpose (to check that a failure shows in the table and the exit code).
set -uo pipefail

usage() { sed -n '2,/^set -uo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }

REPO=$(cd "$(dirname "$0")/.." && pwd)
DRY=0 OUT_FILE="" ONLY="" KEEP=0
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --out) [ $# -ge 2 ] || { echo "gpu_check: --out needs a file" >&2; exit 2; }; OUT_FILE=$2; shift ;;
    --out=*) OUT_FILE=${1#--out=} ;;
    --only) [ $# -ge 2 ] || { echo "gpu_check: --only needs a list of steps" >&2; exit 2; }; ONLY=$2; shift ;;
    --only=*) ONLY=${1#--only=} ;;
    --keep) KEEP=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu_check: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
ALL_STEPS="env a data b c d e"
for s in ${ONLY//,/ }; do
  case " $ALL_STEPS " in *" $s "*) ;; *) echo "gpu_check: unknown step '$s' in --only (steps: $ALL_STEPS)" >&2; exit 2 ;; esac
done
if [ -n "$OUT_FILE" ]; then  # an absolute path (the steps run in the repo root), writable before any step runs
  case "$OUT_FILE" in /*) ;; *) OUT_FILE="$PWD/$OUT_FILE" ;; esac
  : >"$OUT_FILE" || { echo "gpu_check: cannot write --out $OUT_FILE" >&2; exit 2; }
fi

cd "$REPO" || exit 2
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# every command of a step runs under timeout: a hung one fails its step (exit 124) and the others still run
LIMIT=(timeout --kill-after=20 "${GPU_CHECK_TIMEOUT:-300}")
MD=("${LIMIT[@]}" "$PYTHON" -m mood_detector)
PROBE=("${LIMIT[@]}" "$PYTHON" scripts/gpu_check_probe.py)
TORCHRUN=("${LIMIT[@]}" "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node 1)

CORES=$(env -u OMP_NUM_THREADS nproc)  # nproc reports OMP_NUM_THREADS where it is set
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX") || exit 2
cleanup() { if [ "$KEEP" = 1 ]; then echo "scratch folder kept: $SCRATCH"; else rm -rf "$SCRATCH"; fi; }
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$SCRATCH/logs" "$SCRATCH/tmp"
export TMPDIR="$SCRATCH/tmp"  # what the steps' tools leave in the temporary folder goes with the scratch folder
DATA="$SCRATCH/brains"

# --- sizes per mode -------------------------------------------------------------------------------------------
if [ "$DRY" = 1 ]; then
  MODE="dry run (CPU, tiny sizes)" DEVICE=cpu N_BRAINS=6 EDGE=32 GEN_JOBS=1
  TRAIN=(--size 32 --width 0.125 --batch-size 8 --opt final_bn=false --opt probe_volumes=0 --opt train_axes=model)
  TRAIN_STEPS=2 TORCHRUN_STEPS=2 EXPECT_BACKEND=gloo
  SPEED=(-n 2 --size 32 --width 0.125 --naive-volumes 1)
  ADAPT_WEIGHTS="$SCRATCH/b/nsa.safetensors" ADAPT_STEPS=2
  # one torch thread per process: on a small shared CPU, OpenMP's spin-waiting makes more threads much slower
  export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
  THREADS=(--threads 1)
else
  MODE="GPU" DEVICE=cuda N_BRAINS=16 EDGE=256 GEN_JOBS=8
  TRAIN=(--size 256 --width 1 --batch-size 32)
  TRAIN_STEPS=30 TORCHRUN_STEPS=10 EXPECT_BACKEND=nccl
  SPEED=(-n 16 --naive-volumes 2)
  ADAPT_WEIGHTS=weights/brain/nsa.safetensors ADAPT_STEPS=600
  THREADS=()
fi

# "WHAT failed (exit N)", or "WHAT timed out" for timeout's exit 124
failed() { if [ "$2" -eq 124 ]; then echo "$1 timed out after ${LIMIT[2]} s"; else echo "$1 failed (exit $2)"; fi; }

# --- the steps: each writes its one-line result to $RESULT and returns non-zero on failure --------------------
step_env() {
  local need=(); [ "$DRY" = 1 ] || need=(--need-cuda)
  "${PROBE[@]}" env "${need[@]}" >"$RESULT"
}

step_a() {
  local args=(-q -p no:cacheprovider -m cuda tests/cuda) rc line
  "${LIMIT[@]}" "$PYTHON" -m pytest "${args[@]}"; rc=$?
  line=$(grep -E '^(=+ )?[0-9]+ (passed|skipped|failed|error|deselected)' "$LOG" | tail -1 | sed 's/=//g; s/^ *//; s/ *$//')
  echo "pytest -m cuda tests/cuda: ${line:-no summary (rc $rc)}" >"$RESULT"
  [ "$rc" -eq 0 ] || return 1
  if [ "$DRY" = 1 ]; then  # collected, and every one skipped: no GPU
    if [[ "$line" == *skipped* && "$line" != *passed* ]]; then echo "skip" >"$STATUS_OVERRIDE"; return 0; fi
    return 1
  fi
  [[ "$line" == *passed* && "$line" != *skipped* ]]  # on a GPU every CUDA test must run
}

step_data() {
  local per=$(( (N_BRAINS + GEN_JOBS - 1) / GEN_JOBS )) j start n pids=() rc=0
  for ((j = 0; j < GEN_JOBS; j++)); do
    start=$((j * per)); n=$((N_BRAINS - start < per ? N_BRAINS - start : per))
    [ "$n" -gt 0 ] || break
    "${MD[@]}" make-data brain --n "$n" --start "$start" --size "$EDGE" --out "$SCRATCH/gen$j" &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || rc=1; done
  [ "$rc" -eq 0 ] || { echo "make-data failed" >"$RESULT"; return 1; }
  mkdir -p "$DATA" && mv "$SCRATCH"/gen*/*.nii.gz "$DATA"/ || return 1
  local got; got=$(find "$DATA" -name '*.nii.gz' | wc -l)
  echo "$got brains of ${EDGE}^3 (make-data brain, $GEN_JOBS process(es))" >"$RESULT"
  [ "$got" -eq "$N_BRAINS" ]
}

step_b() {
  "${MD[@]}" train -i "$DATA" -o "$SCRATCH/b/nsa.safetensors" --detector nsa --device "$DEVICE" --amp \
    --steps "$TRAIN_STEPS" "${TRAIN[@]}" || { failed "train" $? >"$RESULT"; return 1; }
  local amp="--amp: bf16 autocast"; [ "$DEVICE" = cuda ] || amp="fp32 (bf16 autocast is CUDA-only)"
  local res rc; res=$("${PROBE[@]}" losslog "$SCRATCH/b/nsa_run"); rc=$?
  echo "nsa, $TRAIN_STEPS steps, $amp: $res" >"$RESULT"
  [ "$rc" -eq 0 ] && [ -s "$SCRATCH/b/nsa.safetensors" ]
}

step_c() {
  "${TORCHRUN[@]}" -m mood_detector train -i "$DATA" -o "$SCRATCH/c/nsa.safetensors" --detector nsa \
    --device "$DEVICE" --steps "$TORCHRUN_STEPS" "${TRAIN[@]}" --opt final_bn=false \
    || { failed "torchrun train" $? >"$RESULT"; return 1; }
  local res rc dist drc
  res=$("${PROBE[@]}" losslog "$SCRATCH/c/nsa_run"); rc=$?
  dist=$("${TORCHRUN[@]}" scripts/gpu_check_probe.py dist --expect "$EXPECT_BACKEND" | tail -1); drc=$?
  echo "torchrun train $TORCHRUN_STEPS steps: $res; ${dist:-process group probe failed}" >"$RESULT"
  [ "$rc" -eq 0 ] && [ "$drc" -eq 0 ] && [ -s "$SCRATCH/c/nsa.safetensors" ]
}

step_d() {
  "${MD[@]}" benchmark-speed -i "$DATA" --device "$DEVICE" "${SPEED[@]}" "${THREADS[@]}" --memory none --no-gzip \
    --json "$SCRATCH/d.json" || { failed "benchmark-speed" $? >"$RESULT"; return 1; }
  "${PROBE[@]}" speed "$SCRATCH/d.json" >"$RESULT"
}

step_e() {
  local m res out=() rc=0
  [ -s "$ADAPT_WEIGHTS" ] || { echo "no model at $ADAPT_WEIGHTS" >"$RESULT"; return 1; }
  for m in finetune auto; do
    "${MD[@]}" predict sample -i "$DATA" -o "$SCRATCH/e_$m" -w "$ADAPT_WEIGHTS" --device "$DEVICE" \
      --adapt "$m" --adapt-steps "$ADAPT_STEPS" "${THREADS[@]}" --no-progress 2>&1 | tee "$SCRATCH/e_$m.log"
    [ "${PIPESTATUS[0]}" -eq 0 ] || rc=1
    res=$("${PROBE[@]}" adapt "$m" "$SCRATCH/e_$m.log") || rc=1
    out+=("--adapt $m: $res")
  done
  local joined; joined=$(printf ' / %s' "${out[@]}")
  echo "${joined:3}" >"$RESULT"
  return "$rc"
}

declare -A WHAT=(
  [env]="environment"
  [a]="CUDA-only tests (pytest -m cuda)"
  [data]="generated brains (make-data)"
  [b]="bf16 training steps, nsa (train)"
  [c]="torchrun, 1 process; process group"
  [d]="predict vs I/O floor (benchmark-speed)"
  [e]="test-time fine-tune; --adapt auto (predict)"
)

# --- which steps: --only plus what they need --------------------------------------------------------------------
want() { [ -z "$ONLY" ] || [[ ",$ONLY,env,$EXTRA," == *",$1,"* ]]; }
EXTRA=""
if [ -n "$ONLY" ]; then
  [[ ",$ONLY," =~ ,(b|c|d|e), ]] && EXTRA+=",data"
  [ "$DRY" = 1 ] && [[ ",$ONLY," == *",e,"* ]] && EXTRA+=",b"
fi

ROWS=() FAILED=()
STATUS_OVERRIDE="$SCRATCH/status_override"
t_all=$(date +%s.%N)
for s in $ALL_STEPS; do
  want "$s" || continue
  LOG="$SCRATCH/logs/$s.log" RESULT="$SCRATCH/logs/$s.result"
  : >"$RESULT"; rm -f "$STATUS_OVERRIDE"
  echo "=== gpu_check step $s: ${WHAT[$s]} ===" >&2
  t0=$(date +%s.%N)
  if [[ ",${GPU_CHECK_FAIL:-}," == *",$s,"* ]]; then
    echo "failure injected by GPU_CHECK_FAIL" | tee "$RESULT" >"$LOG"; rc=1
  else
    ( "step_$s" ) >"$LOG" 2>&1
    rc=$?
  fi
  secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  if [ "$rc" -eq 0 ]; then status=pass; [ -s "$STATUS_OVERRIDE" ] && status=$(cat "$STATUS_OVERRIDE"); else status=FAIL; FAILED+=("$s"); fi
  result=$(tr '\n' ' ' <"$RESULT" | sed 's/ *$//')
  if [ "$status" = FAIL ]; then  # what went wrong, from the end of the step's log
    last=$(grep -v '^[[:space:]]*$' "$LOG" | tail -n 1 | cut -c1-160)
    [ -z "$last" ] || [[ "$result" == *"$last"* ]] || result="${result:+$result; }log: $last"
  fi
  result=${result//|/\\|}
  ROWS+=("| $s | ${WHAT[$s]} | ${result:-no output}; ${secs} s | $status |")
  echo "--- step $s: $status (${secs} s)" >&2
done
total=$(awk -v a="$t_all" -v b="$(date +%s.%N)" 'BEGIN { printf "%.0f", b - a }')

commit=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -z "$(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null)" ] || commit+=" with local changes"
{
  echo "gpu_check: $MODE, commit $commit, $(date -u '+%Y-%m-%d %H:%M UTC'), $CORES CPU cores, ${total} s in all"
  echo
  echo "| step | what | result / time | pass/fail |"
  echo "|---|---|---|---|"
  printf '%s\n' "${ROWS[@]}"
} >"$SCRATCH/table.md"
cat "$SCRATCH/table.md"
[ -z "$OUT_FILE" ] || cp "$SCRATCH/table.md" "$OUT_FILE"

if [ "${#FAILED[@]}" -gt 0 ]; then
  for s in "${FAILED[@]}"; do
    echo
    echo "--- log of failed step $s (last 25 lines) ---"
    if [ -s "$SCRATCH/logs/$s.log" ]; then tail -n 25 "$SCRATCH/logs/$s.log"; else echo "(no output: see its row)"; fi
  done
  echo
  echo "gpu_check: FAILED: ${FAILED[*]}"
  exit 1
fi
echo
echo "gpu_check: all steps passed"
