"""Tokenizing, padding and batching texts, and the checks every forward needs.

Shared by capture, scoring, training and calibration: texts are tokenized once
(no second BOS for chat-templated texts that already start with one), checked
against the model's position limit, padded on either side, and each text's last
real positions located, so every caller reads the same tokens.

Example:
    ids = encode(model, ["Hello there", "Hi"])
    batches = plan_batches(ids, batch_size=32, pad_id=model.tokenizer.pad_token_id, side="left", tokens=1)
    batches[0].last_positions          # [b, tokens]
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor, nn


@dataclass
class Batch:
    """Padded inputs of some texts plus where their last real tokens are."""

    text_index: Int[Tensor, " b"]  # index into the caller's flat text list
    input_ids: Int[Tensor, "b seq"]
    attention_mask: Int[Tensor, "b seq"]
    position_ids: Int[Tensor, "b seq"]
    last_positions: Int[Tensor, "b tokens"]

    def model_inputs(self, device: torch.device | str = "cpu") -> dict[str, Tensor]:
        """The forward's keyword inputs (nnsight moves them to the model's device itself)."""
        return {
            "input_ids": self.input_ids.to(device),
            "attention_mask": self.attention_mask.to(device),
            "position_ids": self.position_ids.to(device),
        }


def check_batch_size(batch_size: Any, name: str = "batch_size") -> int:
    """``batch_size`` as an int ≥ 1, or a clear error."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"{name}={batch_size!r}: give a whole number of texts per forward pass, at least 1 (e.g. 16).")
    return int(batch_size)


def tokenize(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Token ids per text; no second BOS for texts that already start with one (chat templates)."""
    bos = getattr(tokenizer, "bos_token", None)
    ids = []
    for text in texts:
        add_special = not (bos and text.startswith(bos))
        ids.append(tokenizer(text, add_special_tokens=add_special)["input_ids"])
    return ids


def position_limit(model: Any) -> tuple[int | None, bool]:
    """The longest input the model takes, and whether going past it is an error (learned
    absolute position embeddings, as in GPT-2) or only out of its training range (RoPE)."""
    from .sublayers import config_of, unwrap

    config = config_of(model)
    limit = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
    if limit is None:
        return None, False
    learned = any(
        isinstance(module, nn.Embedding) and module.num_embeddings == limit
        for name, module in unwrap(model).named_modules()
        if name.rsplit(".", 1)[-1] in ("wpe", "embed_positions", "position_embeddings")
    )
    return int(limit), learned


warned_long_inputs: set[tuple[int, int]] = set()


def check_lengths(model: Any, token_ids: Sequence[Sequence[int]], texts: Sequence[str], extra: int = 0) -> None:
    """Refuse inputs longer than a model with learned positions can take; warn (once) past a RoPE
    model's trained range. ``extra`` counts tokens still to be generated."""
    limit, hard = position_limit(model)
    if limit is None or not token_ids:
        return
    longest = max(range(len(token_ids)), key=lambda i: len(token_ids[i]))
    length = len(token_ids[longest]) + extra
    if length <= limit:
        return
    what = f"text {longest} ({length} tokens{' with the generated ones' if extra else ''}: {texts[longest][:60]!r}...)"
    if hard:
        raise ValueError(
            f"{what} is longer than this model's {limit} positions (learned position embeddings cannot go "
            "further). Shorten the texts, or truncate them, e.g. keep the last tokens."
        )
    key = (id(model), limit)
    if key not in warned_long_inputs:
        warned_long_inputs.add(key)
        warnings.warn(
            f"{what} is longer than the {limit} positions this model was trained on; its states there may not be meaningful.", stacklevel=3
        )


def encode(model: Any, texts: Sequence[str], extra: int = 0) -> list[list[int]]:
    """`tokenize` with ``model.tokenizer`` plus `check_lengths`."""
    ids = tokenize(model.tokenizer, texts)
    check_lengths(model, ids, texts, extra)
    return ids


def pad_batch(token_ids: list[list[int]], text_index: list[int], pad_id: int, side: str, tokens: int) -> Batch:
    """Pad to a common length on ``side`` and locate each text's last ``tokens`` real positions."""
    lengths = torch.tensor([len(ids) for ids in token_ids])
    width = int(lengths.max())
    input_ids = torch.full((len(token_ids), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(token_ids), width), dtype=torch.long)
    starts = width - lengths if side == "left" else torch.zeros_like(lengths)
    for row, ids in enumerate(token_ids):
        start = int(starts[row])
        input_ids[row, start : start + len(ids)] = torch.tensor(ids)
        attention_mask[row, start : start + len(ids)] = 1
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    ends = starts + lengths
    last_positions = ends[:, None] - tokens + torch.arange(tokens)[None, :]
    return Batch(torch.tensor(text_index), input_ids, attention_mask, position_ids, last_positions)


def plan_batches(token_ids: list[list[int]], batch_size: int, pad_id: int, side: str, tokens: int) -> list[Batch]:
    """Batches of texts of similar length (less padding), covering every text once."""
    order = sorted(range(len(token_ids)), key=lambda i: len(token_ids[i]))
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    return [pad_batch([token_ids[i] for i in chunk], chunk, pad_id, side, tokens) for chunk in chunks]
