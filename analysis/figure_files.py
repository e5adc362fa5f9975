"""Writing figures to files: HTML always, PNG/SVG/PDF when a Chromium is there to render them.

Static export goes through kaleido, which drives a headless Chromium. Where no
Chromium is installed (``apt-get install chromium``, or set ``BROWSER_PATH``),
figures are written as HTML only and a single warning per process says so;
nothing fails. HTML files load plotly.js from a ``plotly.min.js`` written once
beside them, so they open offline.

Example:
    >>> from analysis import plots
    >>> plots.save_figure(plots.dose_curves({"pca_diff": df}), "figures/dose")   # .html (+ .png/.svg/.pdf)
    >>> plots.static_export_available()
    True
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
            fig.write_html(base.with_suffix(".html"), include_plotlyjs="directory")
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
        >>> save_figure(plots.dose_curves({"pca_diff": df}), "figures/dose")
    """
    return save_figures({path: fig}, formats, scale)
