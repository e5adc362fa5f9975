"""Dose-response metrics, each computed exactly as defined, with item-level inference.

Input: a tidy table with one row per (item, coeff), columns ``item``, ``coeff``,
``valid``, the signed readout (``readout``; ``honesty`` is accepted too) and
optionally the neutral-text ``nll`` at that coefficient.

- **Balanced set**: only items valid at every coefficient enter the means and the
  statistics, so each coefficient's mean is over the same items. ``n_items``
  counts them; ``valid_frac`` is the share of valid (item, c) rows overall.
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

Example:
    dose_metrics(df)["item_slope"], dose_metrics(df)["p_value"]
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

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
)


def readout_column(df: pd.DataFrame) -> str:
    """The signed readout's column: ``readout``, or ``honesty`` in tables written before it was generalised."""
    for name in ("readout", "honesty"):
        if name in df:
            return name
    raise ValueError(f"A dose table needs a signed readout column ('readout' or 'honesty'); it has {list(df.columns)}.")


def balanced(df: pd.DataFrame) -> pd.DataFrame:
    """Items × coefficients of the signed readout, for the items valid at every coefficient."""
    value = readout_column(df)
    coeffs = sorted(df["coeff"].unique())
    ok = df.groupby("item")["valid"].agg(lambda v: bool(v.all()))
    counts = df.groupby("item")["coeff"].nunique()
    keep = ok[ok & (counts == len(coeffs))].index
    wide = df[df["item"].isin(keep)].pivot_table(index="item", columns="coeff", values=value, aggfunc="first")
    return wide.reindex(columns=coeffs)


def item_slopes(wide: pd.DataFrame) -> np.ndarray:
    """Each item's least-squares slope of the readout on c."""
    c = np.asarray(wide.columns, dtype=float)
    centred = c - c.mean()
    return (wide.to_numpy(dtype=float) - wide.to_numpy(dtype=float).mean(1, keepdims=True)) @ centred / (centred**2).sum()


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
    return out


def paired_changes(df: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Per coefficient: mean and t-interval over (balanced) items of each item's change from c = 0."""
    wide = balanced(df)
    if 0.0 not in wide.columns:
        raise ValueError("Paired changes need c = 0 in the table.")
    change = wide.sub(wide[0.0], axis=0)
    n = len(change)
    mean = change.mean(axis=0)
    sem = change.std(axis=0, ddof=1) / np.sqrt(max(n, 1)) if n > 1 else change.mean(axis=0) * np.nan
    half = sem * stats.t.ppf((1 + confidence) / 2, max(n - 1, 1))
    frame = pd.DataFrame(
        {"coeff": mean.index.astype(float), "mean": mean.values, "lo": (mean - half).values, "hi": (mean + half).values, "n_items": n}
    )
    if "nll" in df:
        nll = df.groupby("coeff")["nll"].first()
        frame["delta_nll"] = [float(nll[c] - nll[0.0]) if 0.0 in nll else np.nan for c in frame["coeff"]]
    return frame.reset_index(drop=True)
