"""Perceptual feature extractors for the DPA loss.

The paper computes the relative-perceptual-L1 loss on features of an ImageNet-trained VGG19. ImageNet weights
cannot be downloaded here, so this module offers:

* :class:`VGG19Features`: VGG19 ``features`` written in plain torch with torchvision's layer order and naming
  (``features.N.weight`` / ``features.N.bias``), so a user's torchvision VGG19 state dict loads unchanged
  (``--feature-weights PATH``, a .safetensors file or a .pth read with ``torch.load(weights_only=True)``).
  Its weights are either the user's (``features=vgg19``), torchvision's random initialisation under a fixed
  seed (``features=random-vgg19``), or trained by this package on the training slices with the FPI
  self-supervised task (``features=fpi-vgg19``, see :mod:`mood_detector.models.dpa.pretrain`);
* :class:`FPIEncoderFeatures`: the encoder blocks of a trained FPI model of this package (``features=fpi-encoder``,
  ``feature_weights=<fpi .safetensors>``).

Every extractor takes grey slices (N, 1, H, W) in [0, 1]; VGG19 repeats them to 3 channels and applies the
ImageNet normalisation first (as the authors' code does). Only the layers up to the deepest one used are kept
(``depth``), so a truncated extractor costs nothing beyond what the loss needs.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mood_detector.errors import WeightsError

log = logging.getLogger(__name__)

#: torchvision's VGG19 ``features`` configuration ("M" = 2x2 max-pool)
VGG19_CFG: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
                                    512, 512, 512, 512, "M", 512, 512, 512, 512, "M")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RANDOM_VGG_SEED = 432  # the authors' code seeds its random (non-pretrained) VGG19 with 432 as well


def _vgg19_names() -> dict[str, int]:
    """Layer name -> index in ``features``: ``c{block}{conv}`` conv, ``r{block}{conv}`` its ReLU, ``p{block}``
    the block's max-pool (torchvision: conv at 0, ReLU at 1, ..., pools at 4, 9, 18, 27, 36)."""
    names: dict[str, int] = {}
    block, conv, idx = 1, 1, 0
    for v in VGG19_CFG:
        if v == "M":
            names[f"p{block}"] = idx
            idx += 1
            block, conv = block + 1, 1
        else:
            names[f"c{block}{conv}"] = idx
            names[f"r{block}{conv}"] = idx + 1
            idx += 2
            conv += 1
    return names


VGG19_LAYERS: dict[str, int] = _vgg19_names()
VGG19_CONV_INDICES: tuple[int, ...] = tuple(i for n, i in VGG19_LAYERS.items() if n.startswith("c"))
#: every key of torchvision's ``vgg19().features.state_dict()`` prefixed with ``features.``
VGG19_KEYS: tuple[str, ...] = tuple(f"features.{i}.{p}" for i in VGG19_CONV_INDICES for p in ("weight", "bias"))


class FeatureExtractor(nn.Module):
    """Base class: frozen, always in eval mode, ``forward(x, layer)`` for grey slices in [0, 1]."""

    #: registry name written to the model card
    kind: str = ""

    def layers(self) -> list[str]:
        """Layer names available, shallow to deep."""
        raise NotImplementedError

    def shallower(self, layer: str, k: int) -> str:
        """The layer used ``k`` growth stages (halvings of the input resolution) before ``layer``."""
        raise NotImplementedError

    def stride(self, layer: str) -> int:
        """Down-sampling factor of ``layer``'s feature map relative to the input."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """JSON-serialisable arguments that rebuild this extractor (see :func:`build_extractor`)."""
        raise NotImplementedError

    def freeze(self) -> "FeatureExtractor":
        for p in self.parameters():
            p.requires_grad_(False)
        return self.eval()

    def train(self, mode: bool = True) -> "FeatureExtractor":  # noqa: D102 - frozen feature nets stay in eval
        return super().train(False)

    def set_trainable(self, on: bool) -> None:
        """Allow or forbid gradients (only the FPI pre-training of ``fpi-vgg19`` turns them on)."""
        for p in self.parameters():
            p.requires_grad_(on)


class VGG19Features(FeatureExtractor):
    """torchvision-compatible VGG19 ``features`` (first ``depth`` layers)."""

    def __init__(self, depth: int = len(VGG19_CFG) + 16, kind: str = "vgg19", init_seed: int | None = None) -> None:
        super().__init__()
        self.kind, self.depth = kind, int(depth)
        layers: list[nn.Module] = []
        cin = 3
        for v in VGG19_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(cin, int(v), kernel_size=3, padding=1), nn.ReLU(inplace=False)]
                cin = int(v)
        if not 1 <= self.depth <= len(layers):
            raise ValueError(f"VGG19 depth must be in [1, {len(layers)}], got {depth}")
        self.features = nn.Sequential(*layers[: self.depth])
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        if init_seed is not None:
            self.reset_parameters(init_seed)

    def reset_parameters(self, seed: int) -> None:
        """torchvision's VGG initialisation (Kaiming-normal fan_out/relu, zero bias) under a fixed seed."""
        g = torch.Generator().manual_seed(int(seed))
        for m in self.features:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu", generator=g)
                nn.init.zeros_(m.bias)

    @staticmethod
    def depth_for(layer: str) -> int:
        """Number of ``features`` layers needed to compute ``layer``."""
        if layer not in VGG19_LAYERS:
            raise ValueError(f"unknown VGG19 layer {layer!r}; use e.g. r12, r22, r32, r42 (conv c.., pool p..)")
        return VGG19_LAYERS[layer] + 1

    def layers(self) -> list[str]:
        return [n for n, i in VGG19_LAYERS.items() if i < self.depth]

    def shallower(self, layer: str, k: int) -> str:
        m = re.fullmatch(r"([crp])(\d)(\d?)", layer)
        if m is None or layer not in VGG19_LAYERS:
            raise ValueError(f"unknown VGG19 layer {layer!r}")
        kind, block, conv = m.group(1), int(m.group(2)), m.group(3)
        block = max(1, block - k)
        if kind == "p":
            return f"p{block}"
        n_convs = 2 if block <= 2 else 4
        return f"{kind}{block}{min(int(conv), n_convs)}"

    def stride(self, layer: str) -> int:
        idx = VGG19_LAYERS[layer]
        return 2 ** sum(1 for n, i in VGG19_LAYERS.items() if n.startswith("p") and i <= idx)

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind, "depth": self.depth}

    def forward(self, x: torch.Tensor, layer: str) -> torch.Tensor:
        idx = VGG19_LAYERS.get(layer)
        if idx is None or idx >= self.depth:
            raise ValueError(f"layer {layer!r} is not computed by this extractor (depth {self.depth})")
        h = (x.expand(-1, 3, -1, -1) - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        for i, m in enumerate(self.features):
            h = m(h)
            if i == idx:
                return h
        raise AssertionError("unreachable")

    def load_torchvision(self, state: dict[str, torch.Tensor], source: str = "state dict") -> None:
        """Load the first ``depth`` layers from a torchvision VGG19 state dict (keys ``features.N.*`` or, for a
        bare ``features`` state dict, ``N.*``; a ``module.`` prefix and ``classifier.*`` keys are ignored)."""
        norm: dict[str, torch.Tensor] = {}
        for k, v in state.items():
            k = k[7:] if k.startswith("module.") else k
            if k.startswith("classifier."):
                continue
            if re.fullmatch(r"\d+\.(weight|bias)", k):
                k = "features." + k
            norm[k] = v
        own = self.state_dict()
        missing = [k for k in own if k not in norm]
        if missing:
            raise WeightsError(f"{source}: not a torchvision VGG19 state dict (missing {', '.join(missing[:3])}"
                               f"{' ...' if len(missing) > 3 else ''})")
        for k, v in own.items():
            if tuple(norm[k].shape) != tuple(v.shape):
                raise WeightsError(f"{source}: {k} has shape {tuple(norm[k].shape)}, VGG19 needs {tuple(v.shape)}")
        self.load_state_dict({k: norm[k].float() for k in own})


def save_vgg19(ext: VGG19Features, path: str | Path) -> Path:
    """Save ``ext``'s weights as a .safetensors state dict in torchvision naming (``features.N.weight``)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in ext.state_dict().items()}, str(path))
    return path


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file or of a ``.pth``/``.pt`` file read with ``weights_only=True`` (a
    checkpoint dict holding ``state_dict``/``model`` is unwrapped)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: feature weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure becomes one clear line
        raise WeightsError(f"{path}: cannot read feature weights ({type(exc).__name__}: {exc})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: feature weights must be a flat dict of tensors (a state dict)")
    return state


class FPIEncoderFeatures(FeatureExtractor):
    """Stem + first ``depth`` encoder blocks of this package's FPI network; layers ``b1`` ... ``b{depth}``.

    Block 1 keeps the resolution, every later block halves it (FPI plan). BatchNorm runs in eval mode."""

    kind = "fpi-encoder"

    def __init__(self, arch: str = "brain", width: float = 1.0, depth: int = 3) -> None:
        super().__init__()
        from mood_detector.models.fpi.network import WideResEncoderDecoder

        net = WideResEncoderDecoder(arch, 1, width)
        if not 1 <= depth <= len(net.encoder):
            raise ValueError(f"FPI encoder depth must be in [1, {len(net.encoder)}], got {depth}")
        self.arch, self.width, self.depth = arch, float(width), int(depth)
        self.stem = net.stem
        self.blocks = nn.Sequential(*list(net.encoder)[:depth])

    def layers(self) -> list[str]:
        return [f"b{i + 1}" for i in range(self.depth)]

    def _index(self, layer: str) -> int:
        m = re.fullmatch(r"b(\d+)", layer)
        if m is None or not 1 <= int(m.group(1)) <= self.depth:
            raise ValueError(f"unknown FPI-encoder layer {layer!r}; available: {', '.join(self.layers())}")
        return int(m.group(1))

    def shallower(self, layer: str, k: int) -> str:
        return f"b{max(1, self._index(layer) - k)}"

    def stride(self, layer: str) -> int:
        return 2 ** (self._index(layer) - 1)

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind, "depth": self.depth, "arch": self.arch, "width": self.width}

    def forward(self, x: torch.Tensor, layer: str) -> torch.Tensor:
        n = self._index(layer)
        h = self.stem(x)
        for block in list(self.blocks)[:n]:
            h = block(h)
        return h

    def load_fpi(self, path: str | Path) -> None:
        """Copy the stem and encoder blocks from a trained FPI ``.safetensors`` (card checked)."""
        from mood_detector.weights import load_weights

        tensors, card = load_weights(path)
        if card.detector != "fpi":
            raise WeightsError(f"{path}: fpi-encoder features need FPI weights, got detector {card.detector!r}")
        own = self.state_dict()
        sub: dict[str, torch.Tensor] = {}
        for k in own:
            src = "net." + (k if k.startswith("stem") else "encoder." + k[len("blocks."):])
            if src not in tensors or tuple(tensors[src].shape) != tuple(own[k].shape):
                raise WeightsError(f"{path}: FPI weights do not match arch={self.arch} width={self.width} ({src})")
            sub[k] = tensors[src].float() if tensors[src].is_floating_point() else tensors[src]
        self.load_state_dict(sub)


#: feature-extractor names accepted by ``--opt features=...``
EXTRACTORS = ("fpi-vgg19", "random-vgg19", "vgg19", "fpi-encoder")


def build_extractor(cfg: dict[str, Any]) -> FeatureExtractor:
    """An (un-loaded) extractor from its :meth:`FeatureExtractor.config` dict."""
    kind = cfg.get("kind", "")
    if kind in ("fpi-vgg19", "random-vgg19", "vgg19"):
        return VGG19Features(int(cfg["depth"]), kind=kind).freeze()
    if kind == "fpi-encoder":
        return FPIEncoderFeatures(cfg.get("arch", "brain"), float(cfg.get("width", 1.0)), int(cfg["depth"])).freeze()
    raise ValueError(f"unknown feature extractor {kind!r}; available: {', '.join(EXTRACTORS)}")


def fpi_card_of(path: str | Path) -> dict[str, Any] | None:
    """The FPI card beside ``path`` (``arch``, ``width``) when ``path`` is an FPI weights file, else None."""
    import json

    card = Path(path).with_suffix(".json")
    if Path(path).suffix != ".safetensors" or not card.is_file():
        return None
    try:
        data = json.loads(card.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if data.get("detector") == "fpi" else None


def make_extractor(kind: str, layer: str, feature_weights: str = "", seed: int = RANDOM_VGG_SEED) -> FeatureExtractor:
    """A ready extractor of ``kind`` computing layers up to ``layer``.

    ``vgg19`` loads ``feature_weights`` (torchvision naming); ``random-vgg19`` and ``fpi-vgg19`` start from
    torchvision's initialisation under ``seed`` (``fpi-vgg19`` is then trained by the caller, unless
    ``feature_weights`` holds an earlier run's FPI-trained VGG19, saved by :func:`save_vgg19`);
    ``fpi-encoder`` copies the encoder of the FPI model at ``feature_weights``.
    """
    if kind in ("vgg19", "random-vgg19", "fpi-vgg19"):
        ext = VGG19Features(VGG19Features.depth_for(layer), kind=kind, init_seed=seed)
        if kind == "vgg19" and not feature_weights:
            raise ValueError("features=vgg19 needs --feature-weights PATH (a torchvision VGG19 state dict)")
        if kind == "random-vgg19" and feature_weights:
            raise ValueError("features=random-vgg19 takes no feature_weights (use features=vgg19)")
        if feature_weights:  # vgg19: the user's weights; fpi-vgg19: FPI-trained weights saved by this package
            ext.load_torchvision(read_state_dict(feature_weights), source=str(feature_weights))
            log.info("perceptual features: %s weights from %s", kind, feature_weights)
        return ext.freeze()
    if kind == "fpi-encoder":
        card = fpi_card_of(feature_weights) if feature_weights else None
        if card is None:
            raise ValueError("features=fpi-encoder needs feature_weights=<trained FPI .safetensors with its card>")
        m = re.fullmatch(r"b(\d+)", layer)
        if m is None:
            raise ValueError(f"fpi-encoder layers are b1, b2, ...; got {layer!r}")
        ext2 = FPIEncoderFeatures(card["arch"], float(card["width"]), int(m.group(1)))
        ext2.load_fpi(feature_weights)
        return ext2.freeze()
    raise ValueError(f"unknown feature extractor {kind!r}; available: {', '.join(EXTRACTORS)}")
