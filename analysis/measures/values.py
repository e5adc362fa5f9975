"""Value profiles: how an intervention moves every value of value-labelled items, not just its target.

For each value V, the items labelled for it (+1 the action serves V, −1 it works
against it) are read with ``readout = label · logratio`` and summarised exactly as
`analysis.dose_metrics` does (items valid at every c, item-level inference). The
target value's row is the intended effect; ``side_effects`` is the mean |effect|
over the other values with at least ``min_items`` items (the notes' "mean |Δ| on
non-target values"). Because both actions of a dilemma are kept with opposite
labels, a plain shift towards "Yes" moves no value.

Example:
    profile = value_profile(dose, items, target="honesty")       # one row per value
    side_effects(profile)
    transfer_table({"InnerPiSSA": profile, "PCA": pca_profile})    # values × methods
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from ..readouts.items import ReadoutItem, value_name
from .metrics import dose_metrics

PROFILE_COLUMNS = ["value", "target", "n_items", "effect", "item_slope", "item_slope_lo", "item_slope_hi", "p_value"]


def value_profile(dose: pd.DataFrame, items: Sequence[ReadoutItem], target: str) -> pd.DataFrame:
    """One row per value that labels any item of ``dose``: its items and the intervention's effect on it."""
    labels = {item.id: item.value_labels for item in items}
    present = set(dose["item"])
    values = sorted({v for item_id, item_labels in labels.items() if item_id in present for v in item_labels})
    rows = []
    for value in values:
        sign = {item_id: item_labels[value] for item_id, item_labels in labels.items() if value in item_labels}
        part = dose[dose["item"].isin(sign)].copy()
        part["readout"] = part["logratio"] * part["item"].map(sign)
        metrics = dose_metrics(part)
        rows.append({"value": value, "target": value == value_name(target)} | {k: metrics[k] for k in PROFILE_COLUMNS[2:]})
    return pd.DataFrame(rows, columns=PROFILE_COLUMNS)


def side_effects(profile: pd.DataFrame, min_items: int = 4) -> float:
    """Mean |effect| over the non-target values labelled on at least ``min_items`` balanced items."""
    others = profile[~profile["target"] & (profile["n_items"] >= min_items)]["effect"].dropna()
    return float(others.abs().mean()) if len(others) else float("nan")


def target_row(profile: pd.DataFrame) -> pd.Series:
    target = profile[profile["target"]]
    if target.empty:
        raise ValueError("The profile has no row for the target value: no item is labelled with it.")
    return target.iloc[0]


def transfer_table(profiles: Mapping[str, pd.DataFrame], min_items: int = 4, top: int | None = 12) -> pd.DataFrame:
    """Values × methods of the effect, the target value first, then the values most moved by any method.

    Every value of any profile is a row (``n_items``: the most items any method had for it), so a value
    missing from one method's profile is NaN there, not dropped."""
    columns = {name: profile.set_index("value")["effect"] for name, profile in profiles.items()}
    table = pd.DataFrame(columns)  # every value of any method (NaN where a method's profile lacks it)
    counts = pd.concat([profile.set_index("value")["n_items"] for profile in profiles.values()]).groupby(level=0).max()
    table = table[counts.reindex(table.index).fillna(0) >= min_items]
    targets = [v for profile in profiles.values() for v in profile[profile["target"]]["value"]]
    rest = table.drop(index=[t for t in targets if t in table.index]).abs().max(axis=1).sort_values(ascending=False).index
    order = list(dict.fromkeys([t for t in targets if t in table.index] + list(rest)))
    table = table.loc[order[:top] if top else order]
    table.insert(0, "n_items", counts.reindex(table.index).astype(int))
    return table
