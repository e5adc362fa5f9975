"""Regenerate every figure and table of a finished run, in the paper style.

A run folder is a sweep (``results.csv``, from ``steerscope sweep``) or an
experiment (``runs.csv``, from ``steerscope train`` or ``paper``; see `analysis.reports.paper`).

Example:
    regenerate("runs/sweep", "figures/")       # also: steerscope figures --run runs/sweep --out figures/
    figures = run_figures("runs/sweep")         # {file stem: plotly figure}, to show in a notebook
    figures["steerability_score"]
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ..studies.layout import check_run, holds_experiment, holds_sweep, load_sweep
from . import plots
from .paper import write_paper
from .sweep_report import BUDGET_LABELS, COMPACT_LABELS, compact_table, inferred, sweep_figures
from .tables import write_table

FORMATS = ("html", "png", "svg")


def run_figures(run: str | Path) -> dict[str, Any]:
    """Every figure of a run folder, by the file stem `regenerate` writes it under."""
    run = Path(run)
    check_run(run)
    figures: dict[str, Any] = {}
    if holds_sweep(run):
        figures |= sweep_figures(load_sweep(run))
    return figures


def run_tables(run: Path) -> dict[str, tuple[pd.DataFrame, pd.DataFrame, str]]:
    """The run's tables by file stem: (every column, for the CSV; the key columns under readable names, for
    the Markdown and LaTeX; caption)."""
    tables: dict[str, tuple[pd.DataFrame, pd.DataFrame, str]] = {}
    if holds_sweep(run):
        table = inferred(load_sweep(run)).head(20)
        tables["sweep_summary"] = (
            table,
            compact_table(table).rename(columns=COMPACT_LABELS | BUDGET_LABELS),
            "Steerability sweep on test items, ranked by the mean item slope (p (Holm): adjusted for the configurations compared).",
        )
    return tables


def regenerate(run: str | Path, out: str | Path, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Write the run's figures (PNG, SVG, HTML; HTML only without Chromium) and tables (CSV with every
    column; Markdown and LaTeX with the key columns) into ``out``. Returns the files written."""
    run, out = Path(run), Path(out)
    check_run(run)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for stem, (table, shown, caption) in run_tables(run).items():
        written += write_table(out / stem, table, None, caption, heading=False, shown=shown)
    figures = {out / stem: figure for stem, figure in run_figures(run).items()}
    written += plots.save_figures(figures, formats)
    if holds_experiment(run):
        written += write_paper(run, out, formats)
    return written
