"""Figures that show wherever a notebook is read: in a live kernel, exported to HTML, in a static preview.

plotly's default in a kernel sends only its own mime type (``application/vnd.plotly.v1+json``),
which a live JupyterLab draws but ``jupyter nbconvert --to html`` and static previews drop,
so every figure vanished once a notebook left its kernel. `show_figures_everywhere`,
called once at the top of a notebook, chooses the renderer for the whole kernel:

- kaleido and a Chromium present (``scripts/setup.sh`` installs both): each figure is sent
  as plotly's JSON (interactive in JupyterLab) *and* as a PNG (what nbconvert's HTML,
  GitHub and other static previews show). One Chromium is kept running for the kernel,
  so a figure costs a fraction of a second, not a browser start.
- otherwise: plotly's JSON and HTML that draws it with plotly.js embedded once, in the
  first figure's output (offline, no CDN; about 4.7 MB), and one warning saying why.

Example:
    >>> from analysis.reports.notebook import show_figures_everywhere
    >>> show_figures_everywhere()
    'plotly_mimetype+png'
"""

from __future__ import annotations

import atexit
import warnings

from .figure_files import static_export_available

STATIC = "plotly_mimetype+png"
OFFLINE_HTML = "plotly_mimetype+notebook"
chosen: str | None = None


def show_figures_everywhere() -> str:
    """Set plotly's default renderer for this process (see the module docstring) and return its name.

    A PNG takes the figure's own width and height (plotly's 700 × 500 where it sets none). Calling it
    again returns the first choice and changes nothing.
    """
    global chosen
    if chosen is not None:
        return chosen
    import plotly.io as pio

    if static_export_available():
        import kaleido

        kaleido.start_sync_server(silence_warnings=True)
        # plotly passes its browser options on every image, which a running server already has
        warnings.filterwarnings("ignore", message="The kopts argument is ignored if using a server")
        atexit.register(kaleido.stop_sync_server, silence_warnings=True)
        png = pio.renderers["png"]
        png.width, png.height, png.scale = None, None, 1
        chosen = STATIC
    else:
        warnings.warn(
            "No Chromium for static figures (apt-get install chromium, or set BROWSER_PATH): figures are "
            "shown as interactive HTML with plotly.js embedded once, so they render in exported HTML too, "
            "but not in static previews.",
            stacklevel=2,
        )
        chosen = OFFLINE_HTML
    pio.renderers.default = chosen
    return chosen


def progress_bars(show: bool) -> bool:
    """Whether steerscope's and transformers' progress bars (model loading) appear; returns ``show``.

    A notebook passes the result as ``progress=`` to `probes.collect`, the sweep and training, so a
    smoke run's stored outputs hold no bars and a real run shows one widget per bar (ipywidgets).

    Example:
        PROGRESS = progress_bars(not FAST)
    """
    from transformers.utils import logging

    (logging.enable_progress_bar if show else logging.disable_progress_bar)()
    return show
