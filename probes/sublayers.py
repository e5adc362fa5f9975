"""Which module of which architecture is a given (layer, sublayer kind).

One table maps the kind names to module paths per architecture family:

=========  =====================================================================
``resid``  output of decoder block L (the residual stream after the block)
``attn``   attention block output (what it adds to the residual stream)
``mlp``    MLP block output
``q k v``  outputs of the query/key/value projections (split from a fused
           ``c_attn`` / ``query_key_value`` where the model fuses them)
``o``      output of the attention output projection
``gate``   output of the MLP gate projection (gated MLPs only)
``up``     output of the MLP up projection
``down``   output of the MLP down projection
=========  =====================================================================

A kind can also be an explicit dotted module path, with ``{layer}`` where the
layer index goes: ``"model.layers.{layer}.mlp.act_fn"``.

Example:
    from probes import sublayers
    sublayers.available_kinds(model)
    # ('resid', 'attn', 'mlp', 'q', 'k', 'v', 'o', 'gate', 'up', 'down')
    sublayers.resolve(model, 3, "up").path
    # 'model.layers.3.mlp.up_proj'
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from . import tracing
from .families import KINDS, QKV, Family, FusedSlice
from .model_handle import model_handle
from .module_output import module_hidden


@dataclass(frozen=True)
class Sublayer:
    """A resolved (layer, kind): the module whose output is read, and how."""

    layer: int
    kind: str
    path: str  # dotted path of the module whose output is read
    fused: FusedSlice | None = None
    weight_path: str | None = None  # module whose weight is this sublayer's linear map

    def select(self, output: Any) -> Float[Tensor, "... d"]:
        """The sublayer's activations from its module's raw output (tuple or tensor)."""
        return self.split(module_hidden(output))

    def place(self, features: Float[Tensor, "... d"]) -> Float[Tensor, "... f"]:
        """``features`` (this sublayer's) placed in its module's output: float32, zeros outside the
        slice of a fused q/k/v module (`select`'s inverse for a change)."""
        features = features.float()
        if self.fused is None:
            return features
        return self.fused.place(features, like=features.new_zeros(*features.shape[:-1], 3 * features.shape[-1]))

    def split(self, hs: Float[Tensor, "... f"]) -> Float[Tensor, "... d"]:
        """This sublayer's features of a module output tensor (its q/k/v slice if fused)."""
        return self.fused.features(hs) if self.fused is not None else hs


def unwrap(model: Any) -> Any:
    """The plain torch module behind an nnsight model (or the module itself); public as `probes.torch_module`.

    Example:
        ids = probes.torch_module(model).generate(**inputs, max_new_tokens=20)
    """
    return tracing.torch_module(model)


def config_of(model: Any):
    return unwrap(model).config


def get_module(model: Any, path: str) -> Any:
    return unwrap(model).get_submodule(path)


def has_module(model: Any, path: str) -> bool:
    try:
        get_module(model, path)
        return True
    except AttributeError:
        return False


def family_of(model: Any) -> Family:
    """The architecture family of ``model``, by ``model_type`` or by its module names."""
    family = model_handle(model).family
    if family is None:
        model_type = getattr(config_of(model), "model_type", None)
        raise ValueError(
            f"steerscope does not know the module layout of model_type={model_type!r}. "
            "Pass explicit dotted module paths with a {layer} placeholder as sublayers, "
            "e.g. sublayers=['model.layers.{layer}.mlp']."
        )
    return family


def n_layers(model: Any) -> int:
    family_of(model)  # a clear error for an unknown architecture
    return model_handle(model).n_layers or 0


def available_kinds(model: Any) -> tuple[str, ...]:
    """The sublayer kinds this model's architecture has, in canonical order."""
    family_of(model)
    return model_handle(model).kinds


def aliases(model: Any, kinds: Iterable[str]) -> dict[str, str]:
    """Kinds among ``kinds`` that read the same states as another of them: ``{alias: the kind kept}``.

    A block-output kind whose output *is* a projection's output (``attn`` = ``o``, ``mlp`` = ``down``
    in every supported family: the block returns the projection's output unchanged, dropout aside)
    is an alias of that projection, which is kept because it has a weight basis. Capturing both
    is harmless; dosing both doses one place twice.

    Example:
        sublayers.aliases(model, ("resid", "attn", "o", "mlp"))
        # {'attn': 'o'}
    """
    kinds = [k for k in kinds if isinstance(k, str)]
    available = set(available_kinds(model))
    weight_of = family_of(model).weight_of
    return {block: kept for block, kept in weight_of.items() if block in kinds and kept in kinds and {block, kept} <= available}


def resolve_layers(model: Any, layers: int | Iterable[int] | range | str) -> list[int]:
    """Normalise ``layers`` (int, negative int, range, list or ``"all"``) to sorted indices."""
    total = n_layers(model)
    if isinstance(layers, str):
        if layers != "all":
            raise ValueError(f"layers={layers!r}: use an int, a list or range of ints, or 'all'.")
        return list(range(total))
    items: list[Any]
    if isinstance(layers, numbers.Integral) and not isinstance(layers, bool):
        items = [layers]
    else:
        try:
            items = list(layers)  # type: ignore[arg-type]
        except TypeError:
            raise ValueError(f"layers={layers!r}: use an int, a list or range of ints, or 'all'.") from None
    if not items:
        raise ValueError("layers is empty: pass at least one layer index, a range, or 'all'.")
    resolved: set[int] = set()
    for item in items:
        if isinstance(item, bool) or not isinstance(item, numbers.Integral):
            raise ValueError(f"layer {item!r} is not a whole number; pass ints (numpy ints are fine), a range, or 'all'.")
        layer = int(item)
        if not -total <= layer < total:
            raise ValueError(
                f"layer {layer} is out of range for a model with {total} layers "
                f"(valid: 0..{total - 1}, or -{total}..-1 counting from the end)."
            )
        resolved.add(layer % total)
    return sorted(resolved)


def resolve(model: Any, layer: int, kind: str) -> Sublayer:
    """Resolve (layer, kind) to the module path to read and how to read it (once per model: `probes.model_handle`).

    ``kind`` is one of `KINDS` or a dotted module path template containing ``{layer}``.
    """
    known = model_handle(model).sublayers
    key = (layer, kind) if type(layer) is int and isinstance(kind, str) else None
    if key in known:
        return known[key]
    sublayer = resolve_sublayer(model, layer, kind)
    if key is not None:
        known[key] = sublayer
    return sublayer


def resolve_sublayer(model: Any, layer: int, kind: str) -> Sublayer:
    family = family_of(model)
    layer = resolve_layers(model, layer)[0]
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"kind={kind!r}: use a sublayer kind such as 'resid', 'o' or 'down', or a dotted module path.")
    if "." in kind or "{layer}" in kind:
        path = kind.format(layer=layer)
        if not has_module(model, path):
            raise ValueError(f"No module at {path!r} (from sublayer template {kind!r}).")
        return Sublayer(layer=layer, kind=kind, path=path, weight_path=path)
    kinds = available_kinds(model)
    if kind not in kinds:
        unknown = "an unknown sublayer kind" if kind not in KINDS else f"a kind the {family.name} architecture lacks"
        raise ValueError(
            f"{kind!r} is {unknown}. This model has: {', '.join(kinds)}; or pass a dotted module path such as 'model.layers.{{layer}}.mlp'."
        )
    block = f"{family.layers}.{layer}"
    if kind in QKV and family.fused_qkv is not None:
        n_heads = config_of(model).num_attention_heads
        fused = FusedSlice(index=QKV.index(kind), layout=family.fused_layout, n_heads=n_heads)
        path = f"{block}.{family.fused_qkv}"
        return Sublayer(layer=layer, kind=kind, path=path, fused=fused, weight_path=path)
    path = f"{block}.{family.paths[kind]}".rstrip(".")
    weight_kind = family.weight_of.get(kind, kind)
    weight_path = f"{block}.{family.paths[weight_kind]}" if weight_kind in family.paths and kind != "resid" else None
    return Sublayer(layer=layer, kind=kind, path=path, weight_path=weight_path)


def output_width(model: Any, sublayer: Sublayer) -> int | None:
    """Features of the sublayer's output: its weight's rows, the hidden size for block outputs,
    None where it cannot be known without a forward (a module path with no weight)."""
    if sublayer.kind in ("resid", "attn", "mlp"):
        return int(getattr(config_of(model), "hidden_size", None) or config_of(model).n_embd)
    if sublayer.weight_path is not None:
        module = get_module(model, sublayer.weight_path)
        if isinstance(getattr(module, "weight", None), torch.Tensor) and module.weight.ndim == 2:
            return weight_matrix(model, sublayer).shape[0]
    return None


def weight_path_of(sublayer: Sublayer) -> str:
    """The path of the module whose weight is this sublayer's linear map, or a clear error when it has none."""
    if sublayer.weight_path is None:
        raise ValueError(
            f"{sublayer.kind!r} at layer {sublayer.layer} has no weight of its own (the residual "
            "stream is a sum of many writes). Use the basis of a sublayer that writes to it, "
            f"e.g. weight_svd(model, {sublayer.layer}, 'o') or weight_svd(model, {sublayer.layer}, 'down')."
        )
    return sublayer.weight_path


def weight_matrix(model: Any, sublayer: Sublayer) -> Float[Tensor, "d_out d_in"]:
    """The sublayer's linear map as a ``[d_out, d_in]`` matrix (``y = W x + b``).

    Handles GPT-2's ``Conv1D`` (stored ``[d_in, d_out]``) and slices fused q/k/v.
    """
    module = get_module(model, weight_path_of(sublayer))
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.ndim != 2:
        raise ValueError(f"Module {sublayer.weight_path!r} ({type(module).__name__}) has no 2-D weight.")
    matrix = weight.T if type(module).__name__ == "Conv1D" else weight
    if sublayer.fused is not None:
        matrix = sublayer.fused.rows(matrix)
    return matrix.detach()
