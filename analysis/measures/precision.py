"""Honest precision: between-method tests paired over dilemmas, and seeds kept apart from the CI.

The unit of inference is the dilemma (both actions of a dilemma are paired by design;
`analysis.measures.metrics` explains the per-dilemma slope). Everything here takes, per
run, either a dose table with a signed readout (and a ``dilemma`` column; see
`metrics.with_dilemmas` and `signed_for`) or the Series `metrics.dilemma_slopes` makes
of it, so the reports can call it on the dose CSVs an experiment writes.

- `pooled_slopes`: one method's per-dilemma slope averaged over its seeds, on the dilemmas
  kept (valid at every c) in every seed.
- `seed_summary`: the mean effect, the seed spread as its own number (``seed_sd``: SD over
  seeds of each seed's mean slope on those dilemmas) and the dilemma-level 95 % CI and p of
  the seed-averaged per-dilemma slopes (seeds are fixed; the interval is over dilemmas, not
  "± SD over seeds").
- `paired_difference`: two methods on the same test dilemmas: the mean over their common
  dilemmas of the per-dilemma slope difference (A − B), its t-interval and the paired t-test p.
- `paired_tests`: each method against each named baseline (prompting, the best direction).
- `best_of`: the candidate with the largest mean per-dilemma slope (chosen on the same test
  dilemmas, which flatters that baseline: a method that beats it is not flattered).

Example:
    labels = target_labels(run, "honesty")                        # item -> its label for the target
    doses = {m: [signed_for(pd.read_csv(f), labels) for f in files[m]] for m in files}
    seed_summary(doses["InnerPiSSA"])                             # effect, seed_sd, dilemma CI and p
    paired_tests(doses, ["prompting", best_of(doses, ["PCA", "mean_diff"])])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeAlias

import numpy as np
import pandas as pd

from .metrics import dilemma_slopes, t_summary

PAIRED_COLUMNS = ["method", "baseline", "n_dilemmas", "difference", "difference_lo", "difference_hi", "p"]
SEED_KEYS = ("seeds", "n_dilemmas", "effect", "seed_sd", "dilemma_slope_lo", "dilemma_slope_hi", "dilemma_p")

Run: TypeAlias = pd.DataFrame | pd.Series  # a dose table with a signed readout, or its per-dilemma slopes
Runs: TypeAlias = pd.DataFrame | pd.Series | Sequence[pd.DataFrame | pd.Series]  # one run or its seeds


def signed_for(dose: pd.DataFrame, labels: Mapping[str, int]) -> pd.DataFrame:
    """The rows of a dose table whose item carries a label for the target, with ``readout = label · logratio``
    (the target-signed table every statistic here reads); ``labels`` maps item ids to +1/−1."""
    part = dose[dose["item"].isin(labels)].copy()
    part["readout"] = part["logratio"] * part["item"].map(labels)
    return part


def as_slopes(run: Run) -> pd.Series:
    """Per-dilemma slopes of one run: the Series itself, or `metrics.dilemma_slopes` of a dose table."""
    return run.astype(float) if isinstance(run, pd.Series) else dilemma_slopes(run)


def seed_list(runs: Runs) -> list[Run]:
    return [runs] if isinstance(runs, pd.DataFrame | pd.Series) else list(runs)


def seed_table(runs: Runs) -> pd.DataFrame:
    """Dilemmas × seeds of per-dilemma slopes, on the dilemmas kept in every seed."""
    frames = [as_slopes(run).rename(k) for k, run in enumerate(seed_list(runs))]
    if not frames:
        raise ValueError("No runs: give at least one seed's dose table (or per-dilemma slopes).")
    return pd.concat(frames, axis=1, join="inner")


def pooled_slopes(runs: Runs) -> pd.Series:
    """One method's per-dilemma slope averaged over its seeds, on the dilemmas kept in every seed."""
    return seed_table(runs).mean(axis=1).rename("slope")


def seed_summary(runs: Runs, confidence: float = 0.95) -> dict[str, float]:
    """A method's effect over its seeds with the seed spread apart from the dilemma-level interval.

    ``effect``: the mean over the common dilemmas (kept in every seed) of the seed-averaged
    per-dilemma slope (= the mean over seeds of each seed's mean slope there); ``seed_sd``: the SD
    (ddof 1) over seeds of each seed's mean slope on those dilemmas (NaN for one seed);
    ``dilemma_slope_lo``/``_hi`` and ``dilemma_p``: the t-interval and one-sample t-test of the
    seed-averaged per-dilemma slopes over the ``n_dilemmas`` dilemmas."""
    table = seed_table(runs)
    per_seed = table.mean(axis=0).to_numpy(dtype=float)
    summary = t_summary(table.mean(axis=1), confidence)
    return {
        "seeds": float(table.shape[1]),
        "n_dilemmas": float(len(table)),
        "effect": summary["mean"],
        "seed_sd": float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else float("nan"),
        "dilemma_slope_lo": summary["lo"],
        "dilemma_slope_hi": summary["hi"],
        "dilemma_p": summary["p"],
    }


def paired_difference(a: Runs, b: Runs, confidence: float = 0.95) -> dict[str, float]:
    """Method A against method B on the same test dilemmas: per dilemma, A's slope minus B's (each
    averaged over its seeds); the mean of those differences over the dilemmas both kept, its
    t-interval, and the paired t-test p (``scipy.stats.ttest_rel`` of the two slope vectors)."""
    both = pd.concat([pooled_slopes(a).rename("a"), pooled_slopes(b).rename("b")], axis=1, join="inner")
    summary = t_summary(both["a"] - both["b"], confidence)
    return {
        "n_dilemmas": float(len(both)),
        "difference": summary["mean"],
        "difference_lo": summary["lo"],
        "difference_hi": summary["hi"],
        "p": summary["p"],
    }


def best_of(runs: Mapping[str, Runs], candidates: Sequence[str]) -> str:
    """The candidate (present in ``runs``) with the largest mean seed-averaged per-dilemma slope."""
    present = [name for name in candidates if name in runs]
    if not present:
        raise ValueError(f"None of {list(candidates)} is among the methods {list(runs)}.")
    return max(present, key=lambda name: float(pooled_slopes(runs[name]).mean()))


def paired_tests(runs: Mapping[str, Runs], baselines: Sequence[str], confidence: float = 0.95) -> pd.DataFrame:
    """Every method against every baseline in ``baselines`` (skipping a method against itself and
    baselines absent from ``runs``): one row each with ``PAIRED_COLUMNS`` (`paired_difference`)."""
    rows = [
        {"method": method, "baseline": baseline} | paired_difference(runs[method], runs[baseline], confidence)
        for baseline in dict.fromkeys(baselines)
        if baseline in runs
        for method in runs
        if method != baseline
    ]
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)
