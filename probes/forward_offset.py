"""Where a model forward starts in its sequence, whichever transformers release made the call.

A pre-hook on a causal LM sees one forward's arguments. During ``generate`` with the KV cache
each forward holds only the new column(s), so the absolute position of its first column (its
*offset*) has to be read from the call. transformers has spelt that differently over releases:

- ``cache_position`` (4.38 – 5.2x): the absolute positions of this forward's columns;
- the cache object, as ``past_key_values`` (4.x), ``cache`` (5.24+, with ``position_ids`` and no
  ``cache_position``), ``cache_params`` or ``layer_past``: its length is the number of columns
  already processed; a legacy tuple of ``(key, value)`` tensors counts its sequence axis;
- ``attention_mask`` wider than the inputs: it covers the cached columns too;
- ``position_ids``: the largest position of the first column (a row without left padding
  starts at the absolute offset; padded rows start lower).

`forward_offset` tries them in that order and returns 0 for a call that has none of them (a
plain forward over a whole sequence). It is the only place that knows these names, so a new
release is adapted here, once (tests in ``tests/test_forward_offset.py`` cover each form).

Example:
    >>> import torch
    >>> forward_offset({"cache_position": torch.tensor([7])})
    7
    >>> forward_offset({"input_ids": torch.zeros(2, 1), "attention_mask": torch.ones(2, 12)})
    11
    >>> forward_offset({"position_ids": torch.tensor([[11], [2]])})
    11
    >>> forward_offset({})
    0
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

CACHE_NAMES = ("cache", "past_key_values", "cache_params", "past_key_value", "layer_past")


def cached_length(cache: Any) -> int | None:
    """The number of columns a KV cache holds (None when ``cache`` is not one steerscope can read)."""
    if hasattr(cache, "get_seq_length"):
        return int(cache.get_seq_length())
    if isinstance(cache, tuple | list):  # legacy ((key, value), ...) with keys [batch, heads, seq, head_dim]
        if len(cache) == 0:
            return 0
        first = cache[0]
        key = first[0] if isinstance(first, tuple | list) and len(first) > 0 else first
        return int(key.shape[-2]) if isinstance(key, Tensor) and key.ndim >= 2 else None
    return None


def call_inputs(args: tuple, kwargs: dict[str, Any]) -> Tensor | None:
    """The token ids (or input embeddings) of a causal LM call: ``[batch, seq]`` or ``[batch, seq, d]``."""
    ids = kwargs.get("input_ids", args[0] if args else None)
    return ids if ids is not None else kwargs.get("inputs_embeds")


def forward_offset(kwargs: dict[str, Any], args: tuple = ()) -> int:
    """The absolute position of the first column of a forward called with ``args``/``kwargs``."""
    cache_position = kwargs.get("cache_position")
    if cache_position is not None:
        return int(cache_position.reshape(-1)[0])
    for name in CACHE_NAMES:
        cache = kwargs.get(name)
        if cache is not None and (length := cached_length(cache)) is not None:
            return length
    inputs, mask = call_inputs(args, kwargs), kwargs.get("attention_mask")
    if inputs is not None and isinstance(mask, Tensor) and mask.ndim == 2:
        return max(int(mask.shape[1]) - int(inputs.shape[1]), 0)
    position_ids = kwargs.get("position_ids")
    if isinstance(position_ids, Tensor) and position_ids.numel() > 0:
        return int(position_ids.reshape(-1, position_ids.shape[-1])[:, 0].max())
    return 0
