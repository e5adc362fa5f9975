"""A PEFT LoRA adapter behind the same handle as InnerPiSSA, for the ReprPO baseline.

``c`` scales the LoRA update (``scaling = c · sign · alpha / r``, one value per row
allowed), so c = 0 is exactly the base model and −c reverses the update, as for
InnerPiSSA. LoRA layers replace the target modules in place (PEFT's
``inject_adapter_in_model``); `LoraHandle.detach` puts the original modules back.

Example:
    lora = attach_lora(model, layers=range(8, 22, 2), kinds=("o", "down"), rank=16)
    steering.train_reprpo(model, lora, pairs, steps=20)
    lora.save("runs/lora"); lora.detach(); lora = load_lora("runs/lora", model)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from probes import sublayers as sl
from probes.files import read_json, write_atomic, write_json
from probes.remote import require_weights

from ..recorded_model import check_weights, weights_record
from ..steerable import STEERABLE_FILE, register_loader
from .base import AdapterHandle, PeftFactors
from .frozen import freeze, release
from .peft_folders import export_peft


class LoraHandle(AdapterHandle):
    def __init__(self, model: Any, layers: list[int], kinds: list[str], paths: list[str], rank: int, alpha: float):
        super().__init__(model, "LoRA")
        self.layers, self.kinds, self.paths = layers, kinds, paths
        self.rank = rank
        self.alpha = alpha
        self._apply_coeff()

    def lora_layers(self) -> list[Any]:  # PEFT LoRA layers (their ``scaling`` is a dict)
        return [sl.get_module(self.model, path) for path in self.paths]

    def _apply_coeff(self) -> None:
        c = self.c
        value: Any = c if not isinstance(c, torch.Tensor) or c.ndim == 0 else c.reshape(-1, 1, 1)
        for layer in self.lora_layers():
            layer.scaling["default"] = value * self.sign * self.alpha / self.rank

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for layer in self.lora_layers() for name, p in layer.named_parameters() if "lora_" in name]

    def _remove(self) -> None:
        """Put the original modules back."""
        torch_model = sl.unwrap(self.model)
        for path in self.paths:
            parent_path, _, name = path.rpartition(".")
            parent = torch_model.get_submodule(parent_path)
            setattr(parent, name, getattr(parent, name).base_layer)
        if hasattr(torch_model, "peft_config"):  # PEFT's record of injected adapters: none are left
            del torch_model.peft_config

    def adapted_layers(self) -> list[int]:
        return sorted(set(self.layers))

    def peft_alpha(self) -> float | None:
        return self.alpha

    def peft_factors(self, c: float) -> dict[str, PeftFactors]:
        """Weight path -> ``(A, B · c · sign)`` (PEFT's scaling alpha / r is kept)."""
        found = {}
        for path, layer in zip(self.paths, self.lora_layers(), strict=True):
            A = layer.lora_A["default"].weight.detach()
            B = layer.lora_B["default"].weight.detach() * (float(c) * self.sign)
            found[path] = (A, B)
        return found

    def save(self, path: str | Path) -> Path:
        """``lora.safetensors`` (the LoRA weights by module path) and ``steerable.json``, and the same
        adapter at c = 1 as a PEFT folder (``adapter_config.json``, ``adapter_model.safetensors``, `export_peft`)."""
        path = Path(path)
        tensors = {
            f"{p}/{name}": t.detach().contiguous().cpu()
            for p in self.paths
            for name, t in sl.get_module(self.model, p).named_parameters()
            if "lora_" in name
        }
        write_atomic(path / "lora.safetensors", lambda temporary: save_file(tensors, str(temporary)))
        write_json(
            path / STEERABLE_FILE,
            {"type": "lora", "layers": self.layers, "kinds": self.kinds, "rank": self.rank, "alpha": self.alpha, "sign": self.sign}
            | weights_record(self.model, self.paths),
        )
        export_peft(self, path, c=1.0)  # the same folder is a PEFT LoRA adapter at c = 1
        return path


def attach_lora(model: Any, layers: Any, kinds: Sequence[str], rank: int = 16, alpha: float | None = None, seed: int = 0) -> LoraHandle:
    """Inject PEFT LoRA layers at the (layer, kind) projections; only they train."""
    require_weights(model, "A PEFT LoRA adapter")
    if isinstance(rank, bool) or not isinstance(rank, numbers.Integral) or rank < 1:
        raise ValueError(f"rank={rank!r}: give a whole number ≥ 1 (the LoRA update's rank, e.g. 16).")
    if alpha is not None and (isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not math.isfinite(alpha) or alpha <= 0):
        raise ValueError(f"alpha={alpha!r}: give a finite number > 0 (the update is scaled by alpha / rank), or None for alpha = rank.")
    rank = int(rank)
    from peft import LoraConfig, inject_adapter_in_model

    kinds = [kinds] if isinstance(kinds, str) else list(kinds)
    layer_ids = sl.resolve_layers(model, layers)
    found = [sl.resolve(model, layer, kind).weight_path for layer in layer_ids for kind in kinds]
    paths = [path for path in found if path is not None]
    if len(paths) != len(found):
        raise ValueError("LoRA adapts weights: use projection kinds such as 'o', 'down', 'up'.")
    taken = [path for path in paths if hasattr(sl.get_module(model, path), "base_layer")]
    if taken:
        raise ValueError(
            f"{', '.join(taken)} already carries a LoRA adapter (a second one would take over its weights): "
            "detach that adapter first, or choose other layers or kinds."
        )
    torch.manual_seed(seed)
    torch_model = sl.unwrap(model)
    owner = object()  # freeze before injecting, so the LoRA parameters are not among the base ones
    freeze(model, owner)
    alpha = float(alpha if alpha is not None else rank)
    try:
        inject_adapter_in_model(
            LoraConfig(
                r=rank,
                lora_alpha=alpha,
                lora_dropout=0.0,
                target_modules=paths,
            ),
            torch_model,
        )
        for layer in (torch_model.get_submodule(path) for path in paths):
            for name, parameter in layer.named_parameters():
                parameter.requires_grad_("lora_" in name)
        handle = LoraHandle(model, layer_ids, kinds, paths, rank, alpha)
        freeze(model, handle)
    finally:
        release(model, owner)
    return handle


@register_loader("lora", example=lambda model: attach_lora(model, [sl.n_layers(model) - 1], ("o", "up"), rank=2))
def load_lora(path: str | Path, model: Any) -> LoraHandle:
    """Attach a saved LoRA adapter to ``model`` (a failed load leaves the model as it was), after checking it
    was saved for this model's weights (`steering.recorded_model`)."""
    path = Path(path)
    record = read_json(path / STEERABLE_FILE, "a saved LoRA adapter")
    check_weights(record, model, path, "LoRA adapter")
    handle = attach_lora(model, record["layers"], record["kinds"], record["rank"], record["alpha"])
    try:
        tensors = load_file(str(path / "lora.safetensors"))
        with torch.no_grad():
            for key, value in tensors.items():
                module_path, _, name = key.partition("/")
                dict(sl.get_module(model, module_path).named_parameters())[name].copy_(value)
        handle.sign = float(record["sign"])
        handle._apply_coeff()
    except BaseException:
        handle.detach()
        raise
    return handle
