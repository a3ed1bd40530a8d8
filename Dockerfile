# MOOD inference image.
#   docker build -t detector .
#   docker run --gpus all -v "$PWD/in":/mnt/data -v "$PWD/out":/mnt/pred --read-only detector pixel
#   docker run --gpus all -v "$PWD/in":/mnt/data -v "$PWD/out":/mnt/pred --read-only detector \
#       sh /workspace/run_pixel_brain.sh /mnt/data /mnt/pred          (the organisers' harness)
# The install steps live in docker/install.sh (also run by the test suite); this file only orders them.

# Pinned CUDA PyTorch runtime: torch 2.13.0 (CUDA 12.6, cuDNN 9) comes from here, so install.sh keeps it
# (MOOD_SKIP_TORCH=1) instead of installing requirements.txt's CPU pin.
FROM pytorch/pytorch:2.13.0-cuda12.6-cudnn9-runtime

ENV PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# Package + pinned dependencies (build-time only: sources are copied to /opt/mood/src and removed afterwards).
COPY pyproject.toml README.md requirements.txt /opt/mood/src/
COPY mood_detector/ /opt/mood/src/mood_detector/
COPY docker/install.sh /opt/mood/src/docker/install.sh
RUN MOOD_SKIP_TORCH=1 PYTHON=python3 sh /opt/mood/src/docker/install.sh /opt/mood/src \
    && rm -rf /opt/mood/src

# Bundled weights: weights/<kind>/<detector>.safetensors + .json: nsa (default), fpi, and dpa for abdom only
# (the entry point refuses to run without the chosen detector's).
COPY weights/ /opt/mood/weights/

# The organisers' scripts and the entry point.
COPY docker/entrypoint.sh docker/run_pixel_brain.sh docker/run_pixel_abdom.sh \
     docker/run_sample_brain.sh docker/run_sample_abdom.sh /workspace/

# Non-root user (uid 1000; reused if the base image already has one), mount points, read-only scripts.
RUN (getent passwd 1000 >/dev/null || useradd --no-log-init --uid 1000 --user-group --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin mood) \
    && mkdir -p /mnt/data /mnt/pred \
    && chmod 0755 /workspace /mnt/data /mnt/pred \
    && chmod 0555 /workspace/*.sh \
    && chmod -R a+rX,go-w /opt/mood/weights

ENV MOOD_WEIGHTS_DIR=/opt/mood/weights \
    MOOD_WORKSPACE=/workspace \
    MOOD_INPUT_DIR=/mnt/data \
    MOOD_OUTPUT_DIR=/mnt/pred \
    MOOD_PYTHON=python3

USER 1000:1000
WORKDIR /workspace
ENTRYPOINT ["/bin/sh", "/workspace/entrypoint.sh"]
