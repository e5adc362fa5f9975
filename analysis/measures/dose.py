"""Dose-response: score items across steering coefficients, and summarise the curve.

Any intervention `steering.applied` takes is scored the same way: every non-zero
coefficient in shared batched forwards (one coefficient per batch row) when it
takes per-row coefficients (directions, InnerPiSSA, LoRA, prompting), else one at
a time; c = 0 is scored by a plain unsteered pass, so it reproduces
`score.score_items` exactly.

Example:
    df = dose_response(model, direction, eval_items("honesty"), coeffs=(-2, -1, 0, 1, 2))
    analysis.dose_metrics(df)["normalized_gain"]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from probes.batching import check_batch_size
from probes.remote import Remote, resolve_remote
from steering.plans import applied, as_steerable

from ..readouts import score as sc
from ..readouts.items import ReadoutItem, check_items
from ..readouts.sets import neutral_texts as shipped_neutral_texts


def score_at_coeffs(
    model: Any,
    steerable: Any,
    items: list[ReadoutItem],
    coeffs: Sequence[float],
    neutral: list[str],
    batch_size: int,
    min_pmass: float,
    remote: Remote = False,
) -> tuple[dict[float, pd.DataFrame], dict[float, float]]:
    """Scores and neutral NLL at each non-zero coefficient: all of them in shared batches (one coefficient per
    row) when the intervention takes per-row coefficients, else one coefficient at a time."""
    tables: dict[float, pd.DataFrame] = {}
    nll: dict[float, float] = {}
    groups = [list(coeffs)] if steerable.per_row else [[c] for c in coeffs]
    for group in (g for g in groups if g):
        texts = [sc.render_item(model.tokenizer, item, steerable.prompt_prefix(c)) for c in group for item in items]
        per_text, per_neutral = np.repeat(group, len(items)), np.repeat(group, len(neutral))

        def rows(per_row: np.ndarray, group: list[float] = group):
            def context(index: list[int]):
                coeff = float(group[0]) if len(group) == 1 else torch.tensor(per_row[index], dtype=torch.float32)
                return applied(model, steerable, coeff, remote=remote)

            return context

        logprobs = sc.last_logprobs(model, texts, batch_size, rows(per_text), remote=remote)
        sums, counts = sc.token_nll(model, neutral * len(group), batch_size, rows(per_neutral), remote=remote)
        for k, c in enumerate(group):
            tables[c] = sc.logratio_table(logprobs[k * len(items) : (k + 1) * len(items)], items, model.tokenizer, min_pmass)
            part = slice(k * len(neutral), (k + 1) * len(neutral))
            nll[c] = float(sums[part].sum() / counts[part].sum())
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
    items: Sequence[ReadoutItem],
    coeffs: Sequence[float] = (-1.0, 0.0, 1.0),
    *,
    batch_size: int = 16,
    min_pmass: float = 0.1,
    neutral_texts: Sequence[str] | None = None,
    baseline: tuple[pd.DataFrame, float] | None = None,
    remote: Remote | None = None,
) -> pd.DataFrame:
    """A tidy DataFrame: one row per (item, coeff) with ``logratio``, ``pmass``, ``valid``,
    ``readout`` (signed) and the neutral-text ``nll`` at that coefficient.

    Args:
        intervention: anything `steering.applied` takes: a `Direction` or a list of them, an
            adapter (InnerPiSSA, LoRA), a `steering.Prompting`, or ``None`` (the base model).
        baseline: the unsteered ``(score table, nll)`` if already computed (a sweep
            shares it across configurations).
        remote: run every forward on NDIF (``True``) or nnsight's local dry run of it
            (``"local"``); ``None`` follows ``load_model(..., remote=)``. Directions then
            travel as nnsight edits; adapters cannot.
    """
    remote = resolve_remote(model, remote)
    items = check_items(items)
    coeffs = check_coeffs(coeffs)
    batch_size = check_batch_size(batch_size)
    steerable = as_steerable(intervention)
    neutral = list(neutral_texts) if neutral_texts is not None else shipped_neutral_texts()
    if baseline is None:
        baseline = unsteered_baseline(model, items, batch_size, min_pmass, neutral, remote)
    steered = [c for c in coeffs if c != 0.0] if steerable is not None else []
    tables, nll = score_at_coeffs(model, steerable, items, steered, neutral, batch_size, min_pmass, remote) if steered else ({}, {})
    frames = []
    for c in coeffs:
        table = tables.get(c, baseline[0]).copy()
        table.insert(1, "coeff", c)
        table["nll"] = nll.get(c, baseline[1])
        frames.append(table)
    return pd.concat(frames, ignore_index=True)


def unsteered_baseline(
    model: Any,
    items: Sequence[ReadoutItem],
    batch_size: int = 16,
    min_pmass: float = 0.1,
    neutral_texts: Sequence[str] | None = None,
    remote: Remote | None = None,
) -> tuple[pd.DataFrame, float]:
    """The c = 0 scores and NLL, to share across many `dose_response` calls (``remote`` as there)."""
    neutral = list(neutral_texts) if neutral_texts is not None else shipped_neutral_texts()
    return (
        sc.score_items(model, items, min_pmass=min_pmass, batch_size=batch_size, remote=remote),
        sc.text_nll(model, neutral, batch_size, remote=remote),
    )
