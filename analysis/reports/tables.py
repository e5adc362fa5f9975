"""Tables as files: Markdown, LaTeX (booktabs) and CSV, each written atomically by the one writer `write_table`.

Every table steerscope writes for a reader goes through `write_table`: the paper's tables, the sweep's
``summary.tex`` and the tables `regenerate` writes. Cells are formatted alike everywhere (`format_cell`:
three significant digits, small numbers in scientific notation, NaN as "–").

Example:
    write_table(Path("out/table1"), table, ["method", "effect"], "Main methods", note="2 runs failed.")
    # [PosixPath('out/table1.csv'), PosixPath('out/table1.md'), PosixPath('out/table1.tex')]

    >>> import pandas as pd
    >>> print(markdown_table(pd.DataFrame({"a": [0.5]})))
    | a |
    |---|
    | 0.5 |
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from probes.files import write_atomic

TABLE_FORMATS = ("csv", "md", "tex")


def format_cell(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return f"{value:.2e}" if value != 0 and abs(value) < 1e-3 else f"{value:.3g}"
    return str(value)


def markdown_table(frame: pd.DataFrame, columns: Sequence[str] | None = None) -> str:
    """A GitHub-style markdown table (no extra dependency)."""
    columns = [c for c in (columns or frame.columns) if c in frame.columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in frame[columns].itertuples(index=False):
        lines.append("| " + " | ".join(format_cell(v) for v in row) + " |")
    return "\n".join(lines)


LATEX = {
    "\\": r"\textbackslash{}",
    "_": r"\_",
    "%": r"\%",
    "&": r"\&",
    "#": r"\#",
    "$": r"\$",
    "±": r"$\pm$",
    "Δ": r"$\Delta$",
    "ρ": r"$\rho$",
    "≥": r"$\geq$",
    "≤": r"$\leq$",
    "<": r"$<$",
    ">": r"$>$",
    "−": r"$-$",
    "–": "--",
    "×": r"$\times$",
    "÷": r"$\div$",
}


def escape(text: Any) -> str:
    """``text`` for LaTeX: its special characters escaped and the symbols steerscope's tables use as math."""
    return "".join(LATEX.get(char, char) for char in str(text))


def latex_table(frame: pd.DataFrame, columns: Sequence[str] | None = None, caption: str = "") -> str:
    """A booktabs LaTeX table of ``frame`` (for papers)."""
    columns = [c for c in (columns or frame.columns) if c in frame.columns]
    body = [" & ".join(escape(format_cell(v)) for v in row) + r" \\" for row in frame[columns].itertuples(index=False)]
    return "\n".join(
        [
            r"\begin{table}[t]",
            r"\centering",
            r"\begin{tabular}{" + "l" * len(columns) + "}",
            r"\toprule",
            " & ".join(escape(c) for c in columns) + r" \\",
            r"\midrule",
            *body,
            r"\bottomrule",
            r"\end{tabular}",
            rf"\caption{{{escape(caption)}}}" if caption else "",
            r"\end{table}",
        ]
    )


def write_table(
    base: str | Path,
    table: pd.DataFrame,
    columns: Sequence[str] | None = None,
    caption: str = "",
    *,
    formats: Sequence[str] = TABLE_FORMATS,
    heading: bool = True,
    note: str = "",
    newline: bool = True,
    shown: pd.DataFrame | None = None,
) -> list[Path]:
    """Write ``table`` beside ``base`` in each of ``formats``, atomically, and return the files in that order:

    - ``base.csv``: every column of ``table``;
    - ``base.md``: ``# caption`` (with ``heading``), the Markdown table of ``columns`` and ``note`` below it;
    - ``base.tex``: the LaTeX table of ``columns`` with ``caption``.

    ``columns`` None means every column. ``shown``, when given, is the table the Markdown and LaTeX show
    instead of ``table[columns]``: the key columns under readable names, cells such as ``mean ± SD``;
    the CSV still holds every column of ``table``. Each Markdown and LaTeX file ends with a newline unless ``newline`` is
    False (the sweep's ``summary.tex`` has always ended without one, and stays byte for byte as it was).
    """
    base = Path(base)
    unknown = [f for f in formats if f not in TABLE_FORMATS]
    if unknown:
        raise ValueError(f"Unknown table format(s) {unknown}; write_table writes {', '.join(TABLE_FORMATS)}.")
    end = "\n" if newline else ""
    view = table if shown is None else shown
    columns = columns if shown is None else list(shown.columns)
    texts = {
        "csv": lambda: table.to_csv(index=False),
        "md": lambda: (f"# {caption}\n\n" if heading else "") + markdown_table(view, columns) + (f"\n\n{note}" if note else "") + end,
        "tex": lambda: latex_table(view, columns, caption) + end,
    }
    return [write_atomic(base.with_suffix(f".{suffix}"), texts[suffix]()) for suffix in formats]
