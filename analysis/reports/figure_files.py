"""Writing figures to files: HTML always, PNG/SVG/PDF when a Chromium is there to render them.

Static export goes through kaleido, which drives a headless Chromium. Where no
Chromium is installed (``apt-get install chromium``, or set ``BROWSER_PATH``),
figures are written as HTML only and a single warning per process says so;
nothing fails. HTML files load plotly.js from a ``plotly.min.js`` written once
beside them, so they open offline, and leave a band above the title for plotly's mode bar.

Example:
    from analysis import plots
    plots.save_figure(plots.dose_curves({"pca_diff": df}), "figures/dose")   # .html (+ .png/.svg/.pdf)
    plots.static_export_available()
    # True
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

STATIC_FORMATS = ("png", "svg", "pdf", "jpeg", "webp")
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
warned_no_static_export = False
MODEBAR_HEIGHT = 32  # px: the band at the top of a figure where plotly draws its mode bar
HTML_CONFIG = {"displaylogo": False, "modeBarButtonsToRemove": ["select2d", "lasso2d"]}


def write_plotlyjs(path: Path) -> Path:
    """The plotly.js of the installed plotly at ``path``, unless that file already holds it."""
    from plotly.offline import get_plotlyjs

    script = get_plotlyjs()
    if not path.exists() or path.stat().st_size != len(script.encode()):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(script)
    return path


def with_modebar_room(fig: go.Figure) -> go.Figure:
    """A copy for a browser: everything moved down by the mode bar's band, so the bar covers no title."""
    shown = go.Figure(fig)
    top = shown.layout.margin.t if shown.layout.margin.t is not None else 80
    shown.update_layout(margin_t=top + MODEBAR_HEIGHT, height=(shown.layout.height or 450) + MODEBAR_HEIGHT)
    if shown.layout.title.text:
        pad = (shown.layout.title.pad.t or 0) if shown.layout.title.yref == "container" else 0
        shown.update_layout(title=dict(y=1, yref="container", yanchor="top", pad=dict(t=pad + MODEBAR_HEIGHT)))
    return shown


def static_export_available() -> bool:
    """True when kaleido is installed and a Chromium can be found (``PATH`` or ``BROWSER_PATH``)."""
    try:
        import kaleido  # noqa: F401
    except ImportError:
        return False
    browser = os.environ.get("BROWSER_PATH")
    if browser and os.access(browser, os.X_OK):
        return True
    return any(shutil.which(name) for name in CHROMIUM_NAMES)


def warn_once_no_static_export(formats: Sequence[str]) -> None:
    global warned_no_static_export
    if warned_no_static_export:
        return
    warned_no_static_export = True
    warnings.warn(
        f"Figures are written as HTML only: {'/'.join(f.upper() for f in formats)} export needs kaleido and a "
        "Chromium (`apt-get install chromium`, or point BROWSER_PATH at a Chrome binary). "
        "Open the .html files, or rerun `steerscope figures --run DIR` once Chromium is installed.",
        stacklevel=3,
    )


def save_figures(
    figures: Mapping[Any, go.Figure], formats: Sequence[str] = ("html", "png", "svg", "pdf"), scale: float = 2.0
) -> list[Path]:
    """Write several figures (``{path without extension: figure}``) as HTML and, when kaleido and a
    Chromium are present, as static images, in one browser session (each separate
    ``write_image`` starts Chromium anew: ~2.7 s here). Returns the files written."""
    unknown = [f for f in formats if f != "html" and f not in STATIC_FORMATS]
    if unknown:
        raise ValueError(f"Unknown figure format(s) {unknown}: use 'html' and any of {', '.join(STATIC_FORMATS)}.")
    written: list[Path] = []
    static_figs, static_paths, scales, widths, heights = [], [], [], [], []
    for path, fig in figures.items():
        base = Path(path)
        base.parent.mkdir(parents=True, exist_ok=True)
        if "html" in formats:
            # "directory": one plotly.min.js beside the HTML files, so they open offline.
            with_modebar_room(fig).write_html(base.with_suffix(".html"), include_plotlyjs="directory", config=HTML_CONFIG)
            written.append(base.with_suffix(".html"))
        for fmt in (f for f in formats if f != "html"):
            static_figs.append(fig)
            static_paths.append(base.with_suffix(f".{fmt}"))
            scales.append(scale if fmt == "png" else 1)
            widths.append(fig.layout.width or 800)  # kaleido ignores the layout's size otherwise
            heights.append(fig.layout.height or 500)
    if static_figs and not static_export_available():
        warn_once_no_static_export([f for f in formats if f != "html"])
    elif static_figs:
        import plotly.io as pio

        pio.write_images(static_figs, static_paths, scale=scales, width=widths, height=heights)
        written += static_paths
    return written


def save_figure(fig: go.Figure, path: str | Path, formats: Sequence[str] = ("html", "png", "svg", "pdf"), scale: float = 2.0) -> list[Path]:
    """Write ``fig`` as HTML and, when kaleido and a Chromium are present, as PNG/SVG/PDF.

    ``path`` is given without extension. Returns the files written.

    Example:
        save_figure(plots.dose_curves({"pca_diff": df}), "figures/dose")
    """
    return save_figures({path: fig}, formats, scale)
