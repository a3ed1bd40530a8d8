#!/bin/sh
# Entry point of the MOOD inference image (POSIX sh: the organisers' harness runs the scripts with `sh`).
#
#   docker run ... detector pixel|sample [brain|abdom|auto] [mood-detector predict options...]
#   docker run ... detector <command...>      anything else is run as given, so the harness's
#                                             `sh /workspace/run_pixel_brain.sh /mnt/data /mnt/pred` works
#
# The kind (default auto = per volume, by its shape or its intensities: docs/container.md) picks the bundled
# weights <weights>/<kind>/<detector>.safetensors.
# Environment (defaults are the container's):
#   MOOD_INPUT_DIR   /mnt/data            folder of *.nii / *.nii.gz to score
#   MOOD_OUTPUT_DIR  /mnt/pred            results: <name> (pixel) or <name>.txt (sample)
#   MOOD_WEIGHTS_DIR /opt/mood/weights    bundled weights
#   MOOD_DETECTOR    nsa                  which detector's weights to use (fpi: the FPI models)
#   MOOD_DEVICE      auto                 auto = GPU if visible, else CPU with a warning; cpu; cuda; cuda:N
#   MOOD_PYTHON      python3              interpreter with mood-detector installed
#   MOOD_LOG_LEVEL   INFO
# Read-only root file system: nothing is written outside the output folder. Byte-code was compiled at build
# time and is not written at run time; the CUDA kernel cache is off; every cache or home folder a library might
# want points into <output>/.mood-cache, which is only created if something really writes there (nothing does
# in this package's inference path; the tests check that the output folder holds exactly the results).
set -eu

die() {
  echo "mood-detector: error: $*" >&2
  exit 2
}

usage() {
  cat >&2 <<'EOF'
usage: detector pixel|sample [brain|abdom|auto] [mood-detector predict options...]
       detector <command...>   (e.g. sh /workspace/run_pixel_brain.sh /mnt/data /mnt/pred)
folders: MOOD_INPUT_DIR (default /mnt/data) -> MOOD_OUTPUT_DIR (default /mnt/pred)
EOF
}

case "${1-}" in
  pixel | sample)
    task=$1
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

kind=auto
case "${1-}" in
  brain | abdom | auto)
    kind=$1
    shift
    ;;
esac

in_dir=${MOOD_INPUT_DIR:-/mnt/data}
out_dir=${MOOD_OUTPUT_DIR:-/mnt/pred}
weights=${MOOD_WEIGHTS_DIR:-/opt/mood/weights}
detector=${MOOD_DETECTOR:-nsa}
py=${MOOD_PYTHON:-python3}

[ -d "$in_dir" ] || die "input folder $in_dir does not exist (mount it: -v <in>:/mnt/data, or set MOOD_INPUT_DIR)"
[ -d "$out_dir" ] || mkdir -p "$out_dir" 2>/dev/null ||
  die "output folder $out_dir does not exist and cannot be created (mount it: -v <out>:/mnt/pred)"
[ -w "$out_dir" ] || die "output folder $out_dir is not writable by uid $(id -u) (make <out> writable, e.g. chmod a+rwx <out>, or run with --user \$(id -u):\$(id -g))"

has_weights() { [ -f "$weights/$1/$detector.safetensors" ] && [ -f "$weights/$1/$detector.json" ]; }
if [ "$kind" = auto ]; then
  has_weights brain || has_weights abdom ||
    die "no $detector weights for any kind in $weights (expected $weights/brain|abdom/$detector.safetensors + $detector.json; this image was built without trained weights)"
else
  has_weights "$kind" ||
    die "no $detector weights for kind $kind (expected $weights/$kind/$detector.safetensors and $detector.json; this image was built without them)"
fi

scratch="$out_dir/.mood-cache"
export HOME="$scratch/home" TMPDIR="$scratch/tmp" XDG_CACHE_HOME="$scratch/cache" MPLCONFIGDIR="$scratch/matplotlib" \
  TORCH_HOME="$scratch/torch" TORCHINDUCTOR_CACHE_DIR="$scratch/inductor" TRITON_CACHE_DIR="$scratch/triton" \
  CUDA_CACHE_PATH="$scratch/cuda"
export CUDA_CACHE_DISABLE=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PYTHONSAFEPATH=1

# No GPU visible: --device auto runs on CPU and the package logs a warning ("no GPU visible: running on CPU").
exec "$py" -m mood_detector --log-level "${MOOD_LOG_LEVEL:-INFO}" predict "$task" \
  --input "$in_dir" --output "$out_dir" --weights "$weights" --kind "$kind" --detector "$detector" \
  --device "${MOOD_DEVICE:-auto}" "$@"
