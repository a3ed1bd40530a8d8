"""mood-detector: medical out-of-distribution detection for 3D NIfTI volumes (MICCAI MOOD style)."""

__version__ = "0.1.0"
