"""Reading and writing NIfTI volumes (validated, atomic)."""

from mood_detector.io.nifti import ReadLimits, Volume, list_volumes, read_volume, write_volume

__all__ = ["ReadLimits", "Volume", "list_volumes", "read_volume", "write_volume"]
