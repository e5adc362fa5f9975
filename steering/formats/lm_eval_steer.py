"""A plan as lm-eval-harness's steered-model file: evaluate a steered model with ``lm_eval --model steered``.

lm-eval-harness (0.4.13: ``lm_eval/models/hf_steered.py``, model type ``steered``) wraps its
``hf`` model and, around every forward, adds ``steering_coefficient · steering_vector`` to the
output of named modules of ``model.base_model`` (for a tuple output, to its first element). It
reads the plan from a ``.pt`` file (``torch.load``) holding::

    {hookpoint: {"steering_vector": Tensor[d], "steering_coefficient": float,
                 "action": "add", "bias": None, "head_index": None}, ...}

where ``hookpoint`` is a module name relative to ``model.base_model`` (``"layers.12"`` is a
Llama-style block, ``"h.12"`` a GPT-2 block). steerscope's ``add`` at coefficient c adds
``c · weight · scale · v`` to the output of the sublayer's module (``resid`` at L: block L's
output), so `export_lm_eval` writes, per module, ``steering_vector = Σ weight · scale · v``
(placed in the fused output for q/k/v slices) and ``steering_coefficient = c``. Every position
is steered (lm-eval has no position masks), so plans with a condition, ``positions`` other
than ``"all"``, modes other than ``add``, or weight-space directions are refused rather than
approximated. The module names come from ``model``, which is therefore required.

Example:
    export_lm_eval(plan, "runs/honesty.steer.pt", model=model, coeff=2.0)
    lm_eval --model steered --model_args pretrained=MODEL,steer_path=runs/honesty.steer.pt --tasks hellaswag   # in a shell
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from probes import sublayers as sl

from ..intervene import steering_edit

__all__ = ["export_lm_eval"]


def hookpoint(model: Any, path: str) -> str:
    """The name lm-eval's ``steer`` finds the module at ``path`` under: relative to ``model.base_model``."""
    torch_model = sl.unwrap(model)
    module = torch_model.get_submodule(path)
    base = getattr(torch_model, "base_model", torch_model)
    for name, candidate in base.named_modules():
        if candidate is module:
            return name
    raise ValueError(f"{path} is not inside {type(base).__name__} (model.base_model), where lm-eval looks for hookpoints.")


def export_lm_eval(plan: Any, path: str | Path, *, model: Any, coeff: float = 1.0) -> Path:
    """Write ``plan`` (a `Steering` plan, a `Direction`, a list of them or a saved plan's folder) at coefficient
    ``coeff`` as lm-eval-harness's ``steer_path`` file (``.pt``; see the module text). Returns the path."""
    from ..serve import as_plan

    if isinstance(coeff, bool) or not isinstance(coeff, (int, float)) or not math.isfinite(coeff):
        raise ValueError(f"coeff={coeff!r}: give one finite number (lm-eval steers at one coefficient).")
    if model is None:
        raise ValueError("export_lm_eval needs model=: lm-eval names hookpoints by the model's module names.")
    plan = as_plan(plan)
    where = "steering.applied(model, plan, c) in steerscope"
    if plan.condition is not None:
        raise ValueError(f"{plan.name}: lm-eval's steered model cannot gate steering on a condition; run it with {where}.")
    if plan.positions != "all":
        raise ValueError(f"{plan.name}: positions={plan.positions!r}: lm-eval steers every position; use 'all' or run it with {where}.")
    path = Path(path)
    if path.suffix not in (".pt", ".pth"):
        raise ValueError(f"{path}: lm-eval reads a steering file ending in .pt or .pth (a .csv is its SAE-feature format).")
    vectors: dict[str, torch.Tensor] = {}
    for direction, weight, mode in zip(plan.directions, plan.weights or [], plan.modes or []):
        if mode != "add":
            raise ValueError(f"{direction.name}: mode {mode!r} is not lm-eval's 'add' (its 'clamp' differs from steerscope's for c ≠ 1).")
        if direction.space != "activation":
            raise ValueError(
                f"{direction.name} is a {direction.space} (weight-space) direction: lm-eval adds fixed activation vectors only."
            )
        edit = steering_edit(model, direction)  # checks the direction fits the model
        assert edit.step is not None
        name = hookpoint(model, edit.path)
        step = edit.step.detach().to("cpu", torch.float32) * float(weight)
        vectors[name] = vectors[name] + step if name in vectors else step
    config = {
        name: {
            "steering_vector": vector.contiguous(),
            "steering_coefficient": float(coeff),
            "action": "add",
            "bias": None,
            "head_index": None,
        }
        for name, vector in vectors.items()
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(config, path)
    return path
