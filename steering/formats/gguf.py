"""Directions other tools can load: safetensors with metadata, and GGUF control vectors.

A GGUF control vector (llama.cpp ``--control-vector``, repeng ``ControlVector.import_gguf``)
has ``general.architecture = controlvector``, ``controlvector.model_hint`` and
``controlvector.layer_count``, and one float32 tensor ``direction.{L}`` per layer,
added (times the user's scale) to the output of block ``L``: the same layer
numbering as steerscope's ``resid`` kind. llama.cpp never steers block 0, so a
direction there cannot be exported. The written vector is ``coeff · scale · v``;
``model_hint`` is the model's ``config.model_type`` (pass ``model=``), as repeng writes it.
`import_gguf` also reads dialz's steering vectors (``general.architecture = steeringvector``,
``steeringvector.model_hint``; dialz adds ``direction.L`` to block L's output too) and
EasySteer's (``steervector``).

Example:
    export_gguf([d12, d16], "honesty.gguf", model=model)
    llama-cli -m smollm2.gguf --control-vector honesty.gguf          # in a shell
    directions = import_gguf("honesty.gguf")
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from probes import sublayers as sl

from ..directions import Direction, load_directions, save_directions

# general.architecture of the GGUF steering files this module reads: llama.cpp/repeng, dialz, EasySteer
ARCHITECTURES = ("controlvector", "steeringvector", "steervector")

__all__ = ["export_gguf", "import_gguf", "load_directions", "save_directions"]


def export_gguf(
    directions: Direction | Sequence[Direction],
    path: str | Path,
    *,
    coeff: float = 1.0,
    model: Any = None,
    model_hint: str | None = None,
    layer_count: int | None = None,
    allow_block_0: bool = False,
) -> Path:
    """Write residual-stream directions as a llama.cpp control vector (one per layer; directions at one layer add).

    ``model_hint`` defaults to ``model``'s ``config.model_type`` (``"llama"`` when neither is given).
    ``allow_block_0`` writes a direction at block 0, which llama.cpp ignores but EasySteer applies.
    """
    import gguf

    if model_hint is None:
        model_hint = str(sl.config_of(model).model_type) if model is not None else "llama"
    directions = [directions] if isinstance(directions, Direction) else list(directions)
    if not isinstance(coeff, (int, float)) or isinstance(coeff, bool) or not math.isfinite(coeff):
        raise ValueError(f"coeff={coeff!r}: give a finite number (the written vector is coeff · scale · v).")
    by_layer: dict[int, torch.Tensor] = {}
    for direction in directions:
        if not isinstance(direction, Direction):
            raise TypeError(f"export_gguf writes steering.Direction objects, not a {type(direction).__name__}.")
        if direction.kind != "resid" or direction.space != "activation":
            raise ValueError(f"{direction.name}: GGUF control vectors hold residual-stream (kind 'resid') activation directions only.")
        if direction.layer < (0 if allow_block_0 else 1):
            raise ValueError(f"{direction.name}: llama.cpp never steers block 0; choose a layer ≥ 1.")
        vector = coeff * direction.scale * direction.vector.float()
        if not torch.isfinite(vector).all():
            raise ValueError(f"{direction.name}: its vector or scale is not finite.")
        width = next(iter(by_layer.values())).shape[0] if by_layer else vector.shape[0]
        if vector.shape[0] != width:
            raise ValueError(f"{direction.name} has {vector.shape[0]} features, the others {width}: one control vector is for one model.")
        by_layer[direction.layer] = by_layer.get(direction.layer, torch.zeros_like(vector)) + vector
    if not by_layer:
        raise ValueError("No directions to export.")
    if layer_count is not None and (isinstance(layer_count, bool) or not isinstance(layer_count, int) or layer_count < max(by_layer)):
        raise ValueError(
            f"layer_count={layer_count!r}: give the model's number of layers, at least the highest exported layer ({max(by_layer)})."
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), "controlvector")
    writer.add_string("controlvector.model_hint", model_hint)
    writer.add_uint32("controlvector.layer_count", layer_count if layer_count is not None else max(by_layer))
    for layer in sorted(by_layer):
        writer.add_tensor(f"direction.{layer}", by_layer[layer].numpy().astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def import_gguf(path: str | Path) -> list[Direction]:
    """Read a GGUF control vector (llama.cpp/repeng, dialz or EasySteer) back as unit `Direction` s
    (``scale`` = the stored vector's norm; ``meta["model_hint"]`` as written)."""
    import gguf

    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        raise ValueError(
            f"{path} is {'empty' if path.is_file() else 'not a file'}: expected a GGUF control vector "
            "written by export_gguf or repeng's export_gguf."
        )
    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as error:  # the gguf package raises assorted errors for non-GGUF bytes
        raise ValueError(f"{path} is not a readable GGUF file ({type(error).__name__}: {error}).") from None
    architecture = reader.fields.get("general.architecture")
    arch = bytes(architecture.parts[architecture.data[0]]).decode() if architecture is not None else None
    if arch not in ARCHITECTURES:
        raise ValueError(f"{path} is not a GGUF control vector (general.architecture is {arch!r}, not one of {ARCHITECTURES}).")
    hint_field = reader.fields.get(f"{arch}.model_hint")
    hint = bytes(hint_field.parts[hint_field.data[0]]).decode() if hint_field is not None else None
    found = []
    for tensor in reader.tensors:
        if not tensor.name.startswith("direction."):
            continue
        vector = torch.from_numpy(np.array(tensor.data, dtype=np.float32).reshape(-1))
        norm = float(vector.norm())
        found.append(
            Direction(
                vector=vector / norm if norm > 0 else vector,
                scale=norm,
                layer=int(tensor.name.split(".")[1]),
                kind="resid",
                method="gguf",
                meta={"source": str(path), "model_hint": hint, "format": arch},
            )
        )
    return sorted(found, key=lambda d: d.layer)
