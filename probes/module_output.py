"""A module's output as steering sees it: the hidden state out of it, and an edited one back in.

Attention blocks return tuples whose first item is the hidden state; MLPs and
projections return the tensor itself. Every hook, adapter and predictor that reads or
rewrites a module's hidden state goes through these two functions (an nnsight block that
travels to NDIF spells the tuple test inline instead: only torch may run there). A
change to one slice of a fused q/k/v output is placed by `probes.sublayers.Sublayer.place`
(`probes.families.FusedSlice.place`).

Example:
    >>> import torch
    >>> out = (torch.ones(1, 2, 4), "attention weights")
    >>> module_hidden(out).shape
    torch.Size([1, 2, 4])
    >>> edit_hidden(out, lambda h: h * 2)[0][0, 0].tolist(), edit_hidden(out, lambda h: h)[1]
    ([2.0, 2.0, 2.0, 2.0], 'attention weights')
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor


def module_hidden(output: Any) -> Tensor:
    """The hidden-state tensor of a module output (attention blocks return tuples)."""
    return output[0] if isinstance(output, (tuple, list)) else output


def edit_hidden(output: Any, edit: Callable[[Tensor], Tensor]) -> Any:
    """``output`` with its hidden state replaced by ``edit(hidden)`` (a tuple keeps its other items)."""
    if isinstance(output, tuple):
        return (edit(output[0]), *output[1:])
    return edit(output)
