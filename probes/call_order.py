"""The order in which a model's modules finish in a forward pass.

nnsight serves module outputs in the order the forward produces them, so a trace
that reads several modules must ask for them in that order. The order is
recorded once per model, for every module at once, by a two-token forward with
plain forward hooks (a hook fires when its module returns); a module tree that
changed since (an adapter injected new modules) is recorded again.

Example:
    execution_order(model, ["model.layers.3", "model.layers.3.self_attn.o_proj"])
    # ['model.layers.3.self_attn.o_proj', 'model.layers.3']
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from weakref import WeakKeyDictionary

import torch
from torch import nn

from .sublayers import unwrap

recorded_orders: WeakKeyDictionary[nn.Module, dict[str, int]] = WeakKeyDictionary()


def record_call_order(model: Any) -> dict[str, int]:
    """Position of every module's first return in a two-token forward (the root excluded)."""
    torch_model = unwrap(model)
    finished: dict[str, int] = {}

    def hook_for(path: str):
        def hook(*_: Any) -> None:  # returns None: the module's output is left as it is
            finished.setdefault(path, len(finished))

        return hook

    handles = [module.register_forward_hook(hook_for(path)) for path, module in torch_model.named_modules() if path]
    try:
        device = next(torch_model.parameters()).device
        with torch.inference_mode():
            torch_model(input_ids=torch.zeros((1, 2), dtype=torch.long, device=device))
    finally:
        for handle in handles:
            handle.remove()
    return finished


def execution_order(model: Any, paths: Iterable[str]) -> list[str]:
    """``paths`` sorted by when their modules finish in a forward pass."""
    wanted = list(dict.fromkeys(paths))
    torch_model = unwrap(model)
    order = recorded_orders.get(torch_model)
    if order is None or any(path not in order for path in wanted):
        order = record_call_order(model)
        recorded_orders[torch_model] = order
    never = [path for path in wanted if path not in order]
    if never:
        raise ValueError(f"These modules never run in a forward pass, so nothing can be read from them: {never}.")
    return sorted(wanted, key=order.__getitem__)
