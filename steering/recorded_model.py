"""What a saved steering plan or LoRA adapter records about its model, and the check that it is loaded
into that model.

Directions and LoRA weights are only meaningful on the weights they were made from: without a check, a
file saved on one model would steer another of the same width without a word. Saving records the
model's name and an evenly spaced sample of the weights it acts on (each steered layer's block for a
plan, each adapted projection for LoRA; a plan also records each direction's module path). Loading
refuses other module paths or other weights (a dtype change passes: the samples are compared with a
2 % tolerance) and warns when only the name differs, as InnerPiSSA adapters do (`steering.adapters.innerpissa_files`).

Example:
    plan.save("runs/plan", model=model)
    steering.load_steerable("runs/plan", other_model)      # ValueError: saved for other weights
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from probes import sublayers as sl
from probes.fingerprint import sample_indices
from probes.model_handle import model_handle
from probes.remote import has_weights

from .directions import Direction

SAMPLES = 16  # per parameter
FIX = "Load it into the model it was made on, or make it again on this one."


def model_name(model: Any) -> str | None:
    return model_handle(model).model_id


def weight_sample(model: Any, path: str) -> list[float]:
    """``SAMPLES`` evenly spaced values of each of the module's base parameters (registration order; LoRA's
    own ``lora_`` parameters skipped, so a wrapped projection samples as the plain one), gathered where
    they live (a block of a large model is never copied whole)."""
    values = []
    for name, parameter in sl.get_module(model, path).named_parameters():
        if "lora_" in name:
            continue
        flat = parameter.detach().reshape(-1)
        values += flat[sample_indices(flat.numel(), SAMPLES).to(flat.device)].to("cpu", torch.float32).tolist()
    return [round(v, 6) for v in values]


def weights_record(model: Any, paths: Iterable[str]) -> dict[str, Any]:
    """``model`` (its name) and, with the weights here, ``weight_samples`` of the modules at ``paths``."""
    record: dict[str, Any] = {"model": model_name(model)}
    if has_weights(model):
        record["weight_samples"] = {path: weight_sample(model, path) for path in sorted(set(paths))}
    return record


def plan_record(model: Any, directions: Sequence[Direction]) -> dict[str, Any]:
    """What a plan records: each direction's module path, and its layers' blocks' weights."""
    blocks = [sl.resolve(model, d.layer, "resid").path for d in directions]
    return weights_record(model, blocks) | {"modules": [sl.resolve(model, d.layer, d.kind).path for d in directions]}


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
        if not sl.has_module(model, path):
            problems.append(f"{path} does not exist here")
            continue
        here = torch.tensor(weight_sample(model, path))
        if here.shape != (len(saved),) or not torch.allclose(here, torch.tensor(saved), rtol=2e-2, atol=1e-3):
            problems.append(f"{path} holds other values ({[round(float(v), 4) for v in here[:3]]}… here, {saved[:3]}… when saved)")
    return problems


def check_weights(record: dict[str, Any], model: Any, path: Path, what: str) -> None:
    """Refuse ``what`` (saved at ``path``) when its recorded weights differ from ``model``'s; warn when only
    the name differs. A file saved without a model record passes (nothing to compare)."""
    if "model" not in record:
        return
    saved_name, here_name = record.get("model"), model_name(model)
    named_apart = bool(saved_name and here_name and Path(str(saved_name)).name != Path(str(here_name)).name)
    if not has_weights(model) or "weight_samples" not in record:
        if named_apart:
            raise ValueError(
                f"The {what} in {path} was saved for {saved_name!r}; this model is {here_name!r}, and the weights are not here to compare. {FIX}"
            )
        return
    problems = weight_problems(record, model)
    if problems:
        raise ValueError(
            f"The {what} in {path} was saved for other weights than this model's ({saved_name!r}): {'; '.join(problems[:5])}. {FIX}"
        )
    if named_apart:
        warnings.warn(
            f"The {what} in {path} was saved for {saved_name!r}; this model is {here_name!r}. Its weights match, so it is loaded.",
            stacklevel=3,
        )


def check_plan(record: dict[str, Any], model: Any, directions: Sequence[Direction], path: Path) -> None:
    """Refuse a plan recorded for other modules or other weights than ``model``'s (see `check_weights`)."""
    problems = module_problems(record, model, directions)
    if problems:
        raise ValueError(
            f"The steering plan in {path} was saved for other modules than this model's ({record.get('model')!r}): {'; '.join(problems[:5])}. {FIX}"
        )
    check_weights(record, model, path, "steering plan")
