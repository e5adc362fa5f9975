"""Residual-stream directions in the files of other steering tools: Neuronpedia and EasySteer.

**Neuronpedia** (its "new vector" upload): a JSON object ``{"modelId", "layerNumber",
"hookType": "hook_resid_pre", "vector", "vectorDefaultSteerStrength", "vectorLabel"}``.
Neuronpedia adds ``strength · vector`` at TransformerLens' ``blocks.N.hook_resid_pre``, the
*input* of block N, which is the output of block N − 1: steerscope's ``resid`` at layer L is
written as ``layerNumber = L + 1`` (the last layer has no such hook and is refused when the
model is given). ``vector`` is ``scale · v`` and the default strength is the coefficient c.

**EasySteer** (vLLM steering, ``SteerVectorRequest(..., algorithm="direct")``): its direct
algorithm reads a GGUF control vector (``direction.L`` tensors, as llama.cpp and repeng:
added to block L's output, steerscope's ``resid`` at L) or a ``.pt`` holding one vector for
the request's ``target_layers``. `export_easysteer` writes a folder with ``<name>.gguf``,
one ``<name>.L<layer>.pt`` per layer and ``steer_vector_request.json``, the request's
arguments with ``scale = c``, ``target_layers`` and every token steered (``[-1]``).

Example:
    export_neuronpedia(d, "honesty.np.json", model_id="gemma-2-2b-it", coeff=4.0, model=model)
    export_easysteer([d12, d16], "runs/easysteer", coeff=2.0, model=model)
    import_neuronpedia("honesty.np.json"), import_easysteer("runs/easysteer")
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from probes import sublayers as sl
from probes.files import read_json, write_json

from ..directions import Direction
from .gguf import export_gguf, import_gguf

HOOK_TYPE = "hook_resid_pre"
REQUEST = "steer_vector_request.json"


def residual_directions(directions: Direction | Sequence[Direction], tool: str) -> list[Direction]:
    """The directions as a list, refusing what ``tool`` cannot add to the residual stream."""
    found = [directions] if isinstance(directions, Direction) else list(directions)
    if not found:
        raise ValueError(f"No directions to export for {tool}.")
    for direction in found:
        if not isinstance(direction, Direction):
            raise TypeError(f"{tool} export writes steering.Direction objects, not a {type(direction).__name__}.")
        if direction.kind != "resid" or direction.space != "activation":
            raise ValueError(
                f"{direction.name}: {tool} adds residual-stream vectors; only kind 'resid' activation directions can be exported."
            )
        if not (math.isfinite(direction.scale) and torch.isfinite(direction.vector).all()):
            raise ValueError(f"{direction.name}: its vector or scale is not finite.")
    return found


def finite(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name}={value!r}: give a finite number.")
    return float(value)


def export_neuronpedia(
    directions: Direction | Sequence[Direction],
    path: str | Path,
    *,
    model_id: str,
    coeff: float = 1.0,
    label: str | None = None,
    model: Any = None,
) -> Path:
    """Write Neuronpedia vector JSON (one object, or a list for several directions); see the module text."""
    found = residual_directions(directions, "Neuronpedia")
    coeff = finite(coeff, "coeff")
    n_layers = sl.n_layers(model) if model is not None else None
    records = []
    for direction in found:
        if n_layers is not None and direction.layer + 1 >= n_layers:
            raise ValueError(
                f"{direction.name}: Neuronpedia steers at hook_resid_pre of block {direction.layer + 1}, "
                f"which this {n_layers}-layer model lacks (its last block's output has no such hook)."
            )
        records.append(
            {
                "modelId": model_id,
                "layerNumber": direction.layer + 1,
                "hookType": HOOK_TYPE,
                "vector": [float(x) for x in (direction.scale * direction.vector.float()).tolist()],
                "vectorDefaultSteerStrength": coeff,
                "vectorLabel": label or direction.name,
            }
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, records[0] if isinstance(directions, Direction) else records)
    return path


def import_neuronpedia(path: str | Path) -> list[Direction]:
    """Read Neuronpedia vector JSON as `Direction` s at ``resid`` layer ``layerNumber − 1``
    (``meta["strength"]`` = its default steer strength)."""
    raw = read_json(Path(path), "a Neuronpedia vector")
    records = raw if isinstance(raw, list) else [raw]
    found = []
    for record in records:
        if not isinstance(record, dict) or not {"layerNumber", "hookType", "vector"} <= set(record):
            raise ValueError(f"{path} is not Neuronpedia vector JSON (needs layerNumber, hookType and vector).")
        if record["hookType"] != HOOK_TYPE or int(record["layerNumber"]) < 1:
            raise ValueError(f"{path}: only {HOOK_TYPE} at a layer ≥ 1 maps onto steerscope's resid (got {record['hookType']!r}).")
        vector = torch.tensor(record["vector"], dtype=torch.float32)
        norm = float(vector.norm())
        found.append(
            Direction(
                vector=vector / norm if norm > 0 else vector,
                scale=norm,
                layer=int(record["layerNumber"]) - 1,
                kind="resid",
                method=str(record.get("vectorLabel") or "neuronpedia"),
                meta={"source": str(path), "model_id": record.get("modelId"), "strength": record.get("vectorDefaultSteerStrength")},
            )
        )
    return found


def export_easysteer(
    directions: Direction | Sequence[Direction],
    folder: str | Path,
    *,
    coeff: float = 1.0,
    name: str = "steerscope",
    model: Any = None,
) -> Path:
    """Write an EasySteer ``direct`` steer vector folder (GGUF, per-layer ``.pt``, the request's arguments)."""
    found = residual_directions(directions, "EasySteer")
    coeff = finite(coeff, "coeff")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    gguf_path = export_gguf(found, folder / f"{name}.gguf", coeff=1.0, model=model, allow_block_0=True)
    layers = sorted({d.layer for d in found})
    for layer in layers:
        step = sum((d.scale * d.vector.float() for d in found if d.layer == layer), torch.zeros(found[0].vector.shape[0]))
        torch.save(step.contiguous(), folder / f"{name}.L{layer}.pt")
    write_json(
        folder / REQUEST,
        {
            "steer_vector_name": name,
            "steer_vector_int_id": 1,
            "steer_vector_local_path": str(gguf_path.resolve()),
            "scale": coeff,
            "target_layers": layers,
            "prefill_trigger_tokens": [-1],
            "generate_trigger_tokens": [-1],
            "algorithm": "direct",
            "normalize": False,
        },
    )
    return folder


def import_easysteer(folder: str | Path) -> list[Direction]:
    """Read a folder written by `export_easysteer` (or any EasySteer GGUF with its request JSON): the
    GGUF's directions at the request's ``target_layers``, ``meta["coeff"]`` = the request's scale."""
    folder = Path(folder)
    request = read_json(folder / REQUEST, "an EasySteer steer vector request")
    if not isinstance(request, dict) or request.get("algorithm", "direct") != "direct" or request.get("normalize"):
        raise ValueError(f"{folder / REQUEST}: only EasySteer's 'direct' algorithm without normalize adds a plain vector.")
    local = Path(str(request.get("steer_vector_local_path", "")))
    gguf_path = local if local.is_file() else folder / local.name  # the folder may have moved
    targets = request.get("target_layers")
    found = [d for d in import_gguf(gguf_path) if targets is None or d.layer in targets]
    for direction in found:
        direction.meta["coeff"] = float(request.get("scale", 1.0))
    return found


__all__ = ["export_easysteer", "export_neuronpedia", "import_easysteer", "import_neuronpedia"]
