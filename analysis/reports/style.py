"""The house style of every figure: a palette that survives the common colour-vision deficiencies, one
font, and titles wrapped to the figure's width (the top margin grows to hold them, so no export cuts
them off).

Example:
    >>> fig = style(go.Figure(go.Bar(x=["a"], y=[1])), "Effect by layer depth", height=440, width=760)
    >>> PALETTE[0]
    '#0072B2'
"""

from __future__ import annotations

import plotly.graph_objects as go

# Okabe–Ito: distinguishable under the common colour-vision deficiencies.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
FONT = dict(family="Helvetica, Arial, sans-serif", size=14)


TITLE_SIZE = 16
LINE_HEIGHT = int(1.3 * TITLE_SIZE)
# from the top of the image; plotly places a multi-line title's first line ~14 px above its anchor, so the pad holds it inside
TITLE_PLACE = dict(y=1, yref="container", yanchor="top", pad=dict(t=16))
CHAR_WIDTH = 0.56  # of the font size: a wide average for Helvetica/Arial, so an estimate errs towards wrapping


def wrap_title(title: str, width: float, size: int = TITLE_SIZE) -> list[str]:
    """``title`` broken at spaces into lines that fit ``width`` pixels (minus a margin each side)."""
    per_line = max(12, int((width - 60) / (CHAR_WIDTH * size)))
    lines: list[str] = []
    for word in title.split(" "):
        if lines and len(lines[-1]) + 1 + len(word) <= per_line:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines


def style(fig: go.Figure, title: str | None = None, height: int | None = None, width: int | None = None) -> go.Figure:
    """The house style; a title longer than the figure is wrapped onto lines (and the top margin grows to hold
    them), so no export cuts it off."""
    lines = wrap_title(title, width or fig.layout.width or 700) if title else []
    fig.update_layout(
        template="simple_white",
        font=FONT,
        colorway=PALETTE,
        title=dict(text="<br>".join(lines), x=0.02, xanchor="left", **TITLE_PLACE, font=dict(size=TITLE_SIZE)) if lines else None,
        legend=dict(bgcolor="rgba(255,255,255,0.8)"),
        margin=dict(l=70, r=30, t=30 + LINE_HEIGHT * len(lines) if lines else 30, b=60),
    )
    if height:
        fig.update_layout(height=height + LINE_HEIGHT * max(0, len(lines) - 1))
    if width:
        fig.update_layout(width=width)
    return fig
