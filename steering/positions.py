"""Which token positions a steering edit changes, the same with and without the KV cache.

``positions`` of `steering.steer`:

- ``"all"`` (default): every position of every forward;
- ``"prompt"``: the prompt's positions only (the first forward's columns in a generation);
- ``"generated"``: only positions after the prompt (generated tokens; the prompt's states stay untouched);
- an int ``k``: from the k-th last prompt token on (the last k prompt tokens and every generated one,
  steering-vectors' ``min_token_index`` counted from the end);
- a ``slice``: these absolute positions (columns; with left padding every row's prompt ends at the same column).

A forward pre-hook on the model reads each forward's absolute offset (``cache_position``, or the
cache's length), so a generation with the KV cache (one new column per forward) and without it (the
whole sequence again each time; recognised because the previous sequence is its prefix) steer the same
positions. A forward whose sequence does not continue the previous one starts a new prompt. Remote
steering (nnsight edits) computes the same positions from the generation step index.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

Positions = str | int | slice


def check_positions(positions: Positions) -> Positions:
    ok = positions in ("all", "prompt", "generated") or isinstance(positions, slice)
    ok = ok or (isinstance(positions, int) and not isinstance(positions, bool) and positions >= 1)
    if not ok:
        raise ValueError(
            f"positions={positions!r}: use 'all', 'prompt', 'generated', an int k ≥ 1 (from the k-th last prompt token on) or a slice."
        )
    return positions


class PositionTracker:
    """Tracks the absolute positions of the current forward's columns and the prompt's length."""

    def __init__(self, positions: Positions):
        self.positions = check_positions(positions)
        self.offset = 0
        self.prompt_length = 0
        self.previous: Tensor | None = None

    def pre_hook(self, module: Any, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        embeds = kwargs.get("inputs_embeds")
        source = ids if ids is not None else embeds
        if source is None:
            raise ValueError("Steering at chosen positions needs input_ids or inputs_embeds in the model call.")
        length = source.shape[1]
        cache_position, past = kwargs.get("cache_position"), kwargs.get("past_key_values")
        if cache_position is not None:
            offset = int(cache_position.reshape(-1)[0])
        elif past is not None and hasattr(past, "get_seq_length"):
            offset = int(past.get_seq_length())
        else:
            offset = 0
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
