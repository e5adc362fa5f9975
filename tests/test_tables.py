"""Tables for a reader: the LaTeX and Markdown show the key columns under readable names; the CSV keeps every column."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from analysis.reports.paper import TABLE1_COLUMNS, shown_table1
from analysis.reports.sweep_report import COMPACT_LABELS, write_report
from analysis.reports.tables import write_table
from tests.test_report_page import sweep_result


def latex_header(tex: str) -> list[str]:
    """The column names of a booktabs table (the row after \\toprule)."""
    lines = tex.splitlines()
    return [cell.strip() for cell in lines[lines.index(r"\toprule") + 1].removesuffix(r"\\").split(" & ")]


def fake_table1() -> pd.DataFrame:
    """Table 1's every column for three methods (numbers made up; the statistics are tested in test_matched_cost)."""
    rng = np.random.default_rng(0)
    table = pd.DataFrame({column: rng.uniform(0, 0.1, 3) for column in TABLE1_COLUMNS})
    table["method"] = ["InnerPiSSA", "PCA (L5)", "prompting"]
    table["seeds"], table["parameters"] = [2, 1, 1], [1024, 0, 0]
    table["budget_reached"], table["paired_at"], table["best_direction"] = [True, True, False], "budget", "PCA (L5)"
    return table


def test_table1_latex_shows_only_the_key_columns_with_readable_names_and_the_csv_keeps_all(tmp_path):
    table = fake_table1()
    files = write_table(tmp_path / "table1", table, TABLE1_COLUMNS, "Main methods", shown=shown_table1(table))
    assert [p.suffix for p in files] == [".csv", ".md", ".tex"]
    assert set(TABLE1_COLUMNS) <= set(pd.read_csv(tmp_path / "table1.csv").columns)  # every raw column stays in the CSV
    tex = (tmp_path / "table1.tex").read_text()
    header = latex_header(tex)
    assert header[:5] == ["method", "seeds", "c at budget", "KL", r"effect at budget [95 \% CI]"]
    assert "vs prompting" in header and "vs best direction" in header and "parameters" in header
    assert not any("_" in name for name in header)  # no raw names such as effect_at_budget_lo
    body = tex.split(r"\midrule")[1].split(r"\bottomrule")[0]
    assert "±" not in tex and "Δ" not in tex  # pdflatex-safe
    assert all(row.count(" & ") == len(header) - 1 for row in body.strip().splitlines())
    markdown = (tmp_path / "table1.md").read_text()
    assert "| method | seeds | c at budget | KL | effect at budget [95 % CI] | p | seed SD |" in markdown
    assert "| prompting | 1 | 0.0" in markdown and "* |" in markdown  # the prompt's fixed dose is starred


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


def test_the_transfer_table_marks_only_cells_that_beat_their_null_and_survives_missing_nulls():
    from analysis.reports.paper import marked_transfer

    table = pd.DataFrame({"n_items": [5, 4], "A": [0.5, np.nan], "B": [0.1, 0.2]}, index=["honesty", "care"])
    beats = pd.array([True, False], dtype="boolean")
    profiles = {  # A carries a null for honesty only; B has no null at all (an older run)
        "A": pd.DataFrame({"value": ["honesty"], "target": [True], "n_items": [5], "effect": [0.5], "beats_null": beats[:1]}),
        "B": pd.DataFrame({"value": ["honesty", "care"], "target": [True, False], "n_items": [5, 4], "effect": [0.1, 0.2]}),
    }
    shown = marked_transfer(table, profiles)
    assert shown.loc["honesty", "A"] == "0.5*" and shown.loc["care", "A"] == "–"
    assert list(shown["B"]) == ["0.1", "0.2"]  # no null, no mark
