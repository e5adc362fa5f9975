"""Regenerate every figure and table of a finished run, in the paper style.

A run folder is a sweep (``results.csv``, from ``steerscope sweep``) or a training
run (``methods.csv``/``history.csv``, from ``steerscope train``), or both.

Example:
    >>> regenerate("runs/sweep", "figures/")       # also: steerscope figures --run runs/sweep --out figures/
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from . import plots
from .report import SUMMARY_COLUMNS, latex_table, markdown_table, ranked, sweep_figures
from .sweep import load_sweep

FORMATS = ("html", "png", "svg")


def regenerate(run: str | Path, out: str | Path, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Write the run's figures (PNG, SVG, HTML) and tables (markdown, LaTeX) into ``out``."""
    run, out = Path(run), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figures, written = {}, []
    found = False
    if (run / "results.csv").exists():
        found = True
        result = load_sweep(run)
        figures |= {out / stem: fig for stem, fig in sweep_figures(result).items()}
        table = ranked(result.results).head(20)
        written += write_tables(out / "sweep_summary", table, SUMMARY_COLUMNS, "Steerability sweep, ranked by composite score.")
    if (run / "history.csv").exists():
        found = True
        figures[out / "training_curves"] = plots.training_curves(pd.read_csv(run / "history.csv"))
    if (run / "methods.csv").exists():
        from .compare import pareto_figure

        table = pd.read_csv(run / "methods.csv")
        figures[out / "pareto"] = pareto_figure(table)
        written += write_tables(out / "methods", table, None, "Honesty steering methods on held-out dilemmas.")
        doses = {path.stem.replace("_", " "): pd.read_csv(path) for path in sorted((run / "doses").glob("*.csv"))}
        if doses:
            figures[out / "method_dose_response"] = plots.dose_curves(dict(list(doses.items())[:6]))
    if not found:
        raise FileNotFoundError(f"{run} holds neither results.csv (a sweep) nor history.csv/methods.csv (a training run).")
    return written + plots.save_figures(figures, formats)


def write_tables(base: Path, table: pd.DataFrame, columns: Sequence[str] | None, caption: str) -> list[Path]:
    markdown, latex = base.with_suffix(".md"), base.with_suffix(".tex")
    markdown.write_text(markdown_table(table, columns) + "\n")
    latex.write_text(latex_table(table, columns, caption) + "\n")
    return [markdown, latex]
