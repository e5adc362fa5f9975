"""``paper.html``: the experiment's answer, then Table 1, Table 2 and the transfer table, then the figures,
each with a caption from the run's numbers. Written by `analysis.reports.paper.write_paper` after its tables
(read back from their CSVs, so the page shows exactly what the files hold).

Example:
    write_paper_page(Path("runs/paper"), Path("runs/paper"), {Path("runs/paper/pareto"): fig})
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ..studies.layout import read_config
from .paper_table1 import is_true, shown_table1, table1_caption
from .report_page import Page
from .sweep_answer import ALPHA, num, p_text

NOTES = {
    "c at budget": "the coefficient c* where the method's mean KL on neutral text reaches the run's budget (* = not reached)",
    "KL": "mean KL(unsteered ‖ steered) per token on held-out neutral paragraphs at ±c* (nats)",
    "effect at budget [95 % CI]": "half the change of the target's signed readout from −c* to +c* (nats), mean over test dilemmas",
    "p": "one-sample t-test over test dilemmas (seeds averaged per dilemma)",
    "seed SD": "standard deviation over training seeds of each seed's mean effect (apart from the interval)",
    "vs prompting": "paired difference from prompting over the same test dilemmas, with its paired p",
    "vs best direction": "paired difference from the best direction baseline (PCA, mean_diff or S-space) over the same test dilemmas",
    "per unit c [95 % CI]": "(mean at c = +1 − mean at c = −1) / 2, dilemma-level interval",
    "valid": "share of (item, c) rows whose answer words keep P ≥ min_pmass",
    "side effects (null q95)": "mean |effect| on the other values, and the 95th percentile of its label-permutation null",
    "KL at c = ±1": "mean KL per token on held-out neutral text at c = ±1 (a prompt's persona placed on the text)",
    "effect": "(mean at c = +1 − mean at c = −1) / 2 of the target value's signed readout, test items; mean over seeds",
    "± SD": "standard deviation over seeds",
    "p (median)": "item-level p of the effect, median over seeds",
    "p (max)": "the largest item-level p over seeds",
    "side effects": "mean |effect| on the other values",
    "ΔNLL": "worst NLL increase on neutral text at c = ±1 (nats/token)",
    "drop vs full": "1 − effect / effect of the full InnerPiSSA",
}

# the paper's own names, in its order
FIGURE_LABELS = {
    "figure1_dose": "Figure 1",
    "figure2_depth": "Figure 2",
    "pareto": "Pareto",
    "transfer": "Transfer",
    "training_curves": "Training",
}


def read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path) if path.exists() and path.stat().st_size > 1 else pd.DataFrame()


def table_note(markdown: Path) -> str:
    """The note under a table in its markdown file (the text after the last table row)."""
    if not markdown.exists():
        return ""
    lines = markdown.read_text().strip().splitlines()
    tail = [line for line in lines[next((i for i in range(len(lines) - 1, -1, -1) if lines[i].startswith("|")), len(lines)) + 1 :]]
    return " ".join(line.strip() for line in tail if line.strip())


def pm(mean: Any, sd: Any) -> str:
    return num(mean) + (f" ± {num(sd)}" if sd is not None and np.isfinite(float(sd)) else "")


def compact_methods(table: pd.DataFrame, extra: tuple[str, ...] = ()) -> pd.DataFrame:
    """method, seeds, effect ± SD, p (median, max), side effects, ΔNLL (+ ``extra`` columns as they are)."""
    get = lambda column: table[column] if column in table else pd.Series(np.nan, index=table.index)  # noqa: E731
    out = pd.DataFrame({"method": table["method"], "seeds": get("seeds").astype("Int64")})
    out["effect ± SD"] = [pm(m, s) for m, s in zip(get("effect"), get("effect_sd"))]
    for column in extra:
        out[column.replace("_", " ")] = get(column)
    out["p (median)"], out["p (max)"] = [p_text(p) for p in get("p_value")], [p_text(p) for p in get("p_value_max")]
    out["side effects"] = [pm(m, s) for m, s in zip(get("side_effects"), get("side_effects_sd"))]
    out["ΔNLL"] = [pm(m, s) for m, s in zip(get("delta_nll"), get("delta_nll_sd"))]
    return out


def is_null(method: str) -> bool:
    """The experiment's null control: a random direction at PCA's norm ("random (L5)")."""
    return str(method).startswith("random")


def method_line(row: Any, target: str) -> str:
    """One method in words: at the budget when the run has one (Table 1's columns), else per unit c; an
    ablation row (Table 2's columns: mean ± SD over seeds) as it is."""
    at_budget = np.isfinite(float(getattr(row, "effect_at_budget", np.nan)))
    if not at_budget and not hasattr(row, "effect_lo"):
        seeds = int(row.seeds) if np.isfinite(float(row.seeds)) else 1
        return (
            f"{row.method}: effect on {target} {pm(row.effect, getattr(row, 'effect_sd', np.nan))} nats per unit c "
            + (f"over {seeds} seeds, p {p_text(row.p_value)} (median); " if seeds > 1 else f"(one run), p {p_text(row.p_value)}; ")
            + f"side effects {num(getattr(row, 'side_effects', np.nan))}, ΔNLL {num(getattr(row, 'delta_nll', np.nan))}."
        )
    if at_budget:
        reached = "" if is_true(getattr(row, "budget_reached", True)) else " (budget not reached)"
        head = (
            f"{row.method}: at c* = {num(row.coeff_at_budget)}{reached}, KL {num(row.kl_at_budget)}, {target} moves "
            f"{num(row.effect_at_budget)} nats [{num(row.effect_at_budget_lo)}, {num(row.effect_at_budget_hi)}], p {p_text(row.p_at_budget)}"
        )
    else:
        head = f"{row.method}: {target} moves {num(row.effect)} nats per unit c [{num(row.effect_lo)}, {num(row.effect_hi)}], p {p_text(row.p_value)}"
    paired = [
        f"{name} {num(getattr(row, column))} (p {p_text(getattr(row, column + '_p'))})"
        for name, column in (("vs prompting", "vs_prompting"), ("vs the best direction", "vs_best_direction"))
        if np.isfinite(float(getattr(row, column, np.nan)))
    ]
    return head + (f"; {', '.join(paired)}" if paired else "") + f"; side effects {num(getattr(row, 'side_effects', np.nan))}."


def answer_lines(main: pd.DataFrame, ablation_note: str, transfer: pd.DataFrame, target: str) -> list[str]:
    """InnerPiSSA first, then the best baselines, then the null control; counts, the comparison, ablations, transfer."""
    if main.empty:
        return ["No finished main run in runs.csv yet."]
    at_budget = "effect_at_budget" in main and main["effect_at_budget"].notna().any()
    effect, p = ("effect_at_budget", "p_at_budget") if at_budget else ("effect", "p_value")
    nulls = main[main["method"].map(is_null)]
    baselines = main[~main["method"].map(is_null) & (main["method"] != "InnerPiSSA")].sort_values(effect, ascending=False)
    own = main[main["method"] == "InnerPiSSA"]
    lines = [method_line(row, target) for row in pd.concat([own, baselines.head(3 - len(own))]).itertuples()]
    lines += [f"Null control, {method_line(row, target)}" for row in nulls.itertuples()]
    reliable = main[(main[p] < ALPHA) & (main[effect] > 0)]
    where = "at the matched cost" if at_budget else "per unit c"
    lines.append(
        f"{len(reliable)} of {len(main)} methods move {target} towards the positive side {where} at dilemma-level p < {ALPHA:g}"
        + (f" ({', '.join(reliable['method'])})." if len(reliable) else "; none shows a reliable effect in this run.")
    )
    if ablation_note:
        lines.append("Ablations: " + ablation_note)
    if not transfer.empty and "InnerPiSSA" in transfer:
        others = transfer[transfer["value"] != target]
        if len(others):
            worst = others.loc[others["InnerPiSSA"].abs().idxmax()]
            lines.append(f"InnerPiSSA's largest change of another value: {worst['value']}, {num(worst['InnerPiSSA'])} nats per unit c.")
    return lines


def figure_caption(stem: str, figure: go.Figure, main: pd.DataFrame, target: str) -> str:
    best = main.sort_values("effect", ascending=False).iloc[0] if len(main) else None
    quoted = f" Largest effect: {best['method']}, {num(best['effect'])}." if best is not None else ""
    return {
        "figure1_dose": f"Change of the {target} readout from c = 0 against c, mean and 95 % CI over test items, one line per main "
        "method (first seed of trainable ones); dotted: ΔNLL on neutral text (right axis). A band that leaves zero steers." + quoted,
        "figure2_depth": f"InnerPiSSA adapted at one layer at a time ({len(figure.data[0].x) if figure.data else 0} depths): effect on {target} with SD over seeds. "
        "Where the bar clears its error bar, that depth carries the effect.",
        "pareto": "Each main method's effect per unit c against its cost at c = ±1 (mean KL on neutral text, a prompt's persona "
        "placed on the text); up and to the left is better, error bars are SD over seeds. Table 1 compares them at one cost." + quoted,
        "transfer": f"Effect of {target} steering on every value (rows) for each method (columns), nats per unit c: the target "
        "row should move, the others should not; * marks a cell that beats its label-permutation null in every seed.",
        "training_curves": "ReprPO training of InnerPiSSA (first seed): the loss and its parts per step (left) and what moved "
        "along the frozen direction at c = ±1 relative to c = 0, in typical pair gaps (right): the gap, and each pair's midpoint "
        "(what the default shift objective pushes).",
    }.get(stem, "")


def write_paper_page(run: Path, out: Path, figures: Mapping[Path, go.Figure]) -> Path:
    """Write ``out/paper.html`` from the tables already written into ``out`` and ``figures`` (by path stem)."""
    run, out = Path(run), Path(out)
    config = read_config(run, missing_ok=True)
    target = config.get("target", "honesty")
    main, ablations, transfer = (read_csv(out / f"{name}.csv") for name in ("table1", "table2", "transfer"))
    note = table_note(out / "table2.md")
    seeds = config.get("seeds") or []
    model = Path(str(config.get("model") or "")).name or "model"
    page = Page(f"Steering {target}: InnerPiSSA and its baselines", f"{model}; seeds {seeds}; test items only; folder {out.name}")
    missing = table_note(out / "table1.md")  # failed runs and runs without an effect, when there are any
    page.add_answer(answer_lines(main, note, transfer, target) + ([f"Missing: {missing}"] if missing else []))
    page.add_heading("Tables")
    if not main.empty:
        page.add_table(
            "Table 1. Main methods at a matched cost",
            shown_table1(main),
            caption=table1_caption(target, config.get("cost_budget"), main) + (f" {missing}" if missing else ""),
            full=main,
            csv="table1.csv",
            notes=NOTES,
        )
    if not ablations.empty:
        page.add_table(
            "Table 2. Ablations of InnerPiSSA",
            compact_methods(ablations, ("drop_vs_full",)),
            caption=note,
            full=ablations,
            csv="table2.csv",
            notes=NOTES,
        )
    if not transfer.empty:
        page.add_table(
            f"Transfer: the effect of {target} steering on every value (nats per unit c)",
            transfer,
            caption=f"Rows are values (n_items: test items labelled with it); the {target} row is the target.",
            csv="transfer.csv",
        )
    if figures:
        page.add_heading("Figures")
        shown = sorted(
            figures.items(), key=lambda item: list(FIGURE_LABELS).index(Path(item[0]).name) if Path(item[0]).name in FIGURE_LABELS else 99
        )
        for path, figure in shown:
            stem = Path(path).name
            files = [f"{stem}.{ext}" for ext in ("png", "svg", "pdf", "html") if (out / f"{stem}.{ext}").exists()]
            page.add_figure(figure, figure_caption(stem, figure, main, target), files, FIGURE_LABELS.get(stem, stem))
    return page.write(out / "paper.html")
