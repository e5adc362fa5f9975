"""Table 1 of the paper: every main method at a matched cost, with the dilemma as the unit.

Computed from the run folder's dose tables (``doses/``) and ``runs.csv``, on test items:

- **at the budget** (when the run was made with ``cost_budget``; `analysis.measures.matched_cost`):
  ``coeff_at_budget`` (c*, mean over seeds), ``kl_at_budget`` (its KL on held-out neutral
  text), ``effect_at_budget`` (per dilemma half the readout change from −c* to +c*, averaged
  over the seeds, then over the dilemmas kept in every seed) with its dilemma-level 95 %
  interval (``effect_at_budget_lo``/``_hi``) and t-test ``p_at_budget``, and the seed spread
  as its own column (``seed_sd_at_budget``; `analysis.measures.precision.seed_summary`);
- **paired between methods** on the same test dilemmas (at the budget when there is one, else
  per unit c): ``vs_prompting`` and ``vs_best_direction`` (the PCA, mean_diff or S-space row
  with the largest effect), each the mean per-dilemma difference with its interval and paired p;
- **per unit c** (c = ±1): ``effect`` with ``effect_lo``/``_hi``, ``p_value`` (dilemma level,
  seeds pooled the same way) and ``seed_sd``;
- per run, averaged over seeds: ``valid_frac``, ``kept_frac``, ``side_effects`` with its
  label-permutation null (``side_effects_null_q95``; ``side_effects_beats_null`` is the share
  of seeds where the side effects beat it), ``delta_nll``, ``kl_at_1`` (KL at c = ±1, the
  persona placed on the text for prompting), ``control_drift``, ``parameters``, ``train_s``.

Example:
    table = table1(Path("runs/paper"), read_runs(Path("runs/paper")), "honesty")
    shown_table1(table)                      # the key columns under readable names (Markdown, LaTeX)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..measures.matched_cost import budget_slopes
from ..measures.metrics import dilemma_slopes
from ..measures.precision import best_of, paired_difference, seed_summary, signed_for
from ..studies.layout import DOSES, job_file, target_labels
from .sweep_answer import num, p_text

DIRECTION_PREFIXES = ("PCA", "mean_diff", "S-space")  # the direction baselines "the best direction" is chosen among (not the random null)
PER_RUN = (
    "coeff_at_budget",
    "kl_at_budget",
    "valid_frac",
    "kept_frac",
    "side_effects",
    "side_effects_null_q95",
    "side_effects_beats_null",
    "delta_nll",
    "kl_at_1",
    "control_drift",
)
PAIRED = ("vs_prompting", "vs_best_direction")
TABLE1_COLUMNS = [
    "method",
    "seeds",
    "n_dilemmas",
    "coeff_at_budget",
    "budget_reached",
    "kl_at_budget",
    "effect_at_budget",
    "effect_at_budget_lo",
    "effect_at_budget_hi",
    "p_at_budget",
    "seed_sd_at_budget",
    *(f"{name}{end}" for name in PAIRED for end in ("", "_lo", "_hi", "_p")),
    "best_direction",
    "paired_at",
    "effect",
    "effect_lo",
    "effect_hi",
    "p_value",
    "seed_sd",
    *PER_RUN[2:],
    "parameters",
    "train_s",
]


def method_slopes(run: Path, group: pd.DataFrame, labels: dict[str, int]) -> tuple[list[pd.Series], list[pd.Series]]:
    """Per seed of one main method: its per-dilemma slope per unit c (c = −1, 0, +1) and, where the run has a
    coefficient at the budget, its per-dilemma change at the budget (both target-signed)."""
    unit, budget = [], []
    for row in group.itertuples():
        path = job_file(run, DOSES, "main", row.method, row.seed)
        if not path.exists():
            continue
        part = signed_for(pd.read_csv(path), labels)
        unit.append(dilemma_slopes(part[part["coeff"].isin((-1.0, 0.0, 1.0))]))
        coeff = getattr(row, "coeff_at_budget", np.nan)
        if coeff is not None and np.isfinite(float(coeff)):
            budget.append(budget_slopes(part, float(coeff)))
    return unit, budget


def summary_of(slopes: list[pd.Series], prefix: str, suffix: str = "") -> dict[str, float]:
    """`seed_summary` of one method's per-seed slopes under Table 1's column names (NaN without slopes)."""
    names = {"effect": prefix, "dilemma_slope_lo": f"{prefix}_lo", "dilemma_slope_hi": f"{prefix}_hi", "seed_sd": f"seed_sd{suffix}"}
    names["dilemma_p"] = "p_at_budget" if suffix else "p_value"
    if not slopes or all(s.empty for s in slopes):
        return dict.fromkeys(names.values(), np.nan)
    summary = seed_summary(slopes)
    return {name: summary[key] for key, name in names.items()} | ({"n_dilemmas": summary["n_dilemmas"]} if not suffix else {})


def table1(run: Path, rows: pd.DataFrame, target: str) -> pd.DataFrame:
    """One row per main method (see the module docstring); empty when no main run finished."""
    main = rows[rows["study"] == "main"]
    if main.empty:
        return pd.DataFrame(columns=TABLE1_COLUMNS)
    labels = target_labels(run, target)
    out, unit_runs, budget_runs = [], {}, {}
    for method, group in main.groupby("method", sort=False):
        unit, budget = method_slopes(run, group, labels)
        row: dict[str, Any] = {"method": method, "seeds": len(group)}
        row |= summary_of(unit, "effect")
        at_budget = len(budget) == len(group) and len(budget) > 0
        row |= summary_of(budget if at_budget else [], "effect_at_budget", "_at_budget")
        for key in PER_RUN:
            values = pd.to_numeric(group[key], errors="coerce") if key in group else pd.Series(dtype=float)
            row[key] = float(values.mean()) if values.notna().any() else np.nan
        reached = group["budget_reached"] if "budget_reached" in group else pd.Series(dtype=object)
        row["budget_reached"] = bool(reached.astype(str).str.lower().eq("true").all()) if reached.notna().any() else pd.NA
        row["parameters"] = int(group["parameters"].iloc[0]) if "parameters" in group and group["parameters"].notna().any() else 0
        row["train_s"] = float(group["train_s"].mean()) if "train_s" in group and group["train_s"].notna().any() else 0.0
        out.append(row)
        unit_runs[method] = unit
        if at_budget:
            budget_runs[method] = budget
    table = pd.DataFrame(out)
    every_at_budget = len(budget_runs) == len(table)  # pair at the budget only when every method has one
    paired_runs = {m: r for m, r in (budget_runs if every_at_budget else unit_runs).items() if r and not all(s.empty for s in r)}
    table["paired_at"] = "budget" if every_at_budget else "c = ±1"
    directions = [m for m in paired_runs if str(m).startswith(DIRECTION_PREFIXES)]
    best = best_of(paired_runs, directions) if directions else None
    table["best_direction"] = best
    for name, baseline in (("vs_prompting", "prompting"), ("vs_best_direction", best)):
        results = [
            paired_difference(paired_runs[m], paired_runs[baseline])
            if baseline in paired_runs and m in paired_runs and m != baseline
            else {}
            for m in table["method"]
        ]
        for key, end in (("difference", ""), ("difference_lo", "_lo"), ("difference_hi", "_hi"), ("p", "_p")):
            table[f"{name}{end}"] = [r.get(key, np.nan) for r in results]
    return table.reindex(columns=TABLE1_COLUMNS)


def is_true(value: Any) -> bool:
    """A flag as read back from a CSV: True, numpy's True or the text "True"; anything else (NA too) is False."""
    return (isinstance(value, (bool, np.bool_)) and bool(value)) or str(value).lower() == "true"


def interval(mean: Any, lo: Any, hi: Any) -> str:
    """``mean [lo, hi]`` (just the mean where the interval is missing)."""
    if mean is None or not np.isfinite(float(mean)):
        return "–"
    if lo is None or not np.isfinite(float(lo)):
        return num(mean)
    return f"{num(mean)} [{num(lo)}, {num(hi)}]"


def difference(mean: Any, p: Any) -> str:
    return "–" if mean is None or not np.isfinite(float(mean)) else f"{num(mean)} (p {p_text(p)})"


def shown_table1(table: pd.DataFrame) -> pd.DataFrame:
    """Table 1 as the paper shows it (Markdown, LaTeX): at the budget first, then per unit c; ``table1.csv``
    keeps every column."""
    get = lambda column: table[column] if column in table else pd.Series(np.nan, index=table.index)  # noqa: E731
    budget = table["paired_at"].eq("budget").any() if "paired_at" in table else False
    out = pd.DataFrame({"method": table["method"], "seeds": get("seeds").astype("Int64")})
    if budget:
        out["c at budget"] = [
            num(c) + ("" if is_true(reached) else "*") for c, reached in zip(get("coeff_at_budget"), get("budget_reached"))
        ]
        out["KL"] = [num(v) for v in get("kl_at_budget")]
        out["effect at budget [95 % CI]"] = [
            interval(*v) for v in zip(get("effect_at_budget"), get("effect_at_budget_lo"), get("effect_at_budget_hi"))
        ]
        out["p"] = [p_text(p) for p in get("p_at_budget")]
        out["seed SD"] = [num(v) for v in get("seed_sd_at_budget")]
    out["vs prompting"] = [difference(m, p) for m, p in zip(get("vs_prompting"), get("vs_prompting_p"))]
    out["vs best direction"] = [difference(m, p) for m, p in zip(get("vs_best_direction"), get("vs_best_direction_p"))]
    out["per unit c [95 % CI]"] = [interval(*v) for v in zip(get("effect"), get("effect_lo"), get("effect_hi"))]
    if not budget:
        out["p"] = [p_text(p) for p in get("p_value")]
        out["seed SD"] = [num(v) for v in get("seed_sd")]
    out["valid"] = [num(v) for v in get("valid_frac")]
    out["side effects (null q95)"] = [
        "–" if not np.isfinite(float(s)) else f"{num(s)} ({num(q)})" for s, q in zip(get("side_effects"), get("side_effects_null_q95"))
    ]
    out["KL at c = ±1"] = [num(v) for v in get("kl_at_1")]
    out["parameters"] = get("parameters").astype("Int64")
    return out


def table1_caption(target: str, budget: Any, table: pd.DataFrame) -> str:
    """The caption: what each number is, the budget and the unit."""
    dilemmas = table["n_dilemmas"].dropna() if "n_dilemmas" in table else pd.Series(dtype=float)
    units = f"{int(dilemmas.max())} test dilemmas" if len(dilemmas) else "the test dilemmas"
    best = table["best_direction"].dropna() if "best_direction" in table else pd.Series(dtype=object)
    at_budget = "paired_at" in table and table["paired_at"].eq("budget").any()
    head = (
        f"Steering {target} at a matched cost: each method at the coefficient c* where its mean KL on neutral text reaches "
        f"{num(budget)} nats/token (c* found on half the neutral paragraphs, KL reported on the other half; * = the budget was "
        "not reached: a prompt has no dose and is shown at its own cost, an intervention still under it at the largest c tried "
        "is shown there). Effect at budget = half the readout change from −c* to +c* (nats)"
        if at_budget
        else f"Steering {target} per unit c (the run has no cost budget). Effect = half the readout change from c = −1 to +1 (nats)"
    )
    return (
        f"{head}, mean over {units} with the dilemma as the unit (95 % t-interval and p; seeds averaged per dilemma, "
        "their spread in its own column). vs prompting / vs best direction: paired difference over the same dilemmas"
        + (f" (best direction: {best.iloc[0]})" if len(best) else "")
        + ". valid: share of valid (item, c) rows; side effects: mean |effect| on the other values with the 95th percentile of "
        "its label-permutation null."
    )
