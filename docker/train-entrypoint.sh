#!/bin/sh
# Entry point of the training image (POSIX sh).
#
#   docker run ... detector-train brain|abdom [mood-detector train options...]
#   docker run ... detector-train <command...>    anything else is run as given
#
# Trains on every *.nii / *.nii.gz in MOOD_TRAIN_DIR and writes
#   MOOD_WEIGHTS_OUT/<kind>/<detector>.safetensors + <detector>.json (the model card)
#   MOOD_WEIGHTS_OUT/<kind>/<detector>_run/      (checkpoints and loss_log.csv; --resume continues from here)
# Any `mood-detector train` option is passed through (e.g. --epochs 20 --swa-epochs 10 --detector fpi);
# --detector (default: MOOD_DETECTOR, else nsa, the inference image's default) also names the output file.
# Environment: MOOD_TRAIN_DIR (/mnt/train), MOOD_WEIGHTS_OUT (/mnt/weights), MOOD_DETECTOR (nsa),
#   MOOD_PYTHON (python3), MOOD_LOG_LEVEL (INFO), MOOD_CACHE_DIR (/tmp/mood-cache: HOME, TMPDIR and the torch/matplotlib caches).
set -eu

die() {
  echo "mood-detector-train: error: $*" >&2
  exit 2
}

usage() {
  cat >&2 <<'EOF'
usage: detector-train brain|abdom [mood-detector train options...]
       detector-train <command...>
folders: MOOD_TRAIN_DIR (default /mnt/train) -> MOOD_WEIGHTS_OUT (default /mnt/weights)/<kind>/<detector>.safetensors
EOF
}

case "${1-}" in
  brain | abdom)
    kind=$1
    shift
    ;;
  -h | --help)
    usage
    exit 0
    ;;
  "")
    usage
    exit 2
    ;;
  *) exec "$@" ;;
esac

train_dir=${MOOD_TRAIN_DIR:-/mnt/train}
out_dir=${MOOD_WEIGHTS_OUT:-/mnt/weights}
py=${MOOD_PYTHON:-python3}

detector=${MOOD_DETECTOR:-nsa}
prev=
for arg in "$@"; do
  [ "$prev" = --detector ] && detector=$arg
  case "$arg" in --detector=*) detector=${arg#--detector=} ;; esac
  prev=$arg
done

[ -d "$train_dir" ] || die "training folder $train_dir does not exist (mount it: -v <data>:/mnt/train)"
found=
for f in "$train_dir"/*.nii "$train_dir"/*.nii.gz; do
  if [ -f "$f" ]; then
    found=1
    break
  fi
done
[ -n "$found" ] || die "no .nii or .nii.gz volumes in $train_dir"
mkdir -p "$out_dir/$kind" 2>/dev/null && [ -w "$out_dir/$kind" ] ||
  die "weights folder $out_dir/$kind cannot be written by uid $(id -u) (mount a writable folder: -v <weights>:/mnt/weights)"

# torch creates its compile cache folder as soon as an optimizer is built (torch._dynamo import), so the caches
# need a writable home: MOOD_CACHE_DIR, default /tmp/mood-cache (the training container's root is writable).
scratch=${MOOD_CACHE_DIR:-/tmp/mood-cache}
export HOME="$scratch/home" TMPDIR="$scratch/tmp" XDG_CACHE_HOME="$scratch/cache" MPLCONFIGDIR="$scratch/matplotlib" \
  TORCH_HOME="$scratch/torch" TORCHINDUCTOR_CACHE_DIR="$scratch/inductor" TRITON_CACHE_DIR="$scratch/triton" \
  CUDA_CACHE_PATH="$scratch/cuda"
export CUDA_CACHE_DISABLE=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PYTHONSAFEPATH=1

exec "$py" -m mood_detector --log-level "${MOOD_LOG_LEVEL:-INFO}" train \
  --input "$train_dir" --output "$out_dir/$kind/$detector.safetensors" --kind "$kind" --detector "$detector" "$@"
