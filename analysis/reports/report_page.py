"""One HTML page that leads with its answer: a summary, a compact table (every column on demand), then
figures with captions. Used by the sweep's ``report.html`` and the experiment's ``paper.html``.

plotly.js is loaded from one ``plotly.min.js`` beside the page (offline; the page itself stays small).
Each figure's title becomes the heading above it, so plotly's mode bar never covers it, and the figure
takes the page's width up to a little more than it was drawn for.

Example:
    page = Page("Steerability sweep", "SmolLM2-135M, honesty")
    page.add_answer(["Best: L12 o mean_diff, slope 0.3 [0.1, 0.5]"])
    page.add_table("Ranked configurations", compact, full=everything, csv="results.csv")
    page.add_figure(fig, "How to read it, in numbers")
    page.write(Path("out/report.html"), plotlyjs=Path("out/figures/plotly.min.js"))
"""

from __future__ import annotations

import html
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from .figure_files import HTML_CONFIG, MODEBAR_HEIGHT, write_plotlyjs
from .style import LINE_HEIGHT
from .tables import format_cell

PAGE_WIDTH = 1180  # CSS px of the text column; figures may use it all
STYLE = f"""
body{{font-family:Helvetica,Arial,sans-serif;max-width:{PAGE_WIDTH}px;margin:1.5em auto;padding:0 20px;color:#222;line-height:1.45}}
h1{{font-size:26px;margin-bottom:0.2em}} h2{{font-size:20px;margin-top:1.6em;border-bottom:1px solid #ddd}} h3{{font-size:17px;margin:1.4em 0 0.3em}}
.meta{{color:#666;margin-top:0}} .answer{{background:#f5f8fb;border-left:4px solid #0072B2;padding:0.6em 1.2em}}
.answer li{{margin:0.35em 0}} .answer h2{{margin-top:0.4em}} table{{border-collapse:collapse;font-size:14px;margin:0.6em 0}}
td,th{{padding:4px 10px;border-bottom:1px solid #e3e3e3;text-align:right;white-space:nowrap}}
th{{background:#fafafa;cursor:help}} td:first-child,th:first-child{{text-align:left}}
.scroll{{overflow-x:auto;max-width:100%}} details{{margin:0.6em 0}} summary{{cursor:pointer;color:#0072B2}}
figure{{margin:1em 0 2.2em}} figcaption{{color:#333;max-width:900px;font-size:15px}} .note{{color:#555;font-size:14px;max-width:900px}}
"""


def cell(value: object) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    return html.escape(format_cell(value))


def html_table(frame: pd.DataFrame, labels: Mapping[str, str] | None = None, notes: Mapping[str, str] | None = None) -> str:
    """``frame`` as a plain HTML table; ``labels`` rename headers, ``notes`` become their tooltips."""
    labels, notes = labels or {}, notes or {}
    head = "".join(f'<th title="{html.escape(notes.get(c, c))}">{html.escape(labels.get(c, c))}</th>' for c in frame.columns)
    rows = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in frame.itertuples(index=False))
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>'


def plain_title(fig: go.Figure) -> str:
    return re.sub(r"<br\s*/?>", " ", fig.layout.title.text or "").strip()


def page_figure(fig: go.Figure, div_id: str) -> str:
    """The figure without its title (the page shows it as a heading), with room above for the mode bar,
    sized by the page: its drawn width is a maximum, not a fixed size."""
    title = fig.layout.title.text or ""
    shown = go.Figure(fig)
    lines = title.count("<br") + 1 if title else 0
    top = shown.layout.margin.t if shown.layout.margin.t is not None else 30
    title_room = LINE_HEIGHT * lines if lines else 0  # what `style.style` added to the top margin for the title
    height = (shown.layout.height or 450) - title_room + MODEBAR_HEIGHT
    width = shown.layout.width or 700
    shown.update_layout(title=None, margin_t=top - title_room + MODEBAR_HEIGHT, width=None, height=None, autosize=True)
    body = shown.to_html(
        full_html=False,
        include_plotlyjs=False,
        div_id=div_id,
        default_width="100%",
        default_height=f"{height}px",
        config=HTML_CONFIG | {"responsive": True},
    )
    return f'<div style="max-width:{int(width * 1.3)}px">{body}</div>'


class Page:
    """Sections in reading order: answer, tables, figures, notes."""

    def __init__(self, title: str, subtitle: str = ""):
        self.title, self.subtitle = title, subtitle
        self.parts: list[str] = []
        self.figures = 0

    def add_answer(self, lines: Sequence[str], heading: str = "Answer") -> None:
        items = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
        self.parts.append(f'<section class="answer"><h2>{html.escape(heading)}</h2><ul>{items}</ul></section>')

    def add_heading(self, text: str) -> None:
        self.parts.append(f"<h2>{html.escape(text)}</h2>")

    def add_note(self, text: str) -> None:
        self.parts.append(f'<p class="note">{html.escape(text)}</p>')

    def add_table(
        self,
        heading: str,
        compact: pd.DataFrame,
        *,
        caption: str = "",
        full: pd.DataFrame | None = None,
        csv: str | None = None,
        labels: Mapping[str, str] | None = None,
        notes: Mapping[str, str] | None = None,
    ) -> None:
        """A heading, the compact table, its caption, and every column behind a toggle (and a CSV link)."""
        parts = [f"<h3>{html.escape(heading)}</h3>", html_table(compact, labels, notes)]
        if caption:
            parts.append(f'<p class="note">{html.escape(caption)}</p>')
        if full is not None:
            link = f' (also <a href="{html.escape(csv)}">{html.escape(csv)}</a>)' if csv else ""
            parts.append(
                f"<details><summary>All {len(full.columns)} columns, {len(full)} rows{link}</summary>{html_table(full, notes=notes)}</details>"
            )
        elif csv:
            parts.append(f'<p class="note">As CSV: <a href="{html.escape(csv)}">{html.escape(csv)}</a></p>')
        self.parts.append("".join(parts))

    def add_figure(self, fig: go.Figure, caption: str, files: Sequence[str] = (), label: str | None = None) -> None:
        """The figure under its title as a heading ("``label``. title"; default label "Figure n"), with ``caption``
        below and links to ``files`` (its PNG, SVG...)."""
        self.figures += 1
        label = label or f"Figure {self.figures}"
        heading = plain_title(fig) or label
        links = ""
        if files:
            links = " Files: " + ", ".join(f'<a href="{html.escape(f)}">{html.escape(Path(f).suffix[1:].upper())}</a>' for f in files) + "."
        self.parts.append(
            f"<figure><h3>{html.escape(label)}. {html.escape(heading)}</h3>{page_figure(fig, f'figure-{self.figures}')}"
            f"<figcaption>{html.escape(caption)}{links}</figcaption></figure>"
        )

    def render(self, plotlyjs_src: str) -> str:
        subtitle = f'<p class="meta">{html.escape(self.subtitle)}</p>' if self.subtitle else ""
        return (
            f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(self.title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style>'
            f'<script src="{html.escape(plotlyjs_src)}"></script></head>'
            f"<body><h1>{html.escape(self.title)}</h1>{subtitle}{''.join(self.parts)}</body></html>\n"
        )

    def write(self, path: Path, plotlyjs: Path | None = None) -> Path:
        """Write the page to ``path`` and plotly.js to ``plotlyjs`` (default: beside the page) unless it is there."""
        path = Path(path)
        plotlyjs = Path(plotlyjs) if plotlyjs is not None else path.parent / "plotly.min.js"
        write_plotlyjs(plotlyjs)
        path.write_text(self.render(Path(os.path.relpath(plotlyjs, path.parent)).as_posix()))
        return path
