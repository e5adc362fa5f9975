"""The report of a sweep, written into its folder: ``summary.md``, ``summary.tex``, ``report.html``, ``figures/``.

Example:
    from analysis.reports.sweep_report import write_report
    result = analysis.sweep_steerability(model, pairs, items, out="runs/sweep")
    write_report(result)                # what `steerscope sweep` writes after the sweep
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from probes.files import write_atomic

from ..measures.predict import MIN_CONFIGS as MIN_CONFIGS_TO_VALIDATE
from ..measures.predict import validate_predictors
from ..studies.layout import RESULTS, config_name, read_config
from . import plots
from .report_page import Page
from .sweep_answer import answer_lines, figure_captions, with_inference
from .tables import format_cell, markdown_table, write_table

SUMMARY_COLUMNS = [
    "layer",
    "kind",
    "method",
    "item_slope",
    "item_slope_lo",
    "item_slope_hi",
    "p_value",
    "null_item_slope",
    "null_p_value",
    "p_holm",  # p_value adjusted (Holm) for every configuration compared; see analysis.reports.sweep_answer
    "effect",
    "delta_nll",
    "normalized_gain",
    "score",
    "n_items",
    "predicted_effect",
    "auroc",
    "auroc_null",
]
SELECTION_RULE = (
    "Configurations were chosen on validation items and every number here is on test items (split.json). Stage 2 "
    "doses the (layer, kind) with the largest first-order effect of the readout on validation items (dR/dc at c = 0, "
    "predicted_effect; see analysis.predict), plus a layer profile of the first kind. Raw AUROC is not used to choose: "
    "a randomly initialised copy of the model separates persona pairs too (auroc_null)."
)
METRICS_NOTE = (
    "item_slope: mean over test items of each item's least-squares slope of the signed readout on c (nats per unit c), "
    "with its 95 % t-interval [item_slope_lo, item_slope_hi]; p_value: one-sample t-test of those slopes against 0 "
    "(items, not (item, c) rows, are the samples). null_*: the same for a seeded random direction of the same norm at the same "
    "(layer, kind), sign-calibrated on the pairs like every method. effect = (mean at +1 − mean at −1) / 2 over items valid at every c; ΔNLL the worst neutral-text "
    "NLL increase at c = ±1; gain = 100 · effect · max(0, ρ) / (1 + max(0, ΔNLL)); score = |slope| · R² · valid_frac² "
    "of the per-coefficient means."
)


def ranked(results: pd.DataFrame) -> pd.DataFrame:
    """Rows without errors, the largest item-level effect first (``score`` for tables written before it existed)."""
    ok = results[results["error"].isna()] if "error" in results else results
    key = "item_slope" if "item_slope" in ok else "score"
    return ok.sort_values(key, ascending=False, na_position="last").reset_index(drop=True)


def predictor_validation(results: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """(the add-mode rows with ``separation_margin``, `validate_predictors` of them), or None with too few rows."""
    rows = results[~results["method"].astype(str).str.contains("+", regex=False)]
    if "error" in rows:
        rows = rows[rows["error"].isna()]
    if len(rows) < MIN_CONFIGS_TO_VALIDATE or "predicted_effect" not in rows:
        return None
    if {"auroc", "auroc_null"} <= set(rows.columns):
        rows = rows.assign(separation_margin=rows["auroc"] - rows["auroc_null"])
    return rows, validate_predictors(rows)


COMPACT_LABELS = {
    "configuration": "configuration",
    "item_slope": "slope",
    "ci": "95 % CI",
    "p_value": "p",
    "p_holm": "p (Holm)",
    "null_item_slope": "null slope",
    "vs_null_p": "vs null p",
    "delta_nll": "ΔNLL",
    "predicted_effect": "predicted",
}
BUDGET_LABELS = {  # shown only for a sweep run with a cost budget (SweepSettings.cost_budget, --cost-budget)
    "coeff_at_budget": "c at budget",
    "effect_at_budget": "effect at budget",
    "p_at_budget": "p at budget",
    "null_effect_at_budget": "null at budget",
}
COLUMN_NOTES = {
    "configuration": "layer, sublayer kind and direction method (+ mode)",
    "item_slope": "mean over test items of each item's slope of the signed readout on c (nats per unit c)",
    "ci": "95 % t-interval of the mean item slope",
    "p_value": "one-sample t-test of the item slopes against 0",
    "p_holm": "p adjusted (Holm) for the number of configurations compared",
    "null_item_slope": "the same slope for a random direction of the same norm at the same (layer, kind)",
    "vs_null_p": "paired t-test over items of the item slopes against the random direction's",
    "delta_nll": "worst NLL increase on neutral text at c = ±1 (nats/token)",
    "predicted_effect": "first-order effect dR/dc at c = 0 on validation items (what chose the configuration)",
    "coeff_at_budget": "the coefficient where the direction's mean KL on neutral text reaches the sweep's cost budget",
    "effect_at_budget": "half the readout change from −c* to +c* (nats), mean over test dilemmas: methods compared at one cost",
    "p_at_budget": "one-sample t-test over test dilemmas of that change",
    "null_effect_at_budget": "the same for the random direction at the same (layer, kind), at its own c*",
}


def inferred(result: Any) -> pd.DataFrame:
    """The ranked rows with Holm-adjusted p-values and the paired comparison with their null."""
    return with_inference(ranked(result.results), getattr(result, "doses", {}) or {})


def compact_table(rows: pd.DataFrame) -> pd.DataFrame:
    """The key columns a reader compares, one configuration per row."""
    out = pd.DataFrame({"configuration": [f"L{int(r.layer)} {r.kind} {r.method}" for r in rows.itertuples()]})
    for column in COMPACT_LABELS:
        if column == "ci" and {"item_slope_lo", "item_slope_hi"} <= set(rows.columns):
            out["ci"] = [
                f"[{format_cell(float(lo))}, {format_cell(float(hi))}]" for lo, hi in zip(rows["item_slope_lo"], rows["item_slope_hi"])
            ]
        elif column in rows and column != "configuration":
            out[column] = rows[column].to_numpy()
    for column in BUDGET_LABELS:
        if column in rows and rows[column].notna().any():
            out[column] = rows[column].to_numpy()
    return out


def summary_markdown(result: Any, top: int = 20) -> str:
    table = inferred(result)
    failed = result.results[result.results["error"].notna()] if "error" in result.results else result.results.iloc[:0]
    best_sep = result.separation.sort_values("auroc", ascending=False).groupby("kind", sort=False).head(1)
    validation = predictor_validation(result.results)
    compact = compact_table(table.head(top))
    parts = [
        "# Steerability sweep",
        "",
        *(f"- {line}" for line in answer_lines(result, table, validation[1] if validation else None, MIN_CONFIGS_TO_VALIDATE)),
        "",
        f"{len(table)} configurations scored ({len(failed)} failed), ranked by item_slope on test items.",
        "",
        markdown_table(compact.rename(columns=COMPACT_LABELS | BUDGET_LABELS)),
        "",
        "## Every column",
        "",
        SELECTION_RULE,
        "",
        METRICS_NOTE,
        "",
        markdown_table(table.head(top), SUMMARY_COLUMNS),
        "",
        "## Most separable layer per sublayer kind (cross-validated; _null: randomly initialised copy)",
        "",
        markdown_table(best_sep, ["kind", "layer", "auroc", "auroc_null", "auroc_margin", "probe_acc", "probe_acc_null", "cohens_d"]),
    ]
    if validation is not None:
        parts += [
            "",
            "## Do the cheap predictors rank configurations like the measured slope?",
            "",
            "Spearman ρ between each predictor (validation items, no dosing) and item_slope (test items) across the "
            "configurations above, with a 95 % bootstrap interval over configurations (analysis.predict).",
            "",
            markdown_table(validation[1], ["predictor", "n_configs", "spearman", "ci_lo", "ci_hi"]),
        ]
    if len(failed):
        parts += ["", "## Failed configurations", "", markdown_table(failed, ["layer", "kind", "method", "error"])]
    return "\n".join(parts) + "\n"


def dose_names(table: pd.DataFrame, top: int = 5) -> list[str]:
    """The dose curves the report draws: the ``top`` configurations, then the random direction at the best place."""
    if not len(table):
        return []
    names = [config_name(r.layer, r.kind, r.method) for r in table.head(top).itertuples()]
    best = table.iloc[0]
    return [*names, config_name(best.layer, best.kind, "null")]


def sweep_figures(result: Any, top: int = 5) -> dict[str, Any]:
    """The report's figures by file stem."""
    table = ranked(result.results)
    figures: dict[str, Any] = {}
    if len(table):
        adjusted = inferred(result)  # grey, not coloured, where the Holm-adjusted p is not below 0.05
        figures["steerability_score"] = plots.steerability_heatmap(adjusted, "item_slope" if "item_slope" in table else "score")
        figures["steerability_gain"] = plots.steerability_heatmap(adjusted, "normalized_gain")
        curves = {
            name.replace("_", " ", 2).replace(" null", " random (null)"): result.doses[name]
            for name in dose_names(table, top)
            if name in result.doses
        }
        if curves:
            figures["dose_response_top"] = plots.dose_curves(curves)
    figures["separation_auroc"] = plots.separation_by_layer(result.separation, "auroc")
    validation = predictor_validation(result.results)
    if validation is not None:
        figures["predictors"] = plots.predictor_scatter(*validation)
    if result.cosines is not None and len(result.cosines) and result.cosines["method_a"].nunique() > 1:
        figures["direction_cosines"] = plots.cosine_heatmap(result.cosines)
    return figures


def write_report(result: Any, formats: Sequence[str] = ("html", "png", "svg")) -> Path:
    """Write ``summary.md``, ``summary.tex``, ``report.html`` and ``figures/`` into ``result.out``."""
    out = Path(result.out)
    write_atomic(out / "summary.md", summary_markdown(result))
    top = inferred(result).head(20)
    write_table(  # the key columns under readable names; results.csv holds every column
        out / "summary",
        top,
        None,
        "Steerability sweep on test items, ranked by the mean item slope (p (Holm): adjusted for the configurations compared).",
        formats=("tex",),
        newline=False,
        shown=compact_table(top).rename(columns=COMPACT_LABELS | BUDGET_LABELS),
    )
    figures = sweep_figures(result)
    plots.save_figures({out / "figures" / stem: figure for stem, figure in figures.items()}, formats)
    table = inferred(result)
    validation = predictor_validation(result.results)
    page = Page("Steerability sweep", run_description(out, len(table)))
    page.add_answer(answer_lines(result, table, validation[1] if validation else None, MIN_CONFIGS_TO_VALIDATE))
    page.add_heading("Ranked configurations")
    page.add_table(
        f"The {min(10, len(table))} with the largest mean item slope (of {len(table)})",
        compact_table(table.head(10)),
        caption=SELECTION_RULE,
        full=table.drop(columns=[c for c in ("error",) if c in table]),
        csv=RESULTS,
        labels=COMPACT_LABELS | BUDGET_LABELS,
        notes=COLUMN_NOTES,
    )
    page.add_heading("Figures")
    captions = figure_captions(result, table, validation[1] if validation else None, [n for n in dose_names(table) if n in result.doses])
    for stem, figure in figures.items():
        files = [f"figures/{stem}.{ext}" for ext in ("png", "svg", "pdf", "html") if (out / "figures" / f"{stem}.{ext}").exists()]
        page.add_figure(figure, captions.get(stem, ""), files)
    page.add_heading("How the numbers are defined")
    page.add_note(METRICS_NOTE)
    return page.write(out / "report.html", out / "figures" / "plotly.min.js")


def run_description(out: Path, n_rows: int) -> str:
    """Model, concept and size of the run, from its ``config.json``."""
    try:
        config = read_config(out)
    except (OSError, ValueError):
        return f"{n_rows} configurations"
    model = Path(str(config.get("model") or "model")).name
    concept = config.get("concept")
    return f"{model}" + (f", concept {concept}" if concept else "") + f"; {n_rows} configurations scored on test items; folder {out.name}"
