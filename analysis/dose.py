"""Dose-response: score items across steering coefficients, and summarise the curve.

For directions, every non-zero coefficient is scored in shared batched forwards
(one coefficient per batch row); c = 0 is scored by a plain unsteered pass, so it
reproduces `score.score_items` exactly. Adapters (anything with a ``coeff(c)``
context manager) are scored one coefficient at a time.

Example:
    >>> df = dose_response(model, direction, dilemmas(), coeffs=(-2, -1, 0, 1, 2))
    >>> dose_metrics(df)["normalized_gain"]
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from scipy import stats

from probes.batching import check_batch_size
from probes.remote import Remote, resolve_remote
from steering.directions import Direction
from steering.intervene import steer

from . import score as sc

TRAINING_COEFFS = (-1.0, 0.0, 1.0)


def as_directions(intervention: Any) -> list[Direction] | None:
    if isinstance(intervention, Direction):
        return [intervention]
    if isinstance(intervention, (list, tuple)) and intervention and all(isinstance(d, Direction) for d in intervention):
        return list(intervention)
    return None


def score_at_coeffs(model: Any, intervention: Any, items: list[sc.Dilemma], coeffs: Sequence[float], texts: list[str],
                    neutral: list[str], batch_size: int, min_pmass: float,
                    remote: Remote = False) -> tuple[dict[float, pd.DataFrame], dict[float, float]]:
    """Scores and neutral NLL at each non-zero coefficient."""
    tables: dict[float, pd.DataFrame] = {}
    nll: dict[float, float] = {}
    if not coeffs:
        return tables, nll
    directions = as_directions(intervention)
    if directions is not None:
        prompt_coeffs = np.repeat(coeffs, len(texts))
        neutral_coeffs = np.repeat(coeffs, len(neutral))

        def steering_rows(per_text):
            return lambda index: steer(model, directions, torch.tensor(per_text[index], dtype=torch.float32), remote=remote)

        logprobs = sc.last_logprobs(model, texts * len(coeffs), batch_size, steering_rows(prompt_coeffs), remote=remote)
        sums, counts = sc.token_nll(model, neutral * len(coeffs), batch_size, steering_rows(neutral_coeffs), remote=remote)
        for k, c in enumerate(coeffs):
            tables[c] = sc.logratio_table(logprobs[k * len(texts) : (k + 1) * len(texts)], items, model.tokenizer, min_pmass)
            part = slice(k * len(neutral), (k + 1) * len(neutral))
            nll[c] = float(sums[part].sum() / counts[part].sum())
        return tables, nll
    if not hasattr(intervention, "coeff"):
        raise TypeError(f"intervention must be a Direction, a list of them, an adapter with .coeff(c), or None; got {type(intervention).__name__}.")
    if remote:
        raise NotImplementedError(
            f"{type(intervention).__name__} works through forward hooks in this process, which do not travel "
            "with a remote trace. Score Directions remotely, or run the adapter on a local model "
            "(probes.load_model(name, device_map='auto', dtype='bfloat16'))."
        )
    for c in coeffs:
        with intervention.coeff(c):
            tables[c] = sc.logratio_table(sc.last_logprobs(model, texts, batch_size), items, model.tokenizer, min_pmass)
            sums, counts = sc.token_nll(model, neutral, batch_size)
            nll[c] = float(sums.sum() / counts.sum())
    return tables, nll


def check_coeffs(coeffs: Sequence[float]) -> list[float]:
    """Coefficients as floats: at least one, all finite, all different."""
    if isinstance(coeffs, (str, bytes)) or not isinstance(coeffs, Sequence | np.ndarray):
        raise ValueError(f"coeffs={coeffs!r}: give a list of numbers, e.g. (-1, 0, 1).")
    try:
        values = [float(c) for c in coeffs]
    except (TypeError, ValueError):
        raise ValueError(f"coeffs={list(coeffs)!r}: every coefficient must be a number.") from None
    if not values:
        raise ValueError("coeffs is empty: give the steering coefficients to score, e.g. (-1, 0, 1).")
    if not all(np.isfinite(values)):
        raise ValueError(f"coeffs={values}: coefficients must be finite numbers (no NaN or inf).")
    repeated = sorted({c for c in values if values.count(c) > 1})
    if repeated:
        raise ValueError(f"coeffs={values} repeats {repeated}: give each coefficient once.")
    return values


def dose_response(
    model: Any,
    intervention: Any,
    items: Sequence[sc.Dilemma],
    coeffs: Sequence[float] = (-1.0, 0.0, 1.0),
    *,
    batch_size: int = 16,
    min_pmass: float = 0.1,
    neutral_texts: Sequence[str] | None = None,
    baseline: tuple[pd.DataFrame, float] | None = None,
    persona: str | None = None,
    remote: Remote | None = None,
) -> pd.DataFrame:
    """A tidy DataFrame: one row per (item, coeff) with ``logratio``, ``pmass``, ``valid``,
    ``honesty`` and the neutral-text ``nll`` at that coefficient.

    Args:
        intervention: a `Direction`, a list of them (applied together), an adapter
            with a ``coeff(c)`` context manager, or ``None`` (the unsteered model).
        baseline: the unsteered ``(score table, nll)`` if already computed (a sweep
            shares it across configurations).
        persona: a system-style instruction prepended to every question (prompting baseline).
        remote: run every forward on NDIF (``True``) or nnsight's local dry run of it
            (``"local"``); ``None`` follows ``load_model(..., remote=)``. Directions then
            travel as nnsight edits; adapters cannot.
    """
    remote = resolve_remote(model, remote)
    items = sc.check_items(items)
    coeffs = check_coeffs(coeffs)
    batch_size = check_batch_size(batch_size)
    neutral = list(neutral_texts) if neutral_texts is not None else sc.neutral_texts()
    texts = [sc.render_item(model.tokenizer, item, persona=persona) for item in items]
    if baseline is None or persona is not None:
        baseline = (sc.score_items(model, items, persona=persona, min_pmass=min_pmass, batch_size=batch_size, remote=remote),
                    sc.text_nll(model, neutral, batch_size=batch_size, remote=remote))
    steered = [c for c in coeffs if c != 0.0] if intervention is not None else []
    tables, nll = score_at_coeffs(model, intervention, items, steered, texts, neutral, batch_size, min_pmass, remote)
    frames = []
    for c in coeffs:
        table = tables.get(c, baseline[0]).copy()
        table.insert(1, "coeff", c)
        table["nll"] = nll.get(c, baseline[1])
        frames.append(table)
    return pd.concat(frames, ignore_index=True)


def unsteered_baseline(model: Any, items: Sequence[sc.Dilemma], batch_size: int = 16, min_pmass: float = 0.1,
                       neutral_texts: Sequence[str] | None = None, remote: Remote | None = None) -> tuple[pd.DataFrame, float]:
    """The c = 0 scores and NLL, to share across many `dose_response` calls (``remote`` as there)."""
    neutral = list(neutral_texts) if neutral_texts is not None else sc.neutral_texts()
    return (sc.score_items(model, items, min_pmass=min_pmass, batch_size=batch_size, remote=remote),
            sc.text_nll(model, neutral, batch_size, remote=remote))


def dose_metrics(df: pd.DataFrame) -> dict[str, float]:
    """Summary of a dose-response table.

    - ``slope``, ``intercept``, ``r2``, ``p_value``: least squares of honesty on coeff (valid rows);
    - ``paired_p``: paired t-test per item between the highest and lowest coefficient;
    - ``valid_frac``; ``min``/``max``: extremes of the per-coefficient mean honesty;
    - ``score = |slope| · r2 · valid_frac²`` (the seeds' composite layer score);
    - ``spearman``: ρ of honesty with coeff over c ∈ {−1, 0, +1} (all coefficients if those are absent);
    - ``effect``: half the mean honesty change from c = −1 to c = +1 (from the slope otherwise);
    - ``delta_nll``: the largest neutral-text NLL increase over c = 0 among c = ±1 (all non-zero c otherwise);
    - ``normalized_gain = 100 · effect · max(0, ρ) / (1 + ΔNLL)``.
    """
    valid = df[df["valid"]]
    nan = float("nan")
    out: dict[str, float] = {"valid_frac": float(df["valid"].mean())}
    if valid["coeff"].nunique() >= 2:
        fit = stats.linregress(valid["coeff"], valid["honesty"])
        out |= {"slope": float(fit.slope), "intercept": float(fit.intercept), "r2": float(fit.rvalue**2), "p_value": float(fit.pvalue)}
    else:
        out |= {"slope": nan, "intercept": nan, "r2": nan, "p_value": nan}
    means = valid.groupby("coeff")["honesty"].mean()
    out |= {"min": float(means.min()) if len(means) else nan, "max": float(means.max()) if len(means) else nan}
    wide = df[df["valid"]].pivot_table(index="item", columns="coeff", values="honesty")
    low, high = df["coeff"].min(), df["coeff"].max()
    if low in wide and high in wide and low != high:
        pairs = wide[[low, high]].dropna()
        out["paired_p"] = float(stats.ttest_rel(pairs[high], pairs[low]).pvalue) if len(pairs) > 1 else nan
    else:
        out["paired_p"] = nan
    out["score"] = abs(out["slope"]) * out["r2"] * out["valid_frac"] ** 2
    training = valid[valid["coeff"].isin(TRAINING_COEFFS)]
    ranked = training if training["coeff"].nunique() >= 2 else valid
    out["spearman"] = float(stats.spearmanr(ranked["coeff"], ranked["honesty"]).statistic) if ranked["coeff"].nunique() >= 2 else nan
    if -1.0 in means and 1.0 in means:
        out["effect"] = float((means[1.0] - means[-1.0]) / 2)
    else:
        out["effect"] = out["slope"]
    nll = df.groupby("coeff")["nll"].first() if "nll" in df else pd.Series(dtype=float)
    if 0.0 in nll:
        steps = [c for c in (-1.0, 1.0) if c in nll] or [c for c in nll.index if c != 0.0]
        out["delta_nll"] = float(max(nll[c] - nll[0.0] for c in steps)) if steps else 0.0
    else:
        out["delta_nll"] = nan
    gain = 100 * out["effect"] * max(0.0, out["spearman"]) / (1 + out["delta_nll"])
    out["normalized_gain"] = gain + 0.0 if np.isfinite(out["spearman"]) else nan  # + 0.0: no "-0"
    return out
