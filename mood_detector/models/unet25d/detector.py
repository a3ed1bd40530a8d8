"""The 2.5D detector: the cheap alternative to the volumetric one, measured beside it.

A 2D U-Net scores each slice (along the kind's slice axis) from the slice, its ``context`` neighbours on each
side and three coordinate channels (:mod:`.network`). Everything else is the volumetric detector's
(:mod:`mood_detector.models.unet3d.detector`): the same resolution (128³), the same synthetic tasks in 3D
patches, the same soft labels, the same checkpoint choice on held-out task families, and the same
sliding-window scoring of the network volume, so a comparison of the two measures the network alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from mood_detector.models.unet25d.network import SlabUNet
from mood_detector.models.unet3d.detector import UNet3DDetector, UNet3DOptions
from mood_detector.weights import ModelCard


@dataclass
class UNet25DOptions(UNet3DOptions):
    """2.5D detector options (``--opt KEY=VALUE``): those of ``unet3d`` (whose ``base`` and ``levels`` here
    describe the 2D U-Net; at the same ``base`` a training step costs about 0.75 of unet3d's on a CPU, with a
    third of its parameters) and

    Attributes:
        context: neighbouring slices on each side given to the network with each slice (0: plain 2D).
    """

    context: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.context < 0:
            raise ValueError(f"unet25d options: context must be >= 0, got {self.context}")


class UNet25DDetector(UNet3DDetector):
    """Slices with their neighbours and coordinates through a 2D U-Net, trained and scored like unet3d."""

    name = "unet25d"
    options_cls = UNet25DOptions
    weight_format: ClassVar[torch.memory_format] = torch.channels_last

    @classmethod
    def build(cls, card: ModelCard) -> "UNet25DDetector":
        return cls(card, SlabUNet(int(card.extra.get("base", UNet25DOptions.base)),
                                  int(card.extra.get("levels", UNet25DOptions.levels)),
                                  int(card.extra.get("context", UNet25DOptions.context)), card.slice_axis))
