"""Dose-response metrics, each computed exactly as defined, with item-level inference.

Input: a tidy table with one row per (item, coeff), columns ``item``, ``coeff``,
``valid``, the signed readout (``readout``; ``honesty`` is accepted too) and
optionally the neutral-text ``nll`` at that coefficient.

- **Balanced set**: only items valid at every coefficient enter the means and the
  statistics, so each coefficient's mean is over the same items. When the table
  has a ``dilemma`` column (`with_dilemmas`; `analysis.measures.evaluate` adds
  it), an item invalid at any c drops **its whole dilemma**: both actions of a
  dilemma carry opposite labels, so keeping one action alone would let a shift
  towards "Yes" leak into the value effect. ``n_items`` counts the kept items,
  ``n_dilemmas`` their dilemmas, ``kept_frac`` the share of the table's items
  kept; ``valid_frac`` is the share of valid (item, c) rows overall.
- ``slope``, ``intercept``, ``r2``: least squares of the per-coefficient mean
  readout on c; ``score = |slope| · r2 · valid_frac²`` (the seeds' composite).
- ``spearman``: ρ of the per-coefficient means over c ∈ {−1, 0, +1} (all
  coefficients when those three are not all there).
- ``effect = (mean at +1 − mean at −1) / 2`` (the slope when ±1 are absent).
- ``delta_nll``: the largest neutral-text NLL increase over c = 0 among c = ±1
  (all non-zero c when ±1 are absent).
- ``normalized_gain = 100 · effect · max(0, ρ) / (1 + max(0, ΔNLL))``.
- Item level: each item's own least-squares slope on c; ``item_slope`` is their
  mean with a 95 % t-interval (``item_slope_lo``, ``item_slope_hi``) and
  ``p_value`` a one-sample t-test of the slopes against 0; ``paired_p`` a paired
  t-test between the highest and the lowest coefficient. No statistic treats
  (item, c) rows as independent samples.
- Dilemma level (the unit a reviewer accepts: both actions of a dilemma are
  paired by design, so items are not independent): each dilemma's slope is the
  mean of its kept items' slopes (`dilemma_slopes`); ``dilemma_slope`` is their
  mean over dilemmas with a 95 % t-interval (``dilemma_slope_lo``,
  ``dilemma_slope_hi``) and ``dilemma_p`` a one-sample t-test of the per-dilemma
  slopes against 0 over ``n_dilemmas`` dilemmas. Items without a dilemma id (no
  ``dilemma`` column, or an empty cell there: sentiment readouts, controls) are
  each their own unit, so on such tables the dilemma statistics equal the item ones.

Example:
    dose_metrics(df)["item_slope"], dose_metrics(df)["p_value"]
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import stats

from ..readouts.items import ReadoutItem

TRAINING_COEFFS = (-1.0, 0.0, 1.0)
METRIC_KEYS = (
    "n_items",
    "valid_frac",
    "slope",
    "intercept",
    "r2",
    "score",
    "spearman",
    "effect",
    "delta_nll",
    "normalized_gain",
    "item_slope",
    "item_slope_lo",
    "item_slope_hi",
    "p_value",
    "paired_p",
    "min",
    "max",
    "n_dilemmas",
    "kept_frac",
    "dilemma_slope",
    "dilemma_slope_lo",
    "dilemma_slope_hi",
    "dilemma_p",
)
DILEMMA = "dilemma"  # the column naming each item's dilemma (its ReadoutItem.group)


def readout_column(df: pd.DataFrame) -> str:
    """The signed readout's column: ``readout``, or ``honesty`` in tables written before it was generalised."""
    for name in ("readout", "honesty"):
        if name in df:
            return name
    raise ValueError(f"A dose table needs a signed readout column ('readout' or 'honesty'); it has {list(df.columns)}.")


def with_dilemmas(df: pd.DataFrame, items: Iterable[ReadoutItem]) -> pd.DataFrame:
    """A copy of a dose table with a ``dilemma`` column: each item's ``group`` (its dilemma id), or
    the item's own id when it has none (the item is then its own unit)."""
    groups = {item.id: item.group or item.id for item in items}
    out = df.copy()
    out[DILEMMA] = out["item"].map(groups).fillna(out["item"].astype(str))
    return out


def units(df: pd.DataFrame) -> pd.Series:
    """Each item's unit of inference, indexed by item: its dilemma (the ``dilemma`` column) where the
    table names one, else the item itself."""
    items = df.drop_duplicates("item").set_index("item")
    if DILEMMA not in items:
        return pd.Series(items.index.astype(str), index=items.index, name=DILEMMA)
    named = items[DILEMMA].astype(object).where(items[DILEMMA].notna() & (items[DILEMMA].astype(str) != ""))
    return named.fillna(pd.Series(items.index.astype(str), index=items.index)).astype(str).rename(DILEMMA)


def balanced(df: pd.DataFrame) -> pd.DataFrame:
    """Items × coefficients of the signed readout, for the items valid at every coefficient whose
    dilemma's other items (in this table) are valid at every coefficient too: an invalid item drops
    its whole dilemma (see the module docstring). Without a ``dilemma`` column each item stands alone."""
    value = readout_column(df)
    coeffs = sorted(df["coeff"].unique())
    ok = df.groupby("item")["valid"].agg(lambda v: bool(v.all()))
    counts = df.groupby("item")["coeff"].nunique()
    ok = ok & (counts == len(coeffs))
    unit = units(df).reindex(ok.index)
    ok = ok.groupby(unit).transform("all")  # one bad action drops its dilemma
    keep = ok[ok].index
    wide = df[df["item"].isin(keep)].pivot_table(index="item", columns="coeff", values=value, aggfunc="first")
    return wide.reindex(columns=coeffs)


def item_slopes(wide: pd.DataFrame) -> np.ndarray:
    """Each item's least-squares slope of the readout on c."""
    c = np.asarray(wide.columns, dtype=float)
    centred = c - c.mean()
    return (wide.to_numpy(dtype=float) - wide.to_numpy(dtype=float).mean(1, keepdims=True)) @ centred / (centred**2).sum()


def dilemma_slopes(df: pd.DataFrame) -> pd.Series:
    """Per dilemma (index: its id; the item's id for an item without one): the mean least-squares
    slope on c of its kept items (`balanced`), from a dose table with a signed readout."""
    wide = balanced(df)
    if len(wide) == 0 or wide.shape[1] < 2:
        return pd.Series(dtype=float, name="slope")
    slopes = pd.Series(item_slopes(wide), index=wide.index)
    return slopes.groupby(units(df).reindex(wide.index)).mean().rename("slope")


def t_summary(values: ArrayLike, confidence: float = 0.95) -> dict[str, float]:
    """Mean, t-interval (``lo``, ``hi``) and one-sample t-test p against 0 of independent units' values;
    NaN where fewer than two."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    nan = float("nan")
    if len(x) < 2:
        return {"n": float(len(x)), "mean": float(x.mean()) if len(x) else nan, "lo": nan, "hi": nan, "p": nan}
    mean = float(x.mean())
    half = float(stats.t.ppf((1 + confidence) / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))
    p = float(stats.ttest_1samp(x, 0.0).pvalue)  # NaN when every unit has the same value
    return {"n": float(len(x)), "mean": mean, "lo": mean - half, "hi": mean + half, "p": p}


def delta_nll(df: pd.DataFrame) -> float:
    if "nll" not in df:
        return float("nan")
    nll = df.groupby("coeff")["nll"].first()
    if 0.0 not in nll:
        return float("nan")
    steps = [c for c in (-1.0, 1.0) if c in nll] or [c for c in nll.index if c != 0.0]
    return float(max(nll[c] - nll[0.0] for c in steps)) if steps else 0.0


def dose_metrics(df: pd.DataFrame, confidence: float = 0.95) -> dict[str, float]:
    """The metrics of a dose-response table; see the module docstring."""
    nan = float("nan")
    out: dict[str, float] = dict.fromkeys(METRIC_KEYS, nan)
    wide = balanced(df)
    out["n_items"] = float(len(wide))
    out["n_dilemmas"] = float(units(df).reindex(wide.index).nunique())
    out["kept_frac"] = float(len(wide) / df["item"].nunique()) if len(df) else nan
    out["valid_frac"] = float(df["valid"].mean())
    out["delta_nll"] = delta_nll(df)
    if len(wide) == 0 or wide.shape[1] < 2:
        return out
    coeffs = np.asarray(wide.columns, dtype=float)
    means = wide.mean(axis=0).to_numpy()
    fit = stats.linregress(coeffs, means)
    out |= {
        "slope": float(fit.slope),
        "intercept": float(fit.intercept),
        "r2": float(fit.rvalue**2),
        "min": float(means.min()),
        "max": float(means.max()),
    }
    out["score"] = abs(out["slope"]) * out["r2"] * out["valid_frac"] ** 2
    training = [i for i, c in enumerate(coeffs) if c in TRAINING_COEFFS]
    ranked = training if len(training) == len(TRAINING_COEFFS) else list(range(len(coeffs)))
    if np.ptp(means[ranked]) > 0:  # ρ is undefined for constant means
        out["spearman"] = float(stats.spearmanr(coeffs[ranked], means[ranked]).statistic)
    mean_at = dict(zip(coeffs, means))
    out["effect"] = float((mean_at[1.0] - mean_at[-1.0]) / 2) if 1.0 in mean_at and -1.0 in mean_at else out["slope"]
    if np.isfinite(out["spearman"]):
        gain = 100 * out["effect"] * max(0.0, out["spearman"]) / (1 + max(0.0, out["delta_nll"] if np.isfinite(out["delta_nll"]) else 0.0))
        out["normalized_gain"] = gain + 0.0  # + 0.0: no "-0"
    if len(wide) >= 2:
        slopes = item_slopes(wide)
        out["item_slope"] = float(slopes.mean())
        half = stats.t.ppf((1 + confidence) / 2, len(slopes) - 1) * slopes.std(ddof=1) / np.sqrt(len(slopes))
        out["item_slope_lo"], out["item_slope_hi"] = out["item_slope"] - float(half), out["item_slope"] + float(half)
        out["p_value"] = float(stats.ttest_1samp(slopes, 0.0).pvalue)
        out["paired_p"] = float(stats.ttest_rel(wide[wide.columns[-1]], wide[wide.columns[0]]).pvalue)
    per_dilemma = t_summary(dilemma_slopes(df), confidence)
    if per_dilemma["n"] >= 2:
        out |= {
            "dilemma_slope": per_dilemma["mean"],
            "dilemma_slope_lo": per_dilemma["lo"],
            "dilemma_slope_hi": per_dilemma["hi"],
            "dilemma_p": per_dilemma["p"],
        }
    return out


def paired_changes(df: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Per coefficient: mean and t-interval of each item's change from c = 0, over the (balanced)
    dilemmas: each dilemma's change is the mean of its items' (``n_dilemmas`` of them; on a table
    without a ``dilemma`` column every item is its own unit and this is the item-level interval)."""
    wide = balanced(df)
    if 0.0 not in wide.columns:
        raise ValueError("Paired changes need c = 0 in the table.")
    n_items = len(wide)
    change = wide.sub(wide[0.0], axis=0).groupby(units(df).reindex(wide.index)).mean()
    n = len(change)
    mean = change.mean(axis=0)
    sem = change.std(axis=0, ddof=1) / np.sqrt(max(n, 1)) if n > 1 else change.mean(axis=0) * np.nan
    half = sem * stats.t.ppf((1 + confidence) / 2, max(n - 1, 1))
    frame = pd.DataFrame(
        {
            "coeff": mean.index.astype(float),
            "mean": mean.values,
            "lo": (mean - half).values,
            "hi": (mean + half).values,
            "n_items": n_items,
            "n_dilemmas": n,
        }
    )
    if "nll" in df:
        nll = df.groupby("coeff")["nll"].first()
        frame["delta_nll"] = [float(nll[c] - nll[0.0]) if 0.0 in nll else np.nan for c in frame["coeff"]]
    return frame.reset_index(drop=True)
