"""A PEFT LoRA adapter with the same handle as InnerPiSSA (``coeff(c)``), for the ReprPO baseline.

``c`` scales the LoRA update (``scaling = c · alpha / r``), so c = 0 is exactly the base
model and −c reverses the update, as for InnerPiSSA. LoRA layers replace the target
modules in place (PEFT's ``inject_adapter_in_model``); `LoraHandle.detach` puts the
original modules back.

Example:
    >>> lora = attach_lora(model, layers=range(8, 22, 2), kinds=("o", "down"), rank=16)
    >>> steering.train_reprpo(model, lora, pairs, steps=20)
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from probes import sublayers as sl
from probes.remote import require_weights

from .frozen import freeze, release
from .intervene import Coeff


class LoraHandle:
    def __init__(self, model: Any, paths: list[str], rank: int, alpha: float):
        self.model = model
        self.paths = paths
        self.rank = rank
        self.alpha = alpha
        self.c: Coeff = 0.0
        self.sign = 1.0
        self.apply()

    def lora_layers(self) -> list[nn.Module]:
        return [sl.get_module(self.model, path) for path in self.paths]

    def apply(self) -> None:
        c = self.c
        value = c if not torch.is_tensor(c) or c.ndim == 0 else c.reshape(-1, 1, 1)
        for layer in self.lora_layers():
            layer.scaling["default"] = value * self.sign * self.alpha / self.rank

    def set_coeff(self, c: Coeff) -> None:
        self.c = c
        self.apply()

    @contextmanager
    def coeff(self, c: Coeff) -> Iterator["LoraHandle"]:
        previous = self.c
        self.set_coeff(c)
        try:
            yield self
        finally:
            self.set_coeff(previous)

    def flip_sign(self) -> None:
        self.sign = -self.sign
        self.apply()

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for layer in self.lora_layers() for name, p in layer.named_parameters() if "lora_" in name]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.trainable_parameters())

    def detach(self) -> None:
        """Put the original modules back and restore the requires_grad flags (once every adapter
        on this model is detached, in any order)."""
        torch_model = sl.unwrap(self.model)
        for path in self.paths:
            parent_path, _, name = path.rpartition(".")
            parent = torch_model.get_submodule(parent_path)
            setattr(parent, name, getattr(parent, name).base_layer)
        release(self.model, self)


def attach_lora(model: Any, layers: Any, kinds: Sequence[str], rank: int = 16, alpha: float | None = None, seed: int = 0) -> LoraHandle:
    """Inject PEFT LoRA layers at the (layer, kind) projections; only they train."""
    require_weights(model, "A PEFT LoRA adapter")
    from peft import LoraConfig, inject_adapter_in_model

    paths = [sl.resolve(model, layer, kind).weight_path for layer in sl.resolve_layers(model, layers) for kind in kinds]
    if any(p is None for p in paths):
        raise ValueError("LoRA adapts weights: use projection kinds such as 'o', 'down', 'up'.")
    torch.manual_seed(seed)
    torch_model = sl.unwrap(model)
    owner = object()  # freeze before injecting, so the LoRA parameters are not among the base ones
    freeze(model, owner)
    alpha = float(alpha if alpha is not None else rank)
    try:
        inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=paths), torch_model)
        for layer in (torch_model.get_submodule(path) for path in paths):
            for name, parameter in layer.named_parameters():
                parameter.requires_grad_("lora_" in name)
        handle = LoraHandle(model, paths, rank, alpha)
        freeze(model, handle)
    finally:
        release(model, owner)
    return handle
