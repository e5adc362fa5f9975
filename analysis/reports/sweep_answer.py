"""What a sweep found, in sentences written from its own numbers: the answer at the top of ``summary.md``
and ``report.html``, and each figure's caption.

Two statistics are added to the ranked rows here:

- ``p_holm``: the item-level p-value adjusted (Holm) for the number of configurations compared, i.e. every
  scored row with a p-value;
- ``vs_null``, ``vs_null_p``, ``vs_null_p_holm``: the mean over test items of (the configuration's item
  slope − the item slope of the random direction at the same (layer, kind)), a paired t-test over the items
  both scored, and its Holm adjustment. A configuration *beats its null* when ``vs_null > 0`` and
  ``vs_null_p_holm < 0.05``.

Example:
    rows = with_inference(ranked(result.results), result.doses)
    answer_lines(result, rows)[0]
    # 'Best: L12 o mean_diff moves the readout by 0.31 nats per unit c [0.12, 0.50], p = 0.002 (Holm 0.04) ...'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from ..measures.metrics import balanced, item_slopes, paired_changes
from ..studies.layout import config_name

ALPHA = 0.05


def holm(p_values: Any) -> np.ndarray:
    """Holm's step-down adjustment of ``p_values`` (NaN stays NaN and does not count as a comparison)."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full_like(p, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    order = finite[np.argsort(p[finite], kind="stable")]
    m = len(order)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted


def slopes_by_item(dose: pd.DataFrame) -> pd.Series:
    wide = balanced(dose)
    return pd.Series(item_slopes(wide), index=wide.index) if len(wide) and wide.shape[1] >= 2 else pd.Series(dtype=float)


def versus_null(dose: pd.DataFrame, null: pd.DataFrame) -> tuple[float, float]:
    """(mean over shared items of the item-slope difference, paired t-test p), NaN with fewer than 2 items."""
    mine, theirs = slopes_by_item(dose), slopes_by_item(null)
    shared = mine.index.intersection(theirs.index)
    if len(shared) < 2:
        return float("nan"), float("nan")
    difference = mine[shared] - theirs[shared]
    if float(difference.std(ddof=1)) == 0.0:
        return float(difference.mean()), float("nan")
    return float(difference.mean()), float(stats.ttest_rel(mine[shared], theirs[shared]).pvalue)


def with_inference(rows: pd.DataFrame, doses: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """``rows`` (scored configurations) with ``p_holm`` and the paired comparison with their null."""
    out = rows.copy()
    if "p_value" in out:
        out["p_holm"] = holm(out["p_value"])
    differences, p_values = [], []
    for row in out.itertuples():
        dose, null = doses.get(config_name(row.layer, row.kind, row.method)), doses.get(config_name(row.layer, row.kind, "null"))
        difference, p = versus_null(dose, null) if dose is not None and null is not None else (float("nan"), float("nan"))
        differences.append(difference)
        p_values.append(p)
    out["vs_null"], out["vs_null_p"] = differences, p_values
    out["vs_null_p_holm"] = holm(out["vs_null_p"])
    return out


def place(row: Any) -> str:
    return f"L{int(row.layer)} {row.kind} {row.method}"


def num(value: Any, digits: int = 2) -> str:
    """A number for a sentence: 2 significant digits (p-values below 0.001 as '< 0.001')."""
    if value is None or not np.isfinite(float(value)):
        return "n/a"
    return f"{float(value):.{digits}g}"


def p_text(value: Any) -> str:
    return "n/a" if value is None or not np.isfinite(float(value)) else ("< 0.001" if value < 0.001 else f"{value:.2g}")


def significant(rows: pd.DataFrame, column: str) -> pd.DataFrame:
    if column not in rows or "item_slope" not in rows:
        return rows.iloc[:0]
    return rows[(rows[column] < ALPHA) & (rows["item_slope"] > 0)]


def beats_null(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[(rows["vs_null_p_holm"] < ALPHA) & (rows["vs_null"] > 0)] if "vs_null" in rows else rows.iloc[:0]


def best_line(row: Any) -> str:
    """One configuration's effect, interval, p, null and cost; columns a table lacks (older sweeps) read n/a."""
    get = lambda name: getattr(row, name, float("nan"))  # noqa: E731
    text = (
        f"{place(row)}: {num(get('item_slope'))} nats per unit c [95 % CI {num(get('item_slope_lo'))}, {num(get('item_slope_hi'))}], "
        f"p = {p_text(get('p_value'))} (Holm {p_text(get('p_holm'))})"
    )
    if np.isfinite(get("null_item_slope")):
        text += (
            f"; its random direction {num(get('null_item_slope'))} (p = {p_text(get('null_p_value'))}), "
            f"difference {num(get('vs_null'))} (paired p = {p_text(get('vs_null_p'))})"
        )
    return text + f"; cost ΔNLL {num(get('delta_nll'))} nats/token at c = ±1."


def predictor_line(validation: pd.DataFrame | None, n_rows: int, minimum: int) -> str:
    if validation is None:
        return f"Predictors not checked: {n_rows} configurations, fewer than the {minimum} a rank correlation needs."
    shown = validation.dropna(subset=["spearman"])
    if shown.empty:
        return "Predictors: no rank correlation could be computed (constant values)."
    parts = [f"{r.predictor} ρ = {r.spearman:.2f} [{r.ci_lo:.2f}, {r.ci_hi:.2f}]" for r in shown.itertuples()]
    n = int(shown["n_configs"].max())
    above, below = shown[shown["ci_lo"] > 0]["predictor"].tolist(), shown[shown["ci_hi"] < 0]["predictor"].tolist()
    verdicts = [f"{', '.join(above)} rank{'s' if len(above) == 1 else ''} them better than chance (interval above 0)"] if above else []
    verdicts += [f"{', '.join(below)} rank{'s' if len(below) == 1 else ''} them in reverse (interval below 0)"] if below else []
    verdict = "; ".join(verdicts) or "no predictor's interval excludes 0, so none can yet stand in for dosing"
    return (
        f"How the cheap predictors (validation items) rank the {n} configurations against the measured slope: "
        + "; ".join(parts)
        + f"; {verdict}."
    )


def answer_lines(result: Any, rows: pd.DataFrame, validation: pd.DataFrame | None, minimum: int, top: int = 3) -> list[str]:
    """The summary a reader needs first, one sentence per line."""
    if rows.empty:
        return ["No configuration was scored (every one failed); see the failed configurations below."]
    n = len(rows)
    raw, corrected, beat = significant(rows, "p_value"), significant(rows, "p_holm"), beats_null(rows)
    lines = [f"Best of {n}: " + best_line(row) for row in rows.head(1).itertuples()]
    lines += ["Next: " + best_line(row) for row in rows.iloc[1:top].itertuples()]
    lines.append(
        f"{len(raw)} of {n} configurations move the readout towards the concept at p < {ALPHA:g}; "
        f"{len(corrected)} after Holm's correction for the {n} compared; "
        f"{len(beat)} beat their random direction (paired over items, Holm p < {ALPHA:g})."
    )
    if len(corrected) == 0:
        lines.append(
            "So this sweep finds no configuration that reliably steers at this dose: read the ranking as a list of "
            "candidates, not a result."
        )
    lines.append(predictor_line(validation, n, minimum))
    separation = result.separation
    if separation is not None and len(separation) and "auroc" in separation:
        top_sep = separation.sort_values("auroc", ascending=False).iloc[0]
        null = f" (randomly initialised copy: {num(top_sep['auroc_null'])})" if "auroc_null" in separation else ""
        lines.append(
            f"Most separable: L{int(top_sep['layer'])} {top_sep['kind']}, AUROC {num(top_sep['auroc'])}{null}; "
            "separation alone chose nothing here."
        )
    return lines


def dose_at(dose: pd.DataFrame | None, c: float) -> tuple[float, float, float] | None:
    """(mean, lo, hi) of the change from c = 0 at ``c`` over items, or None."""
    if dose is None:
        return None
    try:
        change = paired_changes(dose).set_index("coeff")
    except ValueError:
        return None
    if c not in change.index:
        return None
    return float(change.loc[c, "mean"]), float(change.loc[c, "lo"]), float(change.loc[c, "hi"])


def figure_captions(result: Any, rows: pd.DataFrame, validation: pd.DataFrame | None, shown: list[str]) -> dict[str, str]:
    """A caption per figure stem of `analysis.reports.sweep_report.sweep_figures`, quoting this run's numbers."""
    captions: dict[str, str] = {}
    if len(rows) and "item_slope" in rows:
        best = rows.iloc[0]
        ns = int((~(rows["p_value"] < ALPHA)).sum()) if "p_value" in rows else 0
        captions["steerability_score"] = (
            "Mean item slope (nats of readout per unit c, test items) per layer (x) and sublayer (y), one panel per method; "
            + ("blue moves the readout towards the concept, red away. " if (rows["item_slope"] < 0).any() else "brighter is larger. ")
            + f"Largest: {place(best)}, {num(best.item_slope)}. "
            f"{ns} of {len(rows)} dosed cells are marked n.s. (item-level p ≥ {ALPHA:g}); blank cells were not dosed "
            "(stage 2 doses the predicted best places and a layer profile)."
        )
    if len(rows) and "normalized_gain" in rows and rows["normalized_gain"].notna().any():
        top = rows.sort_values("normalized_gain", ascending=False).iloc[0]
        captions["steerability_gain"] = (
            "Normalized gain, 100 · effect · max(0, ρ) / (1 + max(0, ΔNLL)): the effect discounted by how much it "
            f"costs on neutral text. Highest: {place(top)}, {num(top.normalized_gain)} (effect {num(top.effect)}, "
            f"ΔNLL {num(top.delta_nll)})."
        )
    if shown:
        best = rows.iloc[0]
        at_one = dose_at(result.doses.get(shown[0]), 1.0)
        null_at_one = dose_at(result.doses.get(config_name(best.layer, best.kind, "null")), 1.0)
        numbers = ""
        if at_one:
            numbers += (
                f" At c = +1 the best ({place(best)}) changes the readout by {num(at_one[0])} nats [{num(at_one[1])}, {num(at_one[2])}]"
            )
            numbers += (
                f"; the random direction there by {num(null_at_one[0])} [{num(null_at_one[1])}, {num(null_at_one[2])}]."
                if null_at_one
                else "."
            )
        n_items = int(best.n_items) if "n_items" in rows and np.isfinite(best.n_items) else None
        over = f" over {n_items} test items" if n_items else " over test items"
        captions["dose_response_top"] = (
            f"Change of each item's readout from c = 0, mean and 95 % CI{over}, for the "
            f"{sum(not name.endswith('_null') for name in shown)} best configurations"
            + (" and a random direction of the same norm at the best place" if shown[-1].endswith("_null") else "")
            + "; dotted lines: ΔNLL on neutral text (right axis). "
            "A line whose band leaves zero steers; a band like the random direction's does not." + numbers
        )
    separation = result.separation
    if separation is not None and len(separation) and "auroc" in separation:
        top_sep = separation.sort_values("auroc", ascending=False).iloc[0]
        null = ""
        if "auroc_null" in separation:
            null = (
                f" (the randomly initialised copy: {num(top_sep['auroc_null'])}; it reaches {num(separation['auroc_null'].max())} "
                "somewhere)"
            )
        captions["separation_auroc"] = (
            "Cross-validated AUROC of positive against negative pair states per layer, one line per sublayer; dotted: the "
            f"same for a randomly initialised copy of the model. Highest: L{int(top_sep['layer'])} {top_sep['kind']}, "
            f"{num(top_sep['auroc'])}{null}. Separation is necessary, not sufficient: it chooses nothing here."
        )
    if validation is not None:
        captions["predictors"] = (
            "One point per configuration: each cheap predictor, computed on validation items without dosing, against the "
            "measured item slope on test items; Spearman ρ with a 95 % bootstrap interval over configurations in each "
            "panel's title. " + predictor_line(validation, len(rows), 0)
        )
    cosines = getattr(result, "cosines", None)
    if cosines is not None and len(cosines) and cosines["method_a"].nunique() > 1:
        pairs = cosines[cosines["method_a"] < cosines["method_b"]].groupby(["method_a", "method_b"])["cosine"].mean()
        quoted = "; ".join(f"{a} vs {b}: {num(v)}" for (a, b), v in pairs.items())
        captions["direction_cosines"] = (
            "Cosine between the methods' directions (sign-calibrated), averaged over the dosed places; 1 = the same "
            f"direction, 0 = unrelated. {quoted}."
        )
    return captions
