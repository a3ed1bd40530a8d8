"""The report's ``index.html``: one static page (inline CSS, no JavaScript, no network, relative links only)."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from mood_detector import __version__

CSS = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em 0; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: middle; }
th { background: #f0f0f0; }
td.num { text-align: right; font-family: monospace; }
img.thumb { display: block; border: 1px solid #999; }
.note { color: #555; font-size: 0.9em; }
"""


@dataclass
class MetricTable:
    """A table of metrics to show as-is (cells already formatted)."""

    columns: list[str]
    rows: list[list[str]]
    source: str = ""


@dataclass
class VolumeEntry:
    """One row of the volume list.

    Attributes:
        png, thumb: paths relative to the report folder (``None`` if rendering failed).
    """

    name: str
    sample: float
    sample_source: str
    label_sample: bool | None
    max_score: float | None
    centre: tuple[int, int, int]
    png: str | None
    thumb: str | None


@dataclass
class PageData:
    """Everything the page shows."""

    inputs: str
    predictions: str
    labels: str | None
    volumes: list[VolumeEntry]
    failed: list[tuple[str, str]] = field(default_factory=list)
    roc_png: str | None = None
    pr_png: str | None = None
    table: MetricTable | None = None
    notes: list[str] = field(default_factory=list)


def href(relative: str) -> str:
    """A relative link, percent-encoded per path segment (spaces, unicode, '#', '?') and HTML-escaped."""
    return html.escape(quote(relative, safe="/"), quote=True)


def esc(text: object) -> str:
    """HTML-escape any value for text and attribute content."""
    return html.escape(str(text), quote=True)


def _label_text(label: bool | None) -> str:
    return "" if label is None else ("anomalous" if label else "normal")


def render_html(page: PageData) -> str:
    """The complete ``index.html`` text; volumes are listed in the order given (sorted by the caller)."""
    out: list[str] = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
                      "<title>mood-detector report</title>", f"<style>{CSS}</style>", "</head>", "<body>",
                      "<h1>mood-detector report</h1>", "<table>",
                      f"<tr><th>inputs</th><td>{esc(page.inputs)}</td></tr>",
                      f"<tr><th>predictions</th><td>{esc(page.predictions)}</td></tr>",
                      f"<tr><th>labels</th><td>{esc(page.labels) if page.labels else '(none)'}</td></tr>",
                      f"<tr><th>volumes</th><td>{len(page.volumes)} reported, {len(page.failed)} failed</td></tr>",
                      f"<tr><th>made by</th><td>mood-detector {esc(__version__)}</td></tr>", "</table>"]
    for note in page.notes:
        out.append(f'<p class="note">{esc(note)}</p>')
    if page.roc_png or page.pr_png or page.table:
        out.append("<h2>Curves and metrics</h2>")
        out.append("<p>")
        for src, alt in ((page.roc_png, "ROC curve"), (page.pr_png, "precision-recall curve")):
            if src:
                out.append(f'<img src="{href(src)}" alt="{alt}">')
        out.append("</p>")
        if page.table:
            out.append("<table>")
            out.append("<tr>" + "".join(f"<th>{esc(c)}</th>" for c in page.table.columns) + "</tr>")
            for row in page.table.rows:
                out.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>")
            out.append("</table>")
            if page.table.source:
                out.append(f'<p class="note">{esc(page.table.source)}</p>')
    out.append("<h2>Volumes, highest sample score first</h2>")
    out.append('<p class="note">Each image: three orthogonal slices through the highest-scoring region (argmax of '
               "the smoothed score map), input in grey, voxel scores as a heat map (scores below the overlay "
               "threshold unpainted), label contour where labels exist; below, the mean voxel score of every "
               "slice along the slicing axis with anomalous slices shaded. Click a thumbnail for the full image.</p>")
    out.append("<table>")
    out.append("<tr><th>#</th><th>volume</th><th>sample score</th><th>score source</th><th>label</th>"
               "<th>max voxel score</th><th>focus voxel</th><th>image</th></tr>")
    for i, v in enumerate(page.volumes, 1):
        if v.png and v.thumb:
            img = f'<a href="{href(v.png)}"><img class="thumb" src="{href(v.thumb)}" alt="{esc(v.name)}"></a>'
        elif v.png:
            img = f'<a href="{href(v.png)}">image</a>'
        else:
            img = "(not rendered)"
        max_score = "" if v.max_score is None else f"{v.max_score:.4f}"
        out.append(f"<tr><td class=\"num\">{i}</td><td>{esc(v.name)}</td><td class=\"num\">{v.sample:.4f}</td>"
                   f"<td>{esc(v.sample_source)}</td><td>{_label_text(v.label_sample)}</td>"
                   f"<td class=\"num\">{max_score}</td><td>{esc(v.centre)}</td><td>{img}</td></tr>")
    out.append("</table>")
    if page.failed:
        out.append("<h2>Not reported</h2><ul>")
        for name, reason in page.failed:
            out.append(f"<li>{esc(name)}: {esc(reason)}</li>")
        out.append("</ul>")
    out.extend(["</body>", "</html>", ""])
    return "\n".join(out)


def relative(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` with forward slashes."""
    return path.relative_to(root).as_posix()
