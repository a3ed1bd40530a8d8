"""Detectors: one sub-package per method, each a plain ``nn.Module`` plus a small Detector class."""
