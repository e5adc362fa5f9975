"""Dose-response: score items across steering coefficients, and summarise the curve.

For directions, every non-zero coefficient is scored in shared batched forwards
(one coefficient per batch row); c = 0 is scored by a plain unsteered pass, so it
reproduces `score.score_items` exactly. Adapters (anything with a ``coeff(c)``
context manager) are scored one coefficient at a time.

Example:
    >>> df = dose_response(model, direction, eval_items("honesty"), coeffs=(-2, -1, 0, 1, 2))
    >>> dose_metrics(df)["normalized_gain"]
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from probes.batching import check_batch_size
from probes.remote import Remote, resolve_remote
from steering.directions import Direction
from steering.intervene import steer

from . import score as sc
from .items import ReadoutItem, check_items
from .items import neutral_texts as shipped_neutral_texts
from .metrics import dose_metrics  # noqa: F401  (re-exported: analysis.dose.dose_metrics)


def as_directions(intervention: Any) -> list[Direction] | None:
    if isinstance(intervention, Direction):
        return [intervention]
    if isinstance(intervention, (list, tuple)) and intervention and all(isinstance(d, Direction) for d in intervention):
        return list(intervention)
    return None


def score_at_coeffs(model: Any, intervention: Any, items: list[ReadoutItem], coeffs: Sequence[float], texts: list[str],
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
    items: Sequence[ReadoutItem],
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
    ``readout`` (signed) and the neutral-text ``nll`` at that coefficient.

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
    items = check_items(items)
    coeffs = check_coeffs(coeffs)
    batch_size = check_batch_size(batch_size)
    neutral = list(neutral_texts) if neutral_texts is not None else shipped_neutral_texts()
    texts = [sc.render_item(model.tokenizer, item, persona) for item in items]
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


def unsteered_baseline(model: Any, items: Sequence[ReadoutItem], batch_size: int = 16, min_pmass: float = 0.1,
                       neutral_texts: Sequence[str] | None = None, remote: Remote | None = None) -> tuple[pd.DataFrame, float]:
    """The c = 0 scores and NLL, to share across many `dose_response` calls (``remote`` as there)."""
    neutral = list(neutral_texts) if neutral_texts is not None else shipped_neutral_texts()
    return (sc.score_items(model, items, min_pmass=min_pmass, batch_size=batch_size, remote=remote),
            sc.text_nll(model, neutral, batch_size, remote=remote))
