# MOOD training image (same package and install steps as the inference image, no bundled weights).
#   docker build -f docker/train.Dockerfile -t detector-train .
#   docker run --gpus all --shm-size=8g -v "$PWD/data":/mnt/train -v "$PWD/runs":/mnt/weights \
#       detector-train brain [mood-detector train options...]
# writes /mnt/weights/brain/<detector>.safetensors + <detector>.json, where <detector> is --detector, else
# $MOOD_DETECTOR, else nsa (and <detector>_run/ with checkpoints and the loss log). Mount a folder of your own
# (e.g. runs/), not the repository's weights/: the bundled models' cards describe the files there.

# Pinned CUDA PyTorch runtime: torch comes from here, so install.sh keeps it (MOOD_SKIP_TORCH=1).
FROM pytorch/pytorch:2.13.0-cuda12.6-cudnn9-runtime

ENV PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

COPY pyproject.toml README.md requirements.txt /opt/mood/src/
COPY mood_detector/ /opt/mood/src/mood_detector/
COPY docker/install.sh /opt/mood/src/docker/install.sh
RUN MOOD_SKIP_TORCH=1 PYTHON=python3 sh /opt/mood/src/docker/install.sh /opt/mood/src \
    && rm -rf /opt/mood/src

COPY docker/train-entrypoint.sh /workspace/train-entrypoint.sh

# Non-root user (uid 1000; reused if the base image already has one) and the mount points.
RUN (getent passwd 1000 >/dev/null || useradd --no-log-init --uid 1000 --user-group --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin mood) \
    && mkdir -p /mnt/train /mnt/weights \
    && chmod 0755 /workspace /mnt/train \
    && chown 1000:1000 /mnt/weights \
    && chmod 0555 /workspace/train-entrypoint.sh

ENV MOOD_TRAIN_DIR=/mnt/train \
    MOOD_WEIGHTS_OUT=/mnt/weights \
    MOOD_PYTHON=python3

USER 1000:1000
WORKDIR /workspace
ENTRYPOINT ["/bin/sh", "/workspace/train-entrypoint.sh"]
