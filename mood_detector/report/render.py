"""Drawing the report's PNGs with matplotlib (an optional extra: ``pip install 'mood-detector[report]'``).

matplotlib is imported only inside :func:`matplotlib_sandbox`, which first points ``MPLCONFIGDIR`` (config and
font cache) at a temporary folder inside the report folder and removes it afterwards, so the report writes
nothing outside REPORT_DIR and works under a read-only root / HOME. Figures are drawn with the object API
(``matplotlib.figure.Figure`` on an Agg canvas): no pyplot, no GUI backend, no global backend switch.

Caveat: matplotlib decides its config directory once per process, at its first import. In a process that
imported matplotlib before (a notebook), that earlier choice stays in force; the command line always starts
fresh.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from scipy.signal import savgol_filter

from mood_detector.errors import MoodError
from mood_detector.inference.aggregate import parse_slice_rule, savgol_window
from mood_detector.io.atomic import atomic_open
from mood_detector.report.cases import Case
from mood_detector.report.curves import Curves

log = logging.getLogger(__name__)

MPL_TMP_PREFIX = ".mplconfig-"


@dataclass(frozen=True)
class RenderConfig:
    """How the PNGs look.

    Attributes:
        figsize: per-volume figure size in inches (width, height); pixels = figsize * dpi.
        dpi: resolution of the per-volume PNG.
        thumb_dpi: resolution of its thumbnail (the PNG scaled down to ``figsize * thumb_dpi`` pixels).
        curve_figsize: ROC / PR figure size in inches; drawn at ``dpi``.
        cmap: colour map of the score heat map (fixed range [0, 1], so volumes are comparable).
        alpha: opacity of the heat map where the score reaches ``opaque_at``.
        opaque_at: score from which the heat map has its full opacity ``alpha``; below, the opacity falls
            linearly with the score, so low scores leave the anatomy visible.
        overlay_min: voxel scores below this are not painted at all.
        label_colour: colour of the label contour and of the shaded anomalous slices.
    """

    figsize: tuple[float, float] = (12.0, 7.0)
    dpi: int = 80
    thumb_dpi: int = 25
    curve_figsize: tuple[float, float] = (5.0, 5.0)
    cmap: str = "inferno"
    alpha: float = 0.8
    opaque_at: float = 0.5
    overlay_min: float = 0.02
    label_colour: str = "cyan"

    def pixels(self, thumb: bool = False) -> tuple[int, int]:
        """(width, height) in pixels of the per-volume PNG (or its thumbnail)."""
        dpi = self.thumb_dpi if thumb else self.dpi
        return int(round(self.figsize[0] * dpi)), int(round(self.figsize[1] * dpi))

    def curve_pixels(self) -> tuple[int, int]:
        """(width, height) in pixels of the ROC / PR PNGs."""
        return int(round(self.curve_figsize[0] * self.dpi)), int(round(self.curve_figsize[1] * self.dpi))


@contextmanager
def matplotlib_sandbox(report_dir: Path) -> Iterator[Any]:
    """Import matplotlib with its config/cache folder in a temporary folder inside ``report_dir``.

    Yields the ``matplotlib`` module; restores ``MPLCONFIGDIR`` / ``MPLBACKEND`` and removes the temporary
    folder on exit.

    Raises:
        MoodError: matplotlib is not installed (with the install command).
    """
    report_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=MPL_TMP_PREFIX, dir=report_dir))
    saved = {k: os.environ.get(k) for k in ("MPLCONFIGDIR", "MPLBACKEND")}
    os.environ["MPLCONFIGDIR"] = str(tmp)
    os.environ["MPLBACKEND"] = "Agg"
    try:
        try:
            import matplotlib
            import matplotlib.backends.backend_agg  # noqa: F401 - the non-interactive canvas
            import matplotlib.figure  # noqa: F401
        except ImportError as exc:
            raise MoodError("the report needs matplotlib, an optional extra: "
                            f"pip install 'mood-detector[report]' ({exc})") from None
        yield matplotlib
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(tmp, ignore_errors=True)


def _new_figure(figsize: tuple[float, float], dpi: int) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path, dpi: int) -> None:
    """Save ``fig`` as PNG atomically (temp file in the target folder, then rename)."""
    with atomic_open(path, fsync=False) as fh:
        fig.savefig(fh, format="png", dpi=dpi, metadata={"Software": None})


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) index of every run of True in a 1D boolean array."""
    f = np.concatenate([[False], np.asarray(flags, dtype=bool), [False]]).astype(np.int8)
    d = np.diff(f)
    return list(zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1) - 1))


def filtered_slice_scores(slice_scores: np.ndarray) -> np.ndarray:
    """The Savitzky-Golay filtered per-slice curve exactly as :func:`~mood_detector.inference.aggregate.
    sample_score` filters it (window ~10% of the slices, order 3; fewer than 5 slices: unfiltered)."""
    s = np.asarray(slice_scores, dtype=np.float64)
    w = savgol_window(s.size)
    return savgol_filter(s, w, 3) if w > 3 else s


def _rule_words(rule: str) -> str:
    """Words for a slice-score rule: ``mean`` -> 'mean voxel score', ``top:Q`` -> 'mean of the top Q%'."""
    q = parse_slice_rule(rule)
    return "mean voxel score" if q is None else f"mean of the top {q * 100:g}% of voxel scores"


def case_title(case: Case) -> str:
    """The figure title: name, sample score (and where it came from), label."""
    src = "read from <name>.txt" if case.sample_source == "txt" else \
        f"computed from the pixel map: per-slice {_rule_words(case.slice_rule)} along axis {case.slice_axis}, " \
        "common aggregation"
    label = "" if case.label_sample is None else f"    label: {'anomalous' if case.label_sample else 'normal'}"
    return f"{case.name}{label}\nsample score {case.sample:.4f} ({src})"


def render_volume(case: Case, centre: tuple[int, int, int], png: Path, thumb: Path | None,
                  cfg: RenderConfig) -> None:
    """One PNG for one volume: three orthogonal slices through ``centre`` (input grey, scores as a heat map,
    label contour) and the slice-wise score curve along the slicing axis (anomalous slices shaded)."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    fig = _new_figure(cfg.figsize, cfg.dpi)
    gs = fig.add_gridspec(2, 4, width_ratios=[1, 1, 1, 0.05], height_ratios=[1.6, 1], hspace=0.35, wspace=0.25,
                          left=0.05, right=0.94, top=0.87, bottom=0.08)
    img = case.image
    nz = img[img != 0]
    nz = nz[:: max(1, nz.size // 1_000_000)]  # a 1M-voxel subsample is plenty for the display range
    vmin = float(img.min())
    vmax = float(np.percentile(nz, 99.5)) if nz.size else float(img.max())
    if vmax <= vmin:
        vmax = vmin + 1.0
    cmap = colormaps[cfg.cmap]
    for a in range(3):
        ax = fig.add_subplot(gs[0, a])
        h_ax, v_ax = [d for d in range(3) if d != a]
        sl = np.take(img, centre[a], axis=a).T  # rows = v_ax, columns = h_ax
        aspect = case.zooms[v_ax] / case.zooms[h_ax] if case.zooms[h_ax] > 0 else 1.0
        ax.imshow(sl, cmap="gray", vmin=vmin, vmax=vmax, origin="lower", interpolation="nearest", aspect=aspect)
        if case.pixel is not None:
            sc = np.take(case.pixel, centre[a], axis=a).T
            rgba = cmap(np.clip(sc, 0.0, 1.0))
            rgba[..., 3] = np.where(sc < cfg.overlay_min, 0.0,
                                    cfg.alpha * np.clip(sc / max(cfg.opaque_at, 1e-6), 0.0, 1.0))
            ax.imshow(rgba, origin="lower", interpolation="nearest", aspect=aspect)
        if case.label_mask is not None:
            lab = np.take(case.label_mask, centre[a], axis=a).T
            if lab.any() and not lab.all():
                ax.contour(lab.astype(np.float32), levels=[0.5], colors=cfg.label_colour, linewidths=1.2)
        ax.axhline(centre[v_ax], color="white", lw=0.5, alpha=0.35)
        ax.axvline(centre[h_ax], color="white", lw=0.5, alpha=0.35)
        mark = " (slicing axis)" if a == case.slice_axis else ""
        ax.set_title(f"axis {a} = {centre[a]}{mark}", fontsize=10)
        ax.set_xlabel(f"axis {h_ax}", fontsize=8)
        ax.set_ylabel(f"axis {v_ax}", fontsize=8)
        ax.tick_params(labelsize=7)
    cax = fig.add_subplot(gs[0, 3])
    if case.pixel is not None:
        cb = fig.colorbar(ScalarMappable(norm=Normalize(0.0, 1.0), cmap=cmap), cax=cax)
        cb.set_label(f"voxel score (opacity grows up to {cfg.opaque_at:g})", fontsize=9)
        cb.ax.tick_params(labelsize=7)
    else:
        cax.set_axis_off()
    ax = fig.add_subplot(gs[1, :3])
    axis = case.slice_axis
    if case.slice_scores is not None:
        s = case.slice_scores
        x = np.arange(s.size)
        if case.label_mask is not None:
            flags = np.moveaxis(case.label_mask, axis, 0).reshape(s.size, -1).any(axis=1)
            for i, (lo, hi) in enumerate(_runs(flags)):
                ax.axvspan(lo - 0.5, hi + 0.5, color=cfg.label_colour, alpha=0.25, lw=0,
                           label="anomalous slices (label)" if i == 0 else None)
        ax.plot(x, s, color="tab:red", lw=1.2, label=f"{_rule_words(case.slice_rule)} per slice")
        ax.plot(x, filtered_slice_scores(s), color="black", lw=1.0, ls="--", label="Savitzky-Golay filtered")
        ax.axhline(case.sample, color="tab:blue", lw=0.8, ls=":", label=f"sample score {case.sample:.4f}")
        ax.axvline(centre[axis], color="grey", lw=0.8, alpha=0.6)
        ax.set_xlim(-0.5, s.size - 0.5)
        top = max(float(s.max()), case.sample, 1e-3)
        ax.set_ylim(0.0, top * 1.15)
        ax.legend(fontsize=7, loc="upper right", framealpha=0.8)
    else:
        ax.text(0.5, 0.5, "no pixel scores for this volume (sample prediction only)", ha="center", va="center",
                transform=ax.transAxes, fontsize=10)
    ax.set_xlabel(f"slice index along axis {axis} (slicing axis)", fontsize=9)
    ax.set_ylabel("score", fontsize=9)
    ax.tick_params(labelsize=7)
    fig.suptitle(case_title(case), fontsize=11, parse_math=False)
    _save(fig, png, cfg.dpi)
    if thumb is not None:
        save_thumbnail(png, thumb, cfg.pixels(thumb=True))


def save_thumbnail(png: Path, thumb: Path, size: tuple[int, int]) -> None:
    """Scale ``png`` down to ``size`` (width, height) with Pillow (a dependency of matplotlib), atomically;
    much cheaper than drawing the figure again."""
    from PIL import Image

    with Image.open(png) as im:
        small = im.convert("RGB").resize(size, Image.Resampling.LANCZOS)
    with atomic_open(thumb, fsync=False) as fh:
        small.save(fh, format="PNG", optimize=True)


def render_curves(curves: dict[str, Curves], roc_png: Path, pr_png: Path, cfg: RenderConfig) -> None:
    """ROC and precision-recall PNGs with one line per level (``sample``, ``pixel``) that has both classes."""
    colours = {"sample": "tab:blue", "pixel": "tab:red"}
    for kind, path in (("roc", roc_png), ("pr", pr_png)):
        fig = _new_figure(cfg.curve_figsize, cfg.dpi)
        ax = fig.add_subplot(1, 1, 1)
        for level, c in curves.items():
            col = colours.get(level)
            if kind == "roc":
                ax.plot(c.fpr, c.tpr, color=col, lw=1.5, label=f"{level}: AUROC {c.auroc:.3f}")
            else:
                ax.step(c.recall, c.precision, where="post", color=col, lw=1.5, label=f"{level}: AP {c.ap:.3f}")
        if kind == "roc":
            ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
            ax.set_xlabel("false positive rate")
            ax.set_ylabel("true positive rate")
            ax.set_title("ROC")
        else:
            ax.set_xlabel("recall")
            ax.set_ylabel("precision")
            ax.set_title("precision-recall")
        ax.set_xlim(-0.01, 1.01)
        ax.set_ylim(-0.01, 1.01)
        ax.grid(alpha=0.3)
        if curves:
            ax.legend(loc="lower right" if kind == "roc" else "lower left", fontsize=8)
        fig.tight_layout()
        _save(fig, path, cfg.dpi)
