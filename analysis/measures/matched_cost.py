"""Methods compared at the same cost: each intervention's coefficient c* where it costs a KL budget.

A coefficient means something different for every method (one median pair gap for a
direction, a point of the Cayley map for InnerPiSSA, a linear scale for LoRA, a sign
for prompting), so "the effect at c = 1" compares unlike doses. Here the cost is the
mean per-token KL(unsteered ‖ steered) on neutral paragraphs (`steering.calibrate.neutral_kl`;
a prompt's persona is placed before each paragraph, so prompting is not free):

1. c* is found on the *calibration* half of the shipped neutral paragraphs (even
   positions; `steering.calibrate.match_cost`): the c where the mean KL over ±c reaches
   the budget. A prompt has no dose (c* = 1, its own cost); an intervention that stays
   under the budget at ``max_coeff`` is judged there (``budget_reached`` false).
2. The cost it actually has is reported on the *held-out* half (odd positions):
   ``kl_at_budget`` at ±c*, and ``kl_at_1`` at c = ±1 (what the Pareto figure draws).
3. The effect at the budget, ``effect_at_budget``, is per dilemma half the change of
   the target-signed readout from −c* to +c* (the least-squares slope over
   {−c*, 0, +c*} times c*), averaged over dilemmas, with its dilemma-level 95 %
   t-interval (``effect_at_budget_lo``, ``_hi``) and one-sample t-test ``p_at_budget``
   (`effect_at`).

Example:
    match, costs = match_and_cost(model, adapter, budget=0.05)
    dose = dose_response(model, adapter, items, (-match.coeff, -1, 0, 1, match.coeff))
    effect_at(target_part(dose, items, "honesty"), match.coeff)["effect_at_budget"]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from steering.calibrate import CostMatch, kl_measure, match_cost

from ..readouts.sets import neutral_texts
from .metrics import dilemma_slopes, t_summary

DEFAULT_BUDGET = 0.05  # nats per token of mean KL on neutral paragraphs
MATCHED = (
    "coeff_at_budget",
    "budget_reached",
    "kl_at_budget",
    "kl_at_1",
    "effect_at_budget",
    "effect_at_budget_lo",
    "effect_at_budget_hi",
    "p_at_budget",
)


def cost_texts() -> tuple[list[str], list[str]]:
    """The shipped neutral paragraphs split in two: (calibration: even positions, held out: odd positions)."""
    texts = neutral_texts()
    return texts[0::2], texts[1::2]


def match_and_cost(
    model: Any, intervention: Any, budget: float = DEFAULT_BUDGET, max_coeff: float = 64.0
) -> tuple[CostMatch, dict[str, Any]]:
    """c* on the calibration paragraphs, then the held-out paragraphs' KL at ±c* and at ±1 (see the module
    docstring); returns the match and ``{coeff_at_budget, budget_reached, kl_at_budget, kl_at_1}``."""
    calibration, held_out = cost_texts()
    match = match_cost(model, intervention, budget, calibration, max_coeff=max_coeff)
    kls = kl_measure(model, intervention, held_out)([-match.coeff, match.coeff, -1.0, 1.0])
    return match, {
        "coeff_at_budget": match.coeff,
        "budget_reached": bool(match.reached),
        "kl_at_budget": (kls[0] + kls[1]) / 2,
        "kl_at_1": (kls[2] + kls[3]) / 2,
    }


def at_coeff(df: pd.DataFrame, coeff: float) -> pd.DataFrame:
    """The rows of a dose table at −coeff, 0 and +coeff (compared with a tolerance: c* is read back from CSV)."""
    c = df["coeff"].to_numpy(dtype=float)
    keep = np.isclose(c, 0.0) | np.isclose(np.abs(c), abs(coeff), rtol=1e-9, atol=0.0)
    return df[keep]


def budget_slopes(df: pd.DataFrame, coeff: float) -> pd.Series:
    """Per dilemma, the change of the signed readout at the budget: its slope over {−c*, 0, +c*} times c*."""
    part = at_coeff(df, coeff)
    if part["coeff"].nunique() < 2:
        return pd.Series(dtype=float, name="slope")
    return (dilemma_slopes(part) * float(coeff)).rename("slope")


def effect_at(df: pd.DataFrame, coeff: float, confidence: float = 0.95) -> dict[str, float]:
    """``effect_at_budget`` with its dilemma-level interval and p, from a target-signed dose table holding the
    rows at ±``coeff`` and 0 (each dilemma: the mean of its kept items; see `metrics.dilemma_slopes`)."""
    summary = t_summary(budget_slopes(df, coeff), confidence)
    return {
        "effect_at_budget": summary["mean"],
        "effect_at_budget_lo": summary["lo"],
        "effect_at_budget_hi": summary["hi"],
        "p_at_budget": summary["p"],
    }


def with_budget_coeffs(coeffs: Sequence[float], coeff: float) -> list[float]:
    """``coeffs`` with ±``coeff`` added (once), sorted."""
    return sorted({float(c) for c in coeffs} | {float(coeff), -float(coeff)})
