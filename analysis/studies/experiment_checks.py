"""Every option of the paper experiment checked before any work starts (the baselines take minutes).

Example:
    settings = checked_settings(ExperimentSettings(rank=0), model, layers, split)
    # ValueError: rank=0: the adapters' rank, a whole number of at least 1 (e.g. 16).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import replace
from typing import Any

import probes
import steering
from steering.adapters.reprpo import OBJECTIVES

from ..measures.dose import check_coeffs
from ..readouts.daily_dilemmas import check_value
from ..readouts.items import value_name
from ..readouts.split import Split
from .experiment_settings import ExperimentSettings

WHOLE = {
    "rank": ("the adapters' rank", 1, 16),
    "steps": ("training steps", 1, 16),
    "batch_pairs": ("pairs per training step", 1, 4),
    "batch_size": ("texts per forward pass", 1, 16),
    "generation_tokens": ("tokens of each greedy sample (0: none)", 0, 40),
}


def whole_number(value: Any, name: str, meaning: str, least: int, example: int) -> int:
    """``value`` as an int ≥ ``least`` (numpy integers too), or an error naming the option and a fix."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
        raise ValueError(f"{name}={value!r}: {meaning}, a whole number of at least {least} (e.g. {example}).")
    return int(value)


def checked_seeds(seeds: Any) -> list[int]:
    listed = [seeds] if isinstance(seeds, (int, float, str)) else list(seeds)
    if not listed or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) for s in listed):
        raise ValueError(f"seeds={seeds!r}: give whole-number training seeds, e.g. (0, 1, 2).")
    if len(set(listed)) != len(listed):
        raise ValueError(f"seeds={seeds!r}: a seed is repeated; each seed is one run, so give distinct seeds.")
    return [int(s) for s in listed]


def checked_settings(settings: ExperimentSettings, model: Any, layers: list[int], split: Split) -> ExperimentSettings:
    """A normalised copy of ``settings``, or a clear error for anything that would fail (or mean nothing) later:
    whole numbers, the learning rate, ``min_pmass``, the coefficients, a target carried by validation and test
    items, and kinds and rank the adapter can take (a trial InnerPiSSA attached to the model and detached)."""
    whole = {name: whole_number(getattr(settings, name), name, *WHOLE[name]) for name in WHOLE}
    if not isinstance(settings.lr, numbers.Real) or not math.isfinite(settings.lr) or settings.lr <= 0:
        raise ValueError(f"lr={settings.lr!r}: the learning rate must be a positive number (e.g. 3e-3).")
    if not isinstance(settings.min_pmass, numbers.Real) or not 0 <= settings.min_pmass <= 1:
        raise ValueError(
            f"min_pmass={settings.min_pmass!r}: the least P(positive)+P(negative) words for an item to count, between 0 and 1 (e.g. 0.1)."
        )
    if not isinstance(settings.val_fraction, numbers.Real) or not 0 <= settings.val_fraction < 1:
        raise ValueError(
            f"val_fraction={settings.val_fraction!r}: the share of training pairs held out to choose the training budget, "
            "at least 0 and below 1 (e.g. 0.25; 0 trains on every pair for every step)."
        )
    if settings.objective not in OBJECTIVES:
        raise ValueError(
            f"objective={settings.objective!r}: what ReprPO pushes along its frozen direction, 'shift' (each pair's midpoint, "
            "the default), 'gap' (the positive-negative gap) or 'both'."
        )
    if settings.patience is not None:
        whole_number(settings.patience, "patience", "steps without a better validation loss before stopping", 1, 4)
    if settings.cost_budget is not None and (
        isinstance(settings.cost_budget, bool)
        or not isinstance(settings.cost_budget, numbers.Real)
        or not math.isfinite(settings.cost_budget)
        or settings.cost_budget <= 0
    ):
        raise ValueError(
            f"cost_budget={settings.cost_budget!r}: the KL budget every main method is compared at, a positive number of "
            "nats per token of neutral text (e.g. 0.05), or None to compare at c = ±1 only."
        )
    if (
        isinstance(settings.cost_max_coeff, bool)
        or not isinstance(settings.cost_max_coeff, numbers.Real)
        or not 1 <= settings.cost_max_coeff < math.inf
    ):
        raise ValueError(
            f"cost_max_coeff={settings.cost_max_coeff!r}: the largest coefficient tried to reach the budget, a finite number ≥ 1 (e.g. 64)."
        )
    coeffs = check_coeffs(settings.coeffs)
    if not {-1.0, 0.0, 1.0} <= {float(c) for c in coeffs}:
        raise ValueError(f"coeffs={list(coeffs)} must include -1, 0 and +1 (the tables' effect is read there).")
    kinds = [settings.kinds] if isinstance(settings.kinds, str) else list(settings.kinds)
    if not kinds:
        raise ValueError("kinds=(): name the adapted sublayer kinds, e.g. ('o', 'down').")
    probes.pairs.prompting_personas(settings.concept)  # the prompting baseline's personas exist
    check_value(split.validation, settings.target, "the validation items (the baselines' layer is chosen on them)")
    check_value(split.test, settings.target, "the test items (every reported number is read on them)")
    trial = steering.attach_innerpissa(model, layers, kinds, whole["rank"])  # kinds without a weight, a rank too large
    trial.detach()
    return replace(settings, **whole, kinds=kinds, seeds=checked_seeds(settings.seeds), coeffs=coeffs, target=value_name(settings.target))
