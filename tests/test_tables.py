"""Tables for a reader: the LaTeX and Markdown show the key columns under readable names; the CSV keeps every column."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from analysis.reports.paper import TABLE1_COLUMNS, aggregate, shown_table1
from analysis.reports.sweep_report import COMPACT_LABELS, write_report
from analysis.reports.tables import write_table
from tests.test_report_page import sweep_result


def latex_header(tex: str) -> list[str]:
    """The column names of a booktabs table (the row after \\toprule)."""
    lines = tex.splitlines()
    return [cell.strip() for cell in lines[lines.index(r"\toprule") + 1].removesuffix(r"\\").split(" & ")]


def fake_runs() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for method, seeds in (("InnerPiSSA", (0, 1)), ("PCA (L5)", (0,)), ("prompting", (0,))):
        for seed in seeds:
            rows.append(
                {
                    "study": "main",
                    "method": method,
                    "seed": seed,
                    "effect": rng.normal(0.3, 0.1),
                    "p_value": rng.uniform(0, 0.1),
                    "side_effects": rng.uniform(0, 0.1),
                    "delta_nll": rng.uniform(0, 0.2),
                    "control_drift": rng.uniform(0, 0.1),
                    "parameters": 1024 if method == "InnerPiSSA" else 0,
                    "train_s": 3.0,
                }
            )
    return pd.DataFrame(rows)


def test_table1_latex_shows_only_the_key_columns_with_readable_names_and_the_csv_keeps_all(tmp_path):
    table = aggregate(fake_runs())
    files = write_table(tmp_path / "table1", table, TABLE1_COLUMNS, "Main methods", shown=shown_table1(table))
    assert [p.suffix for p in files] == [".csv", ".md", ".tex"]
    assert set(TABLE1_COLUMNS) <= set(pd.read_csv(tmp_path / "table1.csv").columns)  # every raw column stays in the CSV
    tex = (tmp_path / "table1.tex").read_text()
    header = latex_header(tex)
    assert header == ["method", "seeds", r"effect $\pm$ SD", "p (median)", "p (max)", r"side effects", r"$\Delta$NLL", "parameters"]
    assert len(header) <= 8 and not any("_" in name for name in header)  # no raw names such as effect_sd
    body = tex.split(r"\midrule")[1].split(r"\bottomrule")[0]
    assert r"$\pm$" in body and "±" not in tex and "Δ" not in tex  # pdflatex-safe
    assert all(row.count(" & ") == len(header) - 1 for row in body.strip().splitlines())
    markdown = (tmp_path / "table1.md").read_text()
    assert "| method | seeds | effect ± SD | p (median) | p (max) | side effects | ΔNLL | parameters |" in markdown


def test_the_sweeps_latex_summary_shows_only_the_key_columns(tmp_path):
    write_report(sweep_result(tmp_path), formats=("html",))
    header = latex_header((tmp_path / "summary.tex").read_text())
    assert header == ["configuration", "slope", "95 \\% CI", "p", "p (Holm)", "null slope", "vs null p", r"$\Delta$NLL", "predicted"]
    assert len(header) == len(COMPACT_LABELS) and not any(re.search(r"\\_", name) for name in header)


def test_without_shown_the_tables_show_the_columns_given(tmp_path):
    frame = pd.DataFrame({"a_b": [0.5], "c": [1], "d": ["x"]})
    write_table(tmp_path / "t", frame, ["a_b", "c"], "caption", formats=("tex", "md"))
    assert latex_header((tmp_path / "t.tex").read_text()) == [r"a\_b", "c"]
    assert (tmp_path / "t.md").read_text().splitlines()[2] == "| a_b | c |"
