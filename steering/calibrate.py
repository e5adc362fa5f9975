"""Find the coefficient at which a direction reaches a given dose of KL divergence.

Different methods and layers have different natural scales; comparing them at
the same *dose* (how far the steered next-token distributions drift from the
unsteered ones) is fairer than at the same c. `calibrate` greedily generates
short unsteered continuations of neutral prompts once, then, teacher-forcing
those tokens, finds c > 0 where the 95th percentile of the per-token
KL(unsteered ‖ steered) reaches ``target_kl`` (a batched grid over c, then
bisection in log c).

`match_cost` does the same for any intervention (a direction, an adapter, a prompt) on
teacher-forced texts: the c at which the mean per-token KL on the texts, averaged over
+c and −c, reaches a budget, so methods are compared at the same cost rather than at
the same c. A prompt (`steering.Prompting`) has no dose: its persona is placed before
each text and its cost at c = ±1 is measured, not matched (`neutral_kl`).

Example:
    c = steering.calibrate(model, direction, target_kl=1.0)
    with steering.steer(model, direction, c): ...
    match = match_cost(model, adapter, budget=0.05)     # CostMatch(coeff=..., kl=..., reached=True)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from probes import sublayers as sl
from probes.batching import encode, pad_batch, tokenize
from probes.remote import require_weights

from .directions import Direction
from .intervene import check_fits, steer
from .plans import applied, as_steerable

GRID_START = 2.0**-6  # the first dose tried
MIN_COEFF = 2.0**-40  # the smallest searched when even GRID_START overshoots

NEUTRAL_PROMPTS = (
    "The weather today is",
    "Here is a short description of a kitchen:",
    "My favourite way to spend a Sunday is",
    "The history of the bicycle begins",
)


class BudgetNotReached(ValueError):
    """Even the largest coefficient allowed stays under the target cost."""


def greedy_continuations(model: Any, prompts: Sequence[str], max_new_tokens: int):
    """Unsteered greedy continuations: (padded batch of prompt + continuation, mask of continuation targets)."""
    tokenizer = model.tokenizer
    torch_model = sl.unwrap(model)
    ids = encode(model, prompts, extra=max_new_tokens)
    batch = pad_batch(ids, list(range(len(ids))), tokenizer.pad_token_id, "left", 1)
    device = next(torch_model.parameters()).device
    with torch.no_grad():
        generated = torch_model.generate(
            input_ids=batch.input_ids.to(device),
            attention_mask=batch.attention_mask.to(device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        ).cpu()
    new_tokens = generated[:, batch.input_ids.shape[1] :]
    finished = (new_tokens == tokenizer.eos_token_id).cumsum(-1) - (new_tokens == tokenizer.eos_token_id).long()
    sequences = [list(prompt) + new_tokens[row][finished[row] == 0].tolist() for row, prompt in enumerate(ids)]
    full = pad_batch(sequences, list(range(len(sequences))), tokenizer.pad_token_id, "left", 1)
    # targets: positions whose next token is a generated one
    target_mask = torch.zeros_like(full.attention_mask, dtype=torch.bool)
    for row, (prompt, sequence) in enumerate(zip(ids, sequences)):
        width = full.input_ids.shape[1]
        start = width - len(sequence)
        target_mask[row, start + len(prompt) - 1 : width - 1] = True
    return full, target_mask


def kl_quantiles(
    model: Any, direction: Direction | Sequence[Direction], coeffs: Sequence[float], full, target_mask, quantile: float
) -> list[float]:
    """The ``quantile`` of per-token KL(unsteered ‖ steered) for each coefficient, in one batched forward."""
    torch_model = sl.unwrap(model)
    device = next(torch_model.parameters()).device
    n = full.input_ids.shape[0]
    inputs = {k: v.to(device) for k, v in full.model_inputs(device).items()}
    with torch.no_grad():
        base = F.log_softmax(torch_model(**inputs).logits.float(), -1)
        repeated = {k: v.repeat(len(coeffs), 1) for k, v in inputs.items()}
        per_row = torch.tensor(list(coeffs), dtype=torch.float32).repeat_interleave(n)
        with steer(model, direction, per_row):
            steered = F.log_softmax(torch_model(**repeated).logits.float(), -1)
    steered = steered.view(len(coeffs), n, *steered.shape[1:])
    kl = (base.exp() * (base - steered)).sum(-1)  # [coeff, row, pos]
    mask = target_mask.to(device)
    return [float(torch.quantile(kl[i][mask], quantile)) for i in range(len(coeffs))]


def check_options(target_kl: float, prompts: Sequence[str], max_new_tokens: int, quantile: float, max_coeff: float, steps: int) -> None:
    """Refuse options `calibrate` cannot work with, before it generates anything."""
    if not isinstance(target_kl, (int, float)) or not math.isfinite(target_kl) or target_kl <= 0:
        raise ValueError(f"target_kl={target_kl!r}: give a finite KL divergence > 0 (in nats, e.g. 1.0).")
    if not isinstance(max_coeff, (int, float)) or not math.isfinite(max_coeff) or max_coeff < GRID_START:
        raise ValueError(
            f"max_coeff={max_coeff!r}: give a finite coefficient ≥ {GRID_START:g}, the first dose tried "
            "(smaller doses are searched on their own when it already overshoots)."
        )
    if not isinstance(quantile, (int, float)) or not 0 < quantile <= 1:
        raise ValueError(f"quantile={quantile!r}: give a number in (0, 1], e.g. 0.95 for the 95th percentile of the per-token KL.")
    if isinstance(prompts, str) or not prompts or not all(isinstance(p, str) and p for p in prompts):
        raise ValueError("prompts: give a non-empty list of non-empty texts to generate the unsteered continuations from.")
    for name, value, least in (("max_new_tokens", max_new_tokens, 1), ("steps", steps, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name}={value!r}: give a whole number ≥ {least}.")


def calibrate(
    model: Any,
    direction: Direction | Sequence[Direction],
    target_kl: float = 1.0,
    *,
    prompts: Sequence[str] = NEUTRAL_PROMPTS,
    max_new_tokens: int = 16,
    quantile: float = 0.95,
    max_coeff: float = 1e4,
    steps: int = 12,
) -> float:
    """The c > 0 at which the ``quantile`` per-token KL to the unsteered model reaches ``target_kl``.

    Doses 1/64, 1/32, … up to ``max_coeff`` are tried first; when even 1/64 overshoots, smaller ones
    (down to ``MIN_COEFF``), then bisection in log c between the last dose below and the first above.
    Raises ``ValueError`` when even ``max_coeff`` stays below the target, or ``MIN_COEFF`` above it.
    """
    require_weights(model, "steering.calibrate (it generates and teacher-forces in this process)")
    check_options(target_kl, prompts, max_new_tokens, quantile, max_coeff, steps)
    if isinstance(direction, Direction):
        check_fits(model, direction)
    elif not direction:
        raise ValueError("calibrate was given no directions: pass a steering.Direction or a non-empty list of them.")
    else:
        for each in direction:
            check_fits(model, each)
    full, target_mask = greedy_continuations(model, prompts, max_new_tokens)

    def kls(coeffs: Sequence[float]) -> list[float]:
        return kl_quantiles(model, direction, coeffs, full, target_mask, quantile)

    below, above = bracket(kls, target_kl, max_coeff, quantile)
    return bisect_log(kls, target_kl, below, above, steps)


def bisect_log(kls: Callable[[Sequence[float]], list[float]], target: float, below: float, above: float, steps: int) -> float:
    """Bisection in log c between ``below`` (cost under ``target``) and ``above`` (at or over it); the upper end."""
    low, high = math.log(below), math.log(above)
    for _ in range(steps):
        middle = (low + high) / 2
        if kls([math.exp(middle)])[0] >= target:
            high = middle
        else:
            low = middle
    return math.exp(high)


def bracket(
    kls: Callable[[Sequence[float]], list[float]], target_kl: float, max_coeff: float, quantile: float | str
) -> tuple[float, float]:
    """Neighbouring powers of two ``(below, at_or_above)`` whose KL quantiles (``kls``) straddle the target;
    ``quantile`` names the measure in the errors (a number: that percentile of the per-token KL)."""
    measure = f"p{quantile * 100:.0f} KL" if isinstance(quantile, (int, float)) else quantile
    grid = [GRID_START * 2.0**k for k in range(int(math.log2(max_coeff / GRID_START)) + 1)]
    found: list[float] = []
    for start in range(0, len(grid), 4):  # a few doses per batched forward; stop once past the target
        found += kls(grid[start : start + 4])
        if found[-1] >= target_kl:
            break
    above = [i for i, kl in enumerate(found) if kl >= target_kl]
    if not above:
        raise BudgetNotReached(
            f"Even c = {grid[len(found) - 1]:g} keeps the {measure} at {found[-1]:.3g} < {target_kl}: "
            "this direction barely acts here (raise max_coeff, or lower target_kl)."
        )
    if above[0] > 0:
        return grid[above[0] - 1], grid[above[0]]
    # even the first dose overshoots: halve until below the target
    smaller = [GRID_START / 2.0**k for k in range(int(math.log2(GRID_START / MIN_COEFF)) + 1)]  # GRID_START first
    for start in range(1, len(smaller), 4):
        doses = smaller[start : start + 4]
        for index, kl in enumerate(kls(doses), start):
            if kl < target_kl:
                return smaller[index], smaller[index - 1]
    raise ValueError(
        f"Even c = {MIN_COEFF:g} moves the {measure} to ≥ {target_kl}: this direction's scale is huge "
        "for this target (check the direction's scale, or raise target_kl)."
    )


def prefixed_ids(tokenizer: Any, text_ids: list[int], prefix: str | None) -> list[int]:
    """``text_ids`` with the tokens of ``prefix`` + a blank line before them (after the BOS, if the text has one);
    the text's own tokens are unchanged, so they stay aligned from the end."""
    if not prefix:
        return list(text_ids)
    bos = getattr(tokenizer, "bos_token_id", None)
    head = [bos] if bos is not None and text_ids and text_ids[0] == bos else []
    persona = [t for t in tokenize(tokenizer, [prefix + "\n\n"])[0] if t != bos]
    return head + persona + list(text_ids[len(head) :])


def neutral_kl(model: Any, intervention: Any, coeffs: Sequence[float], texts: Sequence[str]) -> list[float]:
    """Per coefficient, the mean over the tokens of ``texts`` (teacher-forced, e.g. the shipped neutral
    paragraphs, `analysis.neutral_texts`) of KL(unsteered ‖ steered) of the next-token distribution; the
    first token of each text, which the unsteered model predicts from nothing, is left out. An intervention
    with a prompt prefix (``Prompting``) has it placed before each text: its cost is what the persona does
    to the text. c = 0 costs 0.

    Example:
        neutral_kl(model, direction, [-1.0, 0.0, 1.0], analysis.neutral_texts())   # [kl(-1), 0.0, kl(+1)]
    """
    return kl_measure(model, intervention, texts)(coeffs)


def kl_measure(model: Any, intervention: Any, texts: Sequence[str], rows_per_batch: int = 32) -> Callable[[Sequence[float]], list[float]]:
    """`neutral_kl` with the unsteered pass done once: a function of the coefficients. The coefficients of
    one call share batched forwards (one coefficient per row) when the intervention takes per-row ones."""
    steerable = as_steerable(intervention)
    if isinstance(texts, str) or not texts or not all(isinstance(t, str) and t for t in texts):
        raise ValueError("texts: give a non-empty list of non-empty texts to measure the KL on.")
    tokenizer = model.tokenizer
    torch_model = sl.unwrap(model)
    device = next(torch_model.parameters()).device
    ids = encode(model, texts)
    if min(len(i) for i in ids) < 2:
        raise ValueError("Every text needs at least two tokens (the KL is measured on the tokens after the first).")

    def forward(rows: list[list[int]]) -> torch.Tensor:
        batch = pad_batch(rows, list(range(len(rows))), tokenizer.pad_token_id, "left", 1)
        return F.log_softmax(torch_model(**batch.model_inputs(device)).logits.float(), -1)

    with torch.no_grad():
        base = forward(ids)
    lengths = [len(i) - 1 for i in ids]  # positions predicting tokens 2..n of a text: the last n positions but one
    base_kept = [base[row, -n - 1 : -1] for row, n in enumerate(lengths)]

    def kls(coeffs: Sequence[float]) -> list[float]:
        steered_coeffs = [float(c) for c in coeffs if float(c) != 0.0 and steerable is not None]
        rows = [(c, k) for c in steered_coeffs for k in range(len(ids))]
        per_coeff: dict[float, list[float]] = {c: [0.0, 0.0] for c in steered_coeffs}  # summed KL, tokens
        per_row = steerable is not None and steerable.per_row
        step = rows_per_batch if per_row else len(ids)  # one coefficient per forward when it cannot vary by row
        for start in range(0, len(rows), step):
            chunk = rows[start : start + step]
            tokens = [prefixed_ids(tokenizer, ids[k], steerable.prompt_prefix(c)) for c, k in chunk]  # type: ignore[union-attr]
            coeff: Any = torch.tensor([c for c, _ in chunk], dtype=torch.float32) if per_row else chunk[0][0]
            with applied(model, steerable, coeff), torch.no_grad():
                steered = forward(tokens)
            for row, (c, k) in enumerate(chunk):
                p, q = base_kept[k], steered[row, -lengths[k] - 1 : -1]
                per_coeff[c][0] += float((p.exp() * (p - q)).sum())
                per_coeff[c][1] += lengths[k]
        # max(0, .): rounding can leave a -1e-9 where nothing changed
        return [max(0.0, per_coeff[float(c)][0] / per_coeff[float(c)][1]) if float(c) in per_coeff else 0.0 for c in coeffs]

    return kls


@dataclass(frozen=True)
class CostMatch:
    """The coefficient at which an intervention costs a budget (`match_cost`)."""

    coeff: float  # c*, > 0 (1 for a prompt: it has no dose)
    kl: float  # mean of `neutral_kl` at +c* and −c* on the texts it was matched on
    reached: bool  # False: a prompt (fixed dose), or the budget not reached by max_coeff (c* = max_coeff)
    note: str = ""


def match_cost(
    model: Any,
    intervention: Any,
    budget: float,
    texts: Sequence[str],
    *,
    max_coeff: float = 64.0,
    steps: int = 8,
) -> CostMatch:
    """The c > 0 at which `neutral_kl` averaged over +c and −c reaches ``budget`` (nats per token): doses 1/64,
    1/32, … up to ``max_coeff`` (smaller ones when 1/64 already overshoots), then ``steps`` bisections in log c.
    A prompt has no dose: its cost at c = ±1 is returned with ``reached=False``; so is ``max_coeff`` when even it
    stays under the budget (the intervention is compared at the largest dose it was allowed).

    Example:
        match = match_cost(model, adapter, 0.05, analysis.neutral_texts()[:4])   # calibrate on half the texts
        evaluate(model, "InnerPiSSA", adapter, test_items, coeffs=(-match.coeff, 0, match.coeff), ...)
    """
    require_weights(model, "steering.match_cost (it runs the model in this process)")
    if not isinstance(budget, (int, float)) or not math.isfinite(budget) or budget <= 0:
        raise ValueError(f"budget={budget!r}: give a finite KL budget > 0 in nats per token (e.g. 0.05).")
    if not isinstance(max_coeff, (int, float)) or not math.isfinite(max_coeff) or max_coeff < GRID_START:
        raise ValueError(f"max_coeff={max_coeff!r}: give a finite coefficient ≥ {GRID_START:g}.")
    steerable = as_steerable(intervention)
    if steerable is None:
        raise ValueError("match_cost needs an intervention (a direction, an adapter or a prompt); None changes nothing.")

    measure = kl_measure(model, steerable, texts)

    def cost(coeffs: Sequence[float]) -> list[float]:
        kls = measure([s * c for c in coeffs for s in (1.0, -1.0)])
        return [(kls[2 * k] + kls[2 * k + 1]) / 2 for k in range(len(coeffs))]

    if steerable.prompt_prefix(1.0) is not None or steerable.prompt_prefix(-1.0) is not None:
        return CostMatch(1.0, cost([1.0])[0], False, "a prompt has no dose: its cost at c = ±1")
    try:
        below, above = bracket(cost, budget, max_coeff, "mean KL over ±c")
    except BudgetNotReached:
        return CostMatch(float(max_coeff), cost([max_coeff])[0], False, f"under the budget even at c = {max_coeff:g}")
    coeff = bisect_log(cost, budget, below, above, steps)
    return CostMatch(coeff, cost([coeff])[0], True)
