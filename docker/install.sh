#!/bin/sh
# The one install script behind both images (Dockerfile, docker/train.Dockerfile). The test suite runs it too
# (tests/docker/test_install.py), so CI proves these exact steps on a fresh environment.
#
# usage:  sh docker/install.sh [SOURCE_DIR]     SOURCE_DIR: a copy of the sources (default: this checkout)
#
# environment:
#   PYTHON           interpreter whose environment receives the package (default: python3)
#   MOOD_SKIP_TORCH  1 = keep the torch that is already installed (the GPU images: the CUDA build of the base
#                    image); the torch line of requirements.txt (a CPU pin) is skipped, torch must import and be
#                    at least the version pyproject.toml asks for. 0 (default) = install requirements.txt as is.
#   PIP_*            pip's own settings are honoured (the tests use PIP_NO_INDEX=1: nothing is downloaded).
#
# Steps: 1 python >= 3.11; 2 torch (kept or pinned); 3 pinned runtime requirements and the pinned build backend;
# 4 the package itself (built from SOURCE_DIR, no dependencies); 5 byte-code compiled now, because the images run
# with a read-only root and PYTHONDONTWRITEBYTECODE=1; 6 checks: every pin installed at its version, the package
# imports from the environment (not from SOURCE_DIR) and its command line starts.
set -eu

say() { echo "install.sh: $*"; }
die() { echo "install.sh: error: $*" >&2; exit 1; }

src=$(cd "${1:-$(dirname "$0")/..}" && pwd) || die "source folder ${1:-} not found"
py=${PYTHON:-python3}
skip_torch=${MOOD_SKIP_TORCH:-0}
# pyproject.toml's build backend, pinned (installed into the target so the build needs no isolated download).
build_reqs="setuptools==84.2.1"
pip_opts="--no-cache-dir --disable-pip-version-check --no-input --progress-bar off"

[ -f "$src/pyproject.toml" ] || die "$src is not a mood-detector source folder (no pyproject.toml)"
[ -f "$src/requirements.txt" ] || die "$src/requirements.txt is missing"
command -v "$py" >/dev/null 2>&1 || die "python interpreter '$py' not found (set PYTHON)"
cd /  # never import the package from the current folder

say "1/6 python $("$py" -c 'import sys; print(sys.version.split()[0], sys.prefix)')"
"$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "python >= 3.11 is required"

reqs=$(mktemp "${TMPDIR:-/tmp}/mood-requirements.XXXXXX")
trap 'rm -f "$reqs"' EXIT
if [ "$skip_torch" = 1 ]; then
  # drop "torch==..." only (not torchvision etc.)
  grep -v -E '^[[:space:]]*torch[[:space:]]*([=<>!~;[]|$)' "$src/requirements.txt" >"$reqs" || true
  # metadata only (importing torch costs seconds); step 6 imports it through the package's command line
  have=$("$py" -c 'import sys
from importlib.metadata import version
v = version("torch")
print(v)
sys.exit(tuple(int(p) for p in v.split("+")[0].split(".")[:2]) < (2, 3))') ||
    die "MOOD_SKIP_TORCH=1 but no torch >= 2.3 is installed for $py"
  say "2/6 torch kept from the base environment: $have"
else
  cp "$src/requirements.txt" "$reqs"
  say "2/6 torch installed from requirements.txt"
fi

say "3/6 pinned runtime requirements and the build backend ($build_reqs)"
# shellcheck disable=SC2086
"$py" -m pip install $pip_opts -r "$reqs" "$build_reqs"

say "4/6 mood-detector from $src"
# shellcheck disable=SC2086
"$py" -m pip install $pip_opts --no-deps --no-build-isolation "$src"

pkg=$("$py" -c 'import pathlib, mood_detector; print(pathlib.Path(mood_detector.__file__).parent)')
case "$pkg" in "$src"/*) die "mood_detector imports from the source folder $pkg, not from the environment" ;; esac
say "5/6 byte-code for $pkg"
"$py" -m compileall -q "$pkg" >/dev/null

say "6/6 checks"
"$py" - "$reqs" <<'EOF'
import re, sys
from importlib.metadata import PackageNotFoundError, version

bad = []
for line in open(sys.argv[1], encoding="utf-8"):
    m = re.match(r"\s*([A-Za-z0-9_.\-]+)\s*==\s*([^\s;#]+)", line)
    if not m:
        continue
    name, want = m.groups()
    try:
        have = version(name)
    except PackageNotFoundError:
        have = "missing"
    if have.split("+")[0] != want.split("+")[0]:
        bad.append(f"{name}: want {want}, have {have}")
if bad:
    sys.exit("install.sh: error: pins not satisfied: " + "; ".join(bad))
EOF
"$py" -m mood_detector --version
say "done"
