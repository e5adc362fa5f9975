"""A module's output as steering sees it: the hidden state out of it, and an edited one back in.

Attention blocks return tuples whose first item is the hidden state; MLPs and
projections return the tensor itself. A fused q/k/v projection (GPT-2 ``c_attn``,
GPT-NeoX ``query_key_value``) writes q, k and v side by side, so a change to one of
them is placed in its slice of the fused output with zeros elsewhere. Every hook,
adapter and predictor that reads or rewrites a module's hidden state goes through
these four functions (an nnsight block that travels to NDIF spells the tuple test
inline instead: only torch may run there).

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
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

if TYPE_CHECKING:
    from .sublayers import FusedSlice, Sublayer


def module_hidden(output: Any) -> Tensor:
    """The hidden-state tensor of a module output (attention blocks return tuples)."""
    return output[0] if isinstance(output, (tuple, list)) else output


def edit_hidden(output: Any, edit: Callable[[Tensor], Tensor]) -> Any:
    """``output`` with its hidden state replaced by ``edit(hidden)`` (a tuple keeps its other items)."""
    if isinstance(output, tuple):
        return (edit(output[0]), *output[1:])
    return edit(output)


def fused_delta(hs: Float[Tensor, "... f3"], fused: FusedSlice, step: Tensor) -> Float[Tensor, "... f3"]:
    """A zero tensor shaped like the fused q/k/v output ``hs`` with ``step`` in ``fused``'s slice.

    Example:
        >>> import torch
        >>> from probes.sublayers import FusedSlice
        >>> fused_delta(torch.zeros(6), FusedSlice(1, "concat", 1), torch.ones(2)).tolist()
        [0.0, 0.0, 1.0, 1.0, 0.0, 0.0]
    """
    parts = [torch.zeros_like(hs[..., : hs.shape[-1] // 3]) for _ in range(3)]
    parts[fused.index] = step.expand_as(parts[fused.index]).to(hs.dtype)
    if fused.layout == "concat":
        return torch.cat(parts, dim=-1)
    per_head = [p.unflatten(-1, (fused.n_heads, -1)) for p in parts]
    return torch.cat(per_head, dim=-1).flatten(-2)


def in_output(sublayer: Sublayer, features: Float[Tensor, "... d"]) -> Tensor:
    """``features`` (a sublayer's, in the last dimension) placed in its module's output: float32, zeros
    outside the slice of a fused q/k/v module."""
    features = features.float()
    if sublayer.fused is None:
        return features
    return fused_delta(features.new_zeros(*features.shape[:-1], 3 * features.shape[-1]), sublayer.fused, features)
