"""Which token positions a steering edit changes, the same with and without the KV cache.

``positions`` of `steering.steer`:

- ``"all"`` (default): every position of every forward;
- ``"prompt"``: the prompt's positions only (the first forward's columns in a generation);
- ``"generated"``: only positions after the prompt (generated tokens; the prompt's states stay untouched);
- an int ``k``: from the k-th last prompt token on (the last k prompt tokens and every generated one,
  steering-vectors' ``min_token_index`` counted from the end);
- a ``slice``: these absolute positions (columns; with left padding every row's prompt ends at the same column);
  start, stop and step must be non-negative (a step ≥ 1): a negative bound counts from the end of a
  sequence that grows during generation, so it would steer different columns with and without the KV cache.
  For "the last k prompt tokens on" pass the int k.

A forward pre-hook on the model reads each forward's absolute offset (`probes.forward_offset`: the
cache position, the cache's length or the attention mask, whatever the installed transformers passes), so a generation with the KV cache (one new column per forward) and without it (the
whole sequence again each time; recognised because the previous sequence is its prefix) steer the same
positions. A forward whose sequence does not continue the previous one starts a new prompt. Remote
steering (nnsight edits) computes the same positions from the generation step index.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch import Tensor

from probes.forward_offset import call_inputs, forward_offset

Positions = str | int | slice
CHOICES = "'all', 'prompt', 'generated', an int k ≥ 1 (from the k-th last prompt token on) or a slice of absolute positions"


def as_index(value: Any) -> int | None:
    """``value`` as a Python int when it is an integer (numpy and torch integers included), else None."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def check_slice(positions: slice) -> slice:
    bounds = {"start": positions.start, "stop": positions.stop, "step": positions.step}
    plain = {name: None if value is None else as_index(value) for name, value in bounds.items()}
    for name, value in bounds.items():
        if value is not None and plain[name] is None:
            raise ValueError(f"positions={positions!r}: the slice's {name} must be an integer or None, not {type(value).__name__}.")
    if any(value is not None and value < 0 for value in plain.values()):
        raise ValueError(
            f"positions={positions!r}: negative slice bounds or steps count from the end of a sequence that grows while it is "
            "generated, so they would steer different positions with and without the KV cache. Use non-negative absolute "
            "positions (slice(3, 8)), or an int k to steer from the k-th last prompt token on."
        )
    if plain["step"] == 0:
        raise ValueError(f"positions={positions!r}: a slice step must be at least 1.")
    return slice(plain["start"], plain["stop"], plain["step"])


def check_positions(positions: Any) -> Positions:
    """``positions`` in its plain form (numpy integers become ints), or a ValueError naming the choices."""
    if isinstance(positions, str) and positions in ("all", "prompt", "generated"):
        return positions
    if isinstance(positions, slice):
        return check_slice(positions)
    k = as_index(positions)
    if k is not None and k >= 1:
        return k
    raise ValueError(f"positions={positions!r}: use {CHOICES}.")


class PositionTracker:
    """Tracks the absolute positions of the current forward's columns and the prompt's length."""

    def __init__(self, positions: Positions):
        self.positions = check_positions(positions)
        self.offset = 0
        self.prompt_length = 0
        self.previous: Tensor | None = None

    def pre_hook(self, module: Any, args: tuple, kwargs: dict) -> None:
        source = call_inputs(args, kwargs)
        if source is None:
            raise ValueError("Steering at chosen positions needs input_ids or inputs_embeds in the model call.")
        ids = source if source.ndim == 2 else None
        length = source.shape[1]
        offset = forward_offset(kwargs, args)
        if offset == 0:
            previous = self.previous
            continues = (
                ids is not None
                and previous is not None
                and ids.shape[0] == previous.shape[0]
                and ids.shape[1] > previous.shape[1]
                and torch.equal(ids[:, : previous.shape[1]].to(previous.device), previous)
            )
            if not continues:
                self.prompt_length = length
            self.previous = ids.detach().clone() if ids is not None else None
        self.offset = offset

    def mask(self, length: int, like: Tensor) -> Tensor:
        """``[1, length, 1]``: 1 where this forward's columns are steered."""
        absolute = torch.arange(self.offset, self.offset + length, device=like.device)
        p, positions = self.prompt_length, self.positions
        if positions == "all":
            keep = torch.ones_like(absolute, dtype=torch.bool)
        elif positions == "prompt":
            keep = absolute < p
        elif positions == "generated":
            keep = absolute >= p
        elif isinstance(positions, slice):
            chosen = torch.arange(max(p, self.offset + length), device=like.device)[positions]
            keep = torch.isin(absolute, chosen)
        else:
            keep = absolute >= p - int(positions)
        return keep.to(like.dtype)[None, :, None]
