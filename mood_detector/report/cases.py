"""Finding and loading what the report shows for each volume: input, predictions and (optional) labels.

Layouts (MOOD conventions):

* INPUTS: ``<name>`` (``*.nii`` / ``*.nii.gz``).
* PREDICTIONS: pixel scores ``<name>`` (same shape as the input) and/or sample scores ``<name>.txt``.
* LABELS (optional, the MOOD ``toy_label`` layout): ``pixel/<name>`` (binary mask) and/or
  ``sample/<name>.txt`` (``0`` or ``1``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mood_detector.errors import InputError, MoodError
from mood_detector.inference.aggregate import parse_slice_rule, sample_score
from mood_detector.io.nifti import ReadLimits, list_volumes, read_volume
from mood_detector.kinds import guess_kind
from mood_detector.preprocess import to_slices

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CaseFiles:
    """The files that belong to one input volume (``None`` where absent)."""

    name: str
    input: Path
    pixel: Path | None
    sample: Path | None
    label_pixel: Path | None
    label_sample: Path | None


@dataclass
class Case:
    """One volume loaded for display.

    Attributes:
        name: the input's file name.
        image: input voxels (float32).
        zooms: voxel sizes (for the display aspect ratio).
        pixel: voxel scores with the input's shape, clipped to [0, 1], or ``None`` (sample predictions only).
        sample: the volume's sample score.
        sample_source: ``"txt"`` (read from ``<name>.txt``) or ``"pixel map"`` (computed here).
        slice_axis: the slicing axis of the volume's kind (:func:`mood_detector.kinds.guess_kind`).
        slice_scores: score of every slice along ``slice_axis`` by ``slice_rule`` (``None`` without a pixel map).
        label_mask: boolean label mask or ``None``.
        label_sample: volume label (True = anomalous) or ``None``.
        slice_rule: how ``slice_scores`` were made from the pixel map: ``mean`` or ``top:Q``
            (:func:`mood_detector.inference.aggregate.parse_slice_rule`), as the model card's ``slice_score``.
    """

    name: str
    image: np.ndarray
    zooms: tuple[float, float, float]
    pixel: np.ndarray | None
    sample: float
    sample_source: str
    slice_axis: int
    slice_scores: np.ndarray | None
    label_mask: np.ndarray | None
    label_sample: bool | None
    slice_rule: str = "mean"


def _existing(path: Path) -> Path | None:
    return path if path.is_file() else None


def find_cases(inputs: str | Path, predictions: str | Path, labels: str | Path | None = None) -> list[CaseFiles]:
    """Pair every input volume with its prediction and label files.

    Raises:
        MoodError: a folder that does not exist, no input volumes, or a LABELS folder without ``pixel/`` or
            ``sample/``.
    """
    inputs, predictions = Path(inputs), Path(predictions)
    for what, folder in (("inputs", inputs), ("predictions", predictions)):
        if not folder.is_dir():
            raise MoodError(f"{folder}: {what} folder does not exist")
    label_pixel_dir = label_sample_dir = None
    if labels is not None:
        labels = Path(labels)
        if not labels.is_dir():
            raise MoodError(f"{labels}: labels folder does not exist")
        label_pixel_dir = labels / "pixel" if (labels / "pixel").is_dir() else None
        label_sample_dir = labels / "sample" if (labels / "sample").is_dir() else None
        if label_pixel_dir is None and label_sample_dir is None:
            raise MoodError(f"{labels}: expected a pixel/ and/or sample/ subfolder (MOOD toy_label layout)")
    files = list_volumes(inputs)
    if not files:
        raise MoodError(f"{inputs}: no .nii or .nii.gz files found")
    out = []
    for f in files:
        name = f.name
        out.append(CaseFiles(
            name=name, input=f,
            pixel=_existing(predictions / name), sample=_existing(predictions / f"{name}.txt"),
            label_pixel=_existing(label_pixel_dir / name) if label_pixel_dir else None,
            label_sample=_existing(label_sample_dir / f"{name}.txt") if label_sample_dir else None))
    return out


def read_score_text(path: Path) -> float:
    """The single finite float in a MOOD sample file (``<name>.txt``)."""
    try:
        text = path.read_text(encoding="utf-8").strip()
        value = float(text)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(path, f"not a file holding one number ({type(exc).__name__}: {exc})") from None
    if not math.isfinite(value):
        raise InputError(path, f"sample score {text!r} is not finite")
    return value


def slice_means(pixel: np.ndarray, axis: int, rule: str = "mean") -> np.ndarray:
    """Score of every slice along ``axis`` (float64, length ``pixel.shape[axis]``): the mean voxel score, or
    with ``rule="top:Q"`` the mean of each slice's highest fraction Q of voxel scores (the predictor's rule,
    :func:`mood_detector.inference.aggregate.slice_scores`)."""
    flat = to_slices(pixel, axis).reshape(pixel.shape[axis], -1)
    q = parse_slice_rule(rule)
    if q is None:
        return flat.mean(axis=1, dtype=np.float64)
    k = max(1, min(flat.shape[1], int(round(q * flat.shape[1]))))
    return np.partition(flat, flat.shape[1] - k, axis=1)[:, -k:].mean(axis=1, dtype=np.float64)


def load_case(files: CaseFiles, limits: ReadLimits | None = None, slice_rule: str = "mean") -> Case:
    """Read one volume with its predictions and labels.

    Without a sample file the sample score is computed from the pixel map with the package's common rule
    (:func:`mood_detector.inference.aggregate.sample_score` over the slice scores along the kind's slicing
    axis, made by ``slice_rule``: the model card's ``slice_score``). Note: the predictor applies that rule at the network's resolution, so for inputs that were resampled
    the recomputed score can differ slightly from the one ``predict sample`` would write.

    Raises:
        InputError: unreadable files, a pixel map or label mask whose shape differs from the input's, or no
            prediction at all for this volume.
    """
    if files.pixel is None and files.sample is None:
        raise InputError(files.input, "no prediction found (neither <name> nor <name>.txt in PREDICTIONS)")
    vol = read_volume(files.input, limits)
    shape = vol.shape
    axis = guess_kind(shape, vol.data)[0].slice_axis  # as predict picks it without --kind
    pixel = slices = None
    if files.pixel is not None:
        pred = read_volume(files.pixel, limits)
        if pred.shape != shape:
            raise InputError(files.pixel, f"pixel scores have shape {pred.shape}, the input has {shape}")
        lo, hi = float(pred.data.min()), float(pred.data.max())
        if lo < 0.0 or hi > 1.0:
            log.warning("%s: scores outside [0, 1] (%.4g .. %.4g) clipped for display", files.pixel, lo, hi)
        pixel = np.clip(pred.data, 0.0, 1.0)
        slices = slice_means(pixel, axis, slice_rule)
    if files.sample is not None:
        score, source = read_score_text(files.sample), "txt"
    else:
        assert slices is not None
        score, source = sample_score(slices), "pixel map"
    mask = label = None
    if files.label_pixel is not None:
        lab = read_volume(files.label_pixel, limits)
        if lab.shape != shape:
            raise InputError(files.label_pixel, f"label mask has shape {lab.shape}, the input has {shape}")
        mask = lab.data > 0.5
    if files.label_sample is not None:
        label = read_score_text(files.label_sample) > 0.5
    elif mask is not None:
        label = bool(mask.any())
    zooms = tuple(float(z) for z in vol.props.get("zooms", (1.0, 1.0, 1.0)))
    return Case(name=files.name, image=vol.data, zooms=zooms, pixel=pixel, sample=score, sample_source=source,
                slice_axis=axis, slice_scores=slices, label_mask=mask, label_sample=label,
                slice_rule=slice_rule)


def _block_mean(data: np.ndarray, f: list[int]) -> np.ndarray:
    pad = [(0, (-s) % k) for s, k in zip(data.shape, f)]
    p = np.pad(data, pad, mode="edge") if any(b for _, b in pad) else data
    return p.reshape(p.shape[0] // f[0], f[0], p.shape[1] // f[1], f[1], p.shape[2] // f[2], f[2]).mean(
        axis=(1, 3, 5), dtype=np.float64)


def focus_point(case: Case, max_grid: int = 64) -> tuple[int, int, int]:
    """The voxel the three orthogonal slices go through: the argmax of the score map smoothed with a Gaussian,
    searched inside the imaged object.

    The score map and the input are block-averaged so that no axis exceeds ``max_grid`` cells (cheap for 512^3
    volumes); the scores are smoothed (sigma = 1 cell) and the best cell among those whose input is above the
    background (1% of the intensity range over the minimum; MOOD volumes have a flat background, where weakly
    trained models often score highest) is returned as its centre voxel. All cells are searched when no cell is
    foreground; without a pixel map, or for a flat one, the centre of the volume.
    """
    from scipy import ndimage

    shape = case.image.shape
    centre = tuple(s // 2 for s in shape)
    if case.pixel is None:
        return centre  # type: ignore[return-value]
    f = [max(1, math.ceil(s / max_grid)) for s in shape]
    smooth = ndimage.gaussian_filter(_block_mean(case.pixel, f), sigma=1.0, mode="nearest")
    img = _block_mean(case.image, f)
    lo, hi = float(img.min()), float(img.max())
    fg = img > lo + 0.01 * (hi - lo)
    if hi > lo and fg.any():
        smooth = np.where(fg, smooth, -np.inf)
    finite = smooth[np.isfinite(smooth)]
    if float(finite.max()) - float(finite.min()) <= 1e-12:
        return centre  # type: ignore[return-value]
    cell = np.unravel_index(int(np.argmax(smooth)), smooth.shape)
    return tuple(min(s - 1, c * k + k // 2) for c, k, s in zip(cell, f, shape))  # type: ignore[return-value]
