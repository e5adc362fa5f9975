"""Value profiles: how an intervention moves every value of value-labelled items, not just its target.

For each value V, the items labelled for it (+1 the action serves V, −1 it works
against it) are read with ``readout = label · logratio`` and summarised exactly as
`analysis.dose_metrics` does (items valid at every c, item-level inference). The
target value's row is the intended effect; ``side_effects`` is the mean |effect|
over the other values with at least ``min_items`` items (the notes' "mean |Δ| on
non-target values"). Because both actions of a dilemma are kept with opposite
labels (an invalid action drops its dilemma), a plain shift towards "Yes" moves no value.
Each row also carries the dilemma-level statistics (``n_dilemmas``,
``dilemma_slope``, ``dilemma_slope_lo``/``_hi``, ``dilemma_p``; see `metrics`).

Side effects have a noise floor (with no true effect anywhere they are not 0) and
values co-labelled with the target move with it. `side_effect_null` gives their
label-permutation null: the dilemmas' non-target labels are shuffled among dilemmas
with the same target labels, each dilemma's label set travelling whole and oriented
by its target labels (random orientation where it has none), so the target effect,
the co-labelling of every value with the target and the set of kept dilemmas are
what they were, and only which dilemmas carry which other values is random. Per
value, ``beats_null`` says whether |effect| exceeds the 95th percentile of its null
|effect|; for the target row the null flips the target labels within each dilemma
at random (a sign-flip test). ``side_effects_ratio`` is side effects per unit of
|target effect|. The per-value marks are separate 5 % tests: over 40 values about two
beat their null by chance, so read a mark on one value with that in mind.

Example:
    profile = value_profile(dose, items, target="honesty")       # one row per value
    side_effects(profile)
    transfer_table({"InnerPiSSA": profile, "PCA": pca_profile})    # values × methods
    null = side_effect_null(dose, items, target="honesty")          # null.observed, null.q95, null.beats
    profile = value_profile(dose, items, target="honesty", permutations=200)   # + null_q95, beats_null
    transfer_beats_null({"InnerPiSSA": profile, "PCA": pca_profile})
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..readouts.items import ReadoutItem, value_name
from .metrics import dose_metrics, units

PROFILE_COLUMNS = [
    "value",
    "target",
    "n_items",
    "effect",
    "item_slope",
    "item_slope_lo",
    "item_slope_hi",
    "p_value",
    "n_dilemmas",
    "dilemma_slope",
    "dilemma_slope_lo",
    "dilemma_slope_hi",
    "dilemma_p",
]
NULL_COLUMNS = ["null_mean", "null_q95", "beats_null"]


def value_profile(dose: pd.DataFrame, items: Sequence[ReadoutItem], target: str, permutations: int = 0, seed: int = 0) -> pd.DataFrame:
    """One row per value that labels any item of ``dose``: its items and the intervention's effect on it;
    with ``permutations`` > 0 also each value's label-permutation null (``NULL_COLUMNS``, `side_effect_null`)."""
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
    profile = pd.DataFrame(rows, columns=PROFILE_COLUMNS)
    if permutations > 0 and len(profile):
        profile = with_null(profile, side_effect_null(dose, items, target, permutations, seed))
    return profile


def with_null(profile: pd.DataFrame, null: SideEffectNull) -> pd.DataFrame:
    """A copy of ``profile`` with each value's ``NULL_COLUMNS`` from a `side_effect_null` of the same table."""
    per_value = null.per_value.set_index("value")
    out = profile.copy()
    for column in NULL_COLUMNS:
        out[column] = out["value"].map(per_value[column])
    out["beats_null"] = out["beats_null"].astype("boolean")
    return out


def side_effects(profile: pd.DataFrame, min_items: int = 4) -> float:
    """Mean |effect| over the non-target values labelled on at least ``min_items`` balanced items."""
    others = profile[~profile["target"] & (profile["n_items"] >= min_items)]["effect"].dropna()
    return float(others.abs().mean()) if len(others) else float("nan")


def side_effects_ratio(profile: pd.DataFrame, min_items: int = 4) -> float:
    """`side_effects` per unit of the target's |effect| (NaN without a target row or with a zero effect)."""
    target = profile[profile["target"]]["effect"].dropna()
    if target.empty or float(target.iloc[0]) == 0:
        return float("nan")
    return side_effects(profile, min_items) / abs(float(target.iloc[0]))


@dataclass
class SideEffectNull:
    """Observed side effects against their label-permutation null (see the module docstring).

    ``observed``: `side_effects` on the kept dilemmas; ``null``: its value under each permutation;
    ``per_value``: one row per value with ``effect`` (observed), ``null_mean``, ``null_q95`` (of the
    null |effect|), ``beats_null`` (|effect| > ``null_q95``) and ``p`` ((1 + #null ≥ observed) / (1 + B))."""

    observed: float
    target_effect: float
    null: np.ndarray
    per_value: pd.DataFrame

    @property
    def null_mean(self) -> float:
        return float(np.nanmean(self.null)) if np.isfinite(self.null).any() else float("nan")

    @property
    def q95(self) -> float:
        return float(np.nanquantile(self.null, 0.95)) if np.isfinite(self.null).any() else float("nan")

    @property
    def beats(self) -> bool:
        return bool(self.observed > self.q95)

    @property
    def p(self) -> float:
        finite = self.null[np.isfinite(self.null)]
        return float((1 + (finite >= self.observed).sum()) / (1 + len(finite))) if len(finite) else float("nan")

    def metrics(self) -> dict[str, float]:
        """The keys `analysis.measures.evaluate` adds to a run's metrics."""
        ratio = self.observed / abs(self.target_effect) if self.target_effect else float("nan")
        return {
            "side_effects_ratio": ratio,
            "side_effects_null_mean": self.null_mean,
            "side_effects_null_q95": self.q95,
            "side_effects_beats_null": float(self.beats) if np.isfinite(self.q95) else float("nan"),
            "side_effects_null_p": self.p,
        }


def item_effects(dose: pd.DataFrame) -> pd.Series:
    """Per item valid at every coefficient and in a dilemma whose items all are: its unsigned effect
    on the log-ratio, (logratio at +1 − at −1) / 2, or its least-squares slope on c without ±1 (the
    per-item terms whose label-signed mean is a profile row's ``effect``)."""
    coeffs = sorted(dose["coeff"].unique())
    ok = dose.groupby("item")["valid"].agg(lambda v: bool(v.all())) & (dose.groupby("item")["coeff"].nunique() == len(coeffs))
    ok = ok.groupby(units(dose).reindex(ok.index)).transform("all")
    wide = dose[dose["item"].isin(ok[ok].index)].pivot_table(index="item", columns="coeff", values="logratio", aggfunc="first")
    if wide.shape[1] < 2:
        return pd.Series(dtype=float)
    if -1.0 in wide and 1.0 in wide:
        return (wide[1.0] - wide[-1.0]) / 2
    c = np.asarray(wide.columns, dtype=float) - np.mean(wide.columns)
    return pd.Series((wide.to_numpy() - wide.to_numpy().mean(1, keepdims=True)) @ c / (c**2).sum(), index=wide.index)


def effects_of(labels: np.ndarray, effect: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per value (columns of ``labels``, items × values of +1/−1/0): the label-signed mean item effect and the item count."""
    counts = np.abs(labels).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (labels * effect[:, None]).sum(axis=0) / counts, counts


def side_effect_null(
    dose: pd.DataFrame, items: Sequence[ReadoutItem], target: str, permutations: int = 200, seed: int = 0, min_items: int = 4
) -> SideEffectNull:
    """`side_effects` and each value's effect against a label-permutation null; see the module docstring.

    On the kept items (`item_effects`), over ``permutations`` draws of a ``numpy`` generator seeded with
    ``seed``: non-target values are shuffled among the dilemmas (units) with the same target labels,
    each unit's label rows kept together and ordered by target label (ties in random order); the
    target's own null flips its labels within each unit with probability ½."""
    effect = item_effects(dose)
    name = value_name(target)
    by_id = {item.id: item.value_labels for item in items}
    kept = [i for i in effect.index if i in by_id]
    values = sorted({v for i in kept for v in by_id[i]})
    labels = np.array([[by_id[i].get(v, 0) for v in values] for i in kept], dtype=float).reshape(len(kept), len(values))
    e = effect.reindex(kept).to_numpy(dtype=float)
    t = values.index(name) if name in values else None
    target_labels = labels[:, t] if t is not None else np.zeros(len(kept))
    others = np.array([k != t for k in range(len(values))], dtype=bool)

    def side(effects: np.ndarray, counts: np.ndarray) -> float:
        chosen = others & (counts >= min_items) & np.isfinite(effects)
        return float(np.abs(effects[chosen]).mean()) if chosen.any() else float("nan")

    observed, counts = effects_of(labels, e)
    unit_of = units(dose).reindex(kept).to_numpy() if kept else np.array([])
    members: dict[str, list[int]] = {}
    for index, unit in enumerate(unit_of):
        members.setdefault(unit, []).append(index)
    strata: dict[tuple, list[list[int]]] = {}
    for group in members.values():
        strata.setdefault(tuple(sorted(target_labels[group], reverse=True)), []).append(group)
    rng = np.random.default_rng(seed)
    null_side = np.full(permutations, np.nan)
    null_values = np.full((permutations, len(values)), np.nan)
    for draw in range(permutations):
        source = np.arange(len(kept))
        flipped = labels.copy()
        for groups in strata.values():
            # each unit's items by target label, ties (e.g. a dilemma without the target) in random order
            ordered = [np.asarray(g)[np.lexsort((rng.random(len(g)), -target_labels[g]))] for g in groups]
            shuffled = rng.permutation(len(ordered))
            for dest, src in zip(ordered, (ordered[k] for k in shuffled)):
                source[dest] = src
        permuted = labels[source]
        if t is not None:
            permuted[:, t] = labels[:, t]
            signs = {unit: rng.choice((-1.0, 1.0)) for unit in members}
            flipped[:, t] = labels[:, t] * np.array([signs[u] for u in unit_of])
        effects, perm_counts = effects_of(permuted, e)
        null_side[draw] = side(effects, perm_counts)
        null_values[draw] = np.abs(effects)
        if t is not None:
            null_values[draw, t] = abs(effects_of(flipped[:, [t]], e)[0][0])
    finite = np.isfinite(null_values).any(axis=0) if permutations else np.zeros(len(values), dtype=bool)
    with np.errstate(invalid="ignore"):
        q95 = (
            np.where(finite, np.nanquantile(np.where(np.isfinite(null_values), null_values, np.nan), 0.95, axis=0), np.nan)
            if permutations
            else np.full(len(values), np.nan)
        )
        mean = np.where(finite, np.nanmean(null_values, axis=0), np.nan) if permutations else np.full(len(values), np.nan)
    per_value = pd.DataFrame(
        {
            "value": values,
            "target": [k == t for k in range(len(values))],
            "n_items": counts.astype(int) if len(values) else [],
            "effect": observed,
            "null_mean": mean,
            "null_q95": q95,
            "beats_null": pd.array([bool(abs(o) > q) if np.isfinite(q) else pd.NA for o, q in zip(observed, q95)], dtype="boolean"),
            "p": [
                float(
                    (1 + (null_values[:, k][np.isfinite(null_values[:, k])] >= abs(o)).sum()) / (1 + np.isfinite(null_values[:, k]).sum())
                )
                if permutations
                else np.nan
                for k, o in enumerate(observed)
            ],
        }
    )
    target_effect = float(observed[t]) if t is not None else float("nan")
    return SideEffectNull(side(observed, counts), target_effect, null_side, per_value)


def target_row(profile: pd.DataFrame) -> pd.Series:
    target = profile[profile["target"]]
    if target.empty:
        raise ValueError("The profile has no row for the target value: no item is labelled with it.")
    return target.iloc[0]


def transfer_beats_null(profiles: Mapping[str, pd.DataFrame], index: Sequence[str] | None = None) -> pd.DataFrame:
    """Values × methods: whether the method's effect on the value beats its label-permutation null
    (profiles from ``value_profile(..., permutations=B)``; NA where a profile has no such value or no null).
    ``index``: the rows to give (e.g. a `transfer_table`'s), in that order."""
    columns = {
        name: (profile.set_index("value")["beats_null"] if "beats_null" in profile else pd.Series(pd.NA, index=profile["value"]))
        for name, profile in profiles.items()
    }
    table = pd.DataFrame(columns).astype("boolean")
    return table.reindex(list(index)) if index is not None else table


def mean_profile(profiles: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """One method's profile over its seeds: per value ``n_items`` (the first seed's), the mean ``effect`` and,
    where the profiles carry a null, ``beats_null`` true only when every seed beats its null and
    ``beats_null_frac`` the share of seeds that do."""
    merged = pd.concat(list(profiles))
    grouped = merged.groupby(["value", "target"], as_index=False)
    out = grouped.agg(n_items=("n_items", "first"), effect=("effect", "mean"))
    if "beats_null" in merged:
        beats = merged.assign(beats=merged["beats_null"].astype(float)).groupby(["value", "target"], as_index=False)["beats"]
        out["beats_null_frac"] = beats.mean()["beats"].to_numpy()
        out["beats_null"] = (out["beats_null_frac"] == 1.0).astype("boolean").where(out["beats_null_frac"].notna(), pd.NA)
    return out


def transfer_table(profiles: Mapping[str, pd.DataFrame], min_items: int = 4, top: int | None = 12) -> pd.DataFrame:
    """Values × methods of the effect, the target value first, then the values that beat their
    label-permutation null in any method (where the profiles carry ``beats_null``), then the
    values most moved by any method. Mark the cells with `transfer_beats_null` (what beats its null),
    not by size: without a null, "most moved" is also what noise gives.

    Every value of any profile is a row (``n_items``: the most items any method had for it), so a value
    missing from one method's profile is NaN there, not dropped."""
    columns = {name: profile.set_index("value")["effect"] for name, profile in profiles.items()}
    table = pd.DataFrame(columns)  # every value of any method (NaN where a method's profile lacks it)
    counts = pd.concat([profile.set_index("value")["n_items"] for profile in profiles.values()]).groupby(level=0).max()
    table = table[counts.reindex(table.index).fillna(0) >= min_items]
    targets = [v for profile in profiles.values() for v in profile[profile["target"]]["value"]]
    moved = table.drop(index=[t for t in targets if t in table.index]).abs().max(axis=1)
    beats = transfer_beats_null(profiles, moved.index).fillna(False).any(axis=1).astype(int)
    rest = pd.DataFrame({"beats": beats, "moved": moved}).sort_values(["beats", "moved"], ascending=False, kind="stable").index
    order = list(dict.fromkeys([t for t in targets if t in table.index] + list(rest)))
    table = table.loc[order[:top] if top else order]
    table.insert(0, "n_items", counts.reindex(table.index).astype(int))
    return table
