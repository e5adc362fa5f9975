"""Find the coefficient at which a direction reaches a given dose of KL divergence.

Different methods and layers have different natural scales; comparing them at
the same *dose* (how far the steered next-token distributions drift from the
unsteered ones) is fairer than at the same c. `calibrate` greedily generates
short unsteered continuations of neutral prompts once, then, teacher-forcing
those tokens, finds c > 0 where the 95th percentile of the per-token
KL(unsteered ‖ steered) reaches ``target_kl`` (a batched grid over c, then
bisection in log c).

Example:
    c = steering.calibrate(model, direction, target_kl=1.0)
    with steering.steer(model, direction, c): ...
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from probes import sublayers as sl
from probes.batching import encode, pad_batch
from probes.remote import require_weights

from .directions import Direction
from .intervene import check_fits, steer

GRID_START = 2.0**-6  # the first dose tried
MIN_COEFF = 2.0**-40  # the smallest searched when even GRID_START overshoots

NEUTRAL_PROMPTS = (
    "The weather today is",
    "Here is a short description of a kitchen:",
    "My favourite way to spend a Sunday is",
    "The history of the bicycle begins",
)


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
    low, high = math.log(below), math.log(above)
    for _ in range(steps):
        middle = (low + high) / 2
        if kls([math.exp(middle)])[0] >= target_kl:
            high = middle
        else:
            low = middle
    return math.exp(high)


def bracket(kls: Callable[[Sequence[float]], list[float]], target_kl: float, max_coeff: float, quantile: float) -> tuple[float, float]:
    """Neighbouring powers of two ``(below, at_or_above)`` whose KL quantiles (``kls``) straddle the target."""
    grid = [GRID_START * 2.0**k for k in range(int(math.log2(max_coeff / GRID_START)) + 1)]
    found: list[float] = []
    for start in range(0, len(grid), 4):  # a few doses per batched forward; stop once past the target
        found += kls(grid[start : start + 4])
        if found[-1] >= target_kl:
            break
    above = [i for i, kl in enumerate(found) if kl >= target_kl]
    if not above:
        raise ValueError(
            f"Even c = {grid[len(found) - 1]:g} keeps the p{quantile * 100:.0f} KL at {found[-1]:.3g} < {target_kl}: "
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
        f"Even c = {MIN_COEFF:g} moves the p{quantile * 100:.0f} KL to ≥ {target_kl}: this direction's scale is huge "
        "for this target (check the direction's scale, or raise target_kl)."
    )
