"""The bundled models in ``weights/``, and the guard that keeps commands from writing over them by accident.

A bundled model is a ``.safetensors`` file and its ``.json`` card that ship with the package: tracked by git in
the checkout's ``weights/`` folder, or present in the ``weights/`` folder beside the installed package (the
container layout). Its ``MODEL_CARD*.md`` describes exactly that file, so training or exporting over it leaves a
card that describes another model. ``train`` and ``export`` refuse such an output unless ``--force`` is given.
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

log = logging.getLogger(__name__)


def bundled_weights_dir() -> Path:
    """The ``weights/`` folder beside the package (source checkout or container layout)."""
    return Path(__file__).resolve().parents[1] / "weights"


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
        return True
    except ValueError:
        return False


def git_tracked_path(path: Path) -> str | None:
    """``path`` relative to the root of the git checkout that holds it, when git tracks it; else ``None``
    (not in a checkout, not tracked, or no git)."""
    try:
        out = subprocess.run(["git", "ls-files", "--full-name", "--error-unmatch", "--", path.name],
                             cwd=path.parent, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def is_bundled(path: Path) -> bool:
    """Whether the existing file ``path`` is part of a bundled model: tracked by git under a top-level
    ``weights/`` folder, or inside the package's bundled weights folder."""
    path = path.resolve()
    if not path.is_file():
        return False
    if _inside(path, bundled_weights_dir().resolve()):
        return True
    tracked = git_tracked_path(path)
    return tracked is not None and tracked.startswith("weights/")


def bundled_target(weights: Path) -> Path | None:
    """The bundled file that writing weights to ``weights`` would replace (the ``.safetensors`` file or its
    ``.json`` card), or ``None``."""
    weights = Path(weights)
    if weights.suffix != ".safetensors":  # save_weights adds the suffix
        weights = weights.with_suffix(".safetensors")
    for candidate in (weights, weights.with_suffix(".json")):
        if is_bundled(candidate):
            return candidate
    return None


def refuse_bundled(weights: Path, force: bool) -> str | None:
    """The one-line error for writing over a bundled model without ``force`` (``None``: allowed)."""
    target = bundled_target(weights)
    if target is None:
        return None
    if force:
        log.warning("--force: writing over the bundled model %s (its MODEL_CARD*.md still describes the old one)",
                    target)
        return None
    return (f"{target} is a bundled model; writing over it would leave its model card describing another model. "
            f"Write to another path (e.g. runs/{target.parent.name}/{target.stem}.safetensors) or pass --force")
