"""What steerscope knows about a model, worked out once: a `ModelHandle`.

Every function that takes a model needs the same facts: the torch module behind an
nnsight wrapper, the architecture family, how many decoder blocks it has, which
sublayer kinds exist, the model's id and its tokenizer, and where each (layer, kind)
lives. `model_handle(model)` computes them the first time a model is seen (`probes.load_model`
and `probes.wrap` do it at load) and keeps them for as long as the model lives, so a
sweep over 30 layers and 10 kinds resolves each fact once instead of once per call.
`probes.sublayers` answers from it; where the weights are (here or on NDIF) is asked
of `probes.remote`, since it can change after loading.

Example:
    >>> from transformers import GPT2Config, GPT2LMHeadModel
    >>> model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64))
    >>> handle = model_handle(model)
    >>> handle.family.name, handle.n_layers, handle.kinds
    ('gpt2', 2, ('resid', 'attn', 'mlp', 'q', 'k', 'v', 'o', 'up', 'down'))
    >>> model_handle(model) is handle          # computed once
    True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from weakref import WeakKeyDictionary

from torch import nn

from . import tracing
from .families import KINDS, QKV, Family, detect_family, has_submodule


@dataclass
class ModelHandle:
    """The resolved facts of one model (see the module docstring)."""

    module: nn.Module  # the transformers model (behind the nnsight wrapper, if any)
    family: Family | None  # None: an architecture steerscope has no table for (explicit module paths still work)
    n_layers: int | None
    kinds: tuple[str, ...]  # the sublayer kinds this architecture has, in canonical order
    tokenizer: Any = None
    sublayers: dict[tuple[int, str], Any] = field(default_factory=dict, repr=False)  # filled by probes.sublayers.resolve

    @property
    def model_id(self) -> str | None:
        """``config.name_or_path`` (what saved files record as the model), read live: a user may rename it."""
        return getattr(getattr(self.module, "config", None), "name_or_path", None) or None


handles: WeakKeyDictionary[nn.Module, ModelHandle] = WeakKeyDictionary()


def model_handle(model: Any) -> ModelHandle:
    """The `ModelHandle` of ``model`` (an nnsight model, a transformers model, or a handle), computed once."""
    if isinstance(model, ModelHandle):
        return model
    module = tracing.torch_module(model)
    handle = handles.get(module)
    if handle is None:
        handle = resolve_handle(module)
        handles[module] = handle
    if handle.tokenizer is None:
        handle.tokenizer = getattr(model, "tokenizer", None)
    return handle


def resolve_handle(module: nn.Module) -> ModelHandle:
    family = detect_family(module)
    if family is None:
        return ModelHandle(module, None, None, ())
    block = f"{family.layers}.0"
    kinds = tuple(
        kind
        for kind in KINDS
        if (kind in QKV and family.fused_qkv is not None)
        or (kind in family.paths and has_submodule(module, f"{block}.{family.paths[kind]}".rstrip(".")))
    )
    blocks = module.get_submodule(family.layers)
    return ModelHandle(module, family, len(blocks) if isinstance(blocks, nn.ModuleList) else sum(1 for _ in blocks.children()), kinds)
