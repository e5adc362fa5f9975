"""What a saved steering plan records about its model, and the check that it is loaded into that model.

A plan's directions are only meaningful on the weights they were computed from: a plan saved on one
model would otherwise steer another of the same width without a word. `Steering.save(path, model)`
records the model's name, each direction's module path and an evenly spaced sample of the weights
of every steered layer's block; `Steering.load(path, model)` refuses other module paths or other
weights (a dtype change passes: the sample is compared with a 2 % tolerance), and warns when only the
name differs, as adapters do (`steering.adapter_files`).

Example:
    >>> plan.save("runs/plan", model=model)
    >>> steering.load_steerable("runs/plan", other_model)      # ValueError: saved for other weights
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from probes import sublayers as sl
from probes.fingerprint import sample_indices
from probes.remote import has_weights

from .direction import Direction

SAMPLES = 16  # per parameter


def block_path(model: Any, layer: int) -> str:
    """The module of layer ``layer``'s block (its ``resid`` output)."""
    return sl.resolve(model, layer, "resid").path


def weight_sample(model: Any, path: str) -> list[float]:
    """``SAMPLES`` evenly spaced values of each of the module's parameters (in their registration order),
    gathered where they live (a block of a large model is never copied whole)."""
    values = []
    for parameter in sl.get_module(model, path).parameters():
        flat = parameter.detach().reshape(-1)
        values += flat[sample_indices(flat.numel(), SAMPLES).to(flat.device)].to("cpu", torch.float32).tolist()
    return [round(v, 6) for v in values]


def model_record(model: Any, directions: Sequence[Direction]) -> dict[str, Any]:
    """``model``, ``modules`` and (with weights here) ``weight_samples``: what `check_model` compares."""
    record: dict[str, Any] = {
        "model": getattr(sl.config_of(model), "name_or_path", None),
        "modules": [sl.resolve(model, d.layer, d.kind).path for d in directions],
    }
    if has_weights(model):
        blocks = sorted({block_path(model, d.layer) for d in directions})
        record["weight_samples"] = {path: weight_sample(model, path) for path in blocks}
    return record


def module_problems(record: dict[str, Any], model: Any, directions: Sequence[Direction]) -> list[str]:
    problems = []
    for direction, saved in zip(directions, record.get("modules", [])):
        try:
            here = sl.resolve(model, direction.layer, direction.kind).path
        except ValueError as error:
            problems.append(f"{direction.name}: {saved} when saved; {error}")
            continue
        if here != saved:
            problems.append(f"{direction.name}: {saved} when saved, {here} here")
    return problems


def weight_problems(record: dict[str, Any], model: Any) -> list[str]:
    problems = []
    for path, saved in record.get("weight_samples", {}).items():
        here = torch.tensor(weight_sample(model, path))
        if here.shape != (len(saved),) or not torch.allclose(here, torch.tensor(saved), rtol=2e-2, atol=1e-3):
            problems.append(f"{path} holds other values ({[round(float(v), 4) for v in here[:3]]}… here, {saved[:3]}… when saved)")
    return problems


def check_model(record: dict[str, Any], model: Any, directions: Sequence[Direction], path: Path) -> None:
    """Refuse a plan recorded for other modules or other weights than ``model``'s; warn when only the name differs."""
    if "modules" not in record:
        return  # saved without a model: nothing to compare
    saved_name, here_name = record.get("model"), getattr(sl.config_of(model), "name_or_path", None)
    fix = "Load it into the model it was made on, or compute the directions again on this one."
    problems = module_problems(record, model, directions)
    if problems:
        raise ValueError(
            f"The steering plan in {path} was saved for other modules than this model's ({saved_name!r}): {'; '.join(problems[:5])}. {fix}"
        )
    named_apart = bool(saved_name and here_name and Path(str(saved_name)).name != Path(str(here_name)).name)
    if not has_weights(model) or "weight_samples" not in record:
        if named_apart:
            raise ValueError(
                f"The steering plan in {path} was saved for {saved_name!r}; this model is {here_name!r}, and its weights "
                f"are not here to compare. {fix}"
            )
        return
    problems = weight_problems(record, model)
    if problems:
        raise ValueError(
            f"The steering plan in {path} was saved for other weights than this model's ({saved_name!r}): {'; '.join(problems[:5])}. {fix}"
        )
    if named_apart:
        warnings.warn(
            f"The steering plan in {path} was saved for {saved_name!r}; this model is {here_name!r}. Its weights match, so it is loaded.",
            stacklevel=3,
        )
