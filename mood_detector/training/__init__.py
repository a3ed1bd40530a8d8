"""Training infrastructure shared by the detectors: data, checkpoints, logs, SWA."""
