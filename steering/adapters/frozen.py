"""Freezing a model's own parameters while adapters are attached, for any number of adapters.

The first adapter attached to a model records every base parameter's
``requires_grad`` flag and turns them all off (only adapters train); later
adapters join; the flags come back exactly when the last one detaches, in any
order. Parameters added by adapters themselves are left alone.

Example:
    freeze(model, adapter_a); freeze(model, adapter_b)
    release(model, adapter_a)      # still frozen: adapter_b is attached
    release(model, adapter_b)      # every flag as before the first freeze
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from weakref import WeakKeyDictionary

from torch import nn

from probes.sublayers import unwrap


@dataclass
class FrozenState:
    flags: dict[int, tuple[nn.Parameter, bool]]  # id(parameter) -> (parameter, requires_grad before)
    owners: list[int] = field(default_factory=list)  # id() of the adapters holding the freeze


frozen_models: WeakKeyDictionary[nn.Module, FrozenState] = WeakKeyDictionary()


def freeze(model: Any, owner: object) -> None:
    """Turn off ``requires_grad`` on every base parameter of ``model`` on behalf of ``owner``."""
    torch_model = unwrap(model)
    state = frozen_models.get(torch_model)
    if state is None:
        state = FrozenState({id(p): (p, p.requires_grad) for p in torch_model.parameters()})
        frozen_models[torch_model] = state
        for parameter, _ in state.flags.values():
            parameter.requires_grad_(False)
    if id(owner) not in state.owners:
        state.owners.append(id(owner))


def release(model: Any, owner: object) -> None:
    """Drop ``owner``'s freeze; restore the recorded flags when no adapter holds one any more."""
    torch_model = unwrap(model)
    state = frozen_models.get(torch_model)
    if state is None or id(owner) not in state.owners:
        return
    state.owners.remove(id(owner))
    if not state.owners:
        for parameter, flag in state.flags.values():
            parameter.requires_grad_(flag)
        del frozen_models[torch_model]


def is_frozen(model: Any) -> bool:
    return unwrap(model) in frozen_models
