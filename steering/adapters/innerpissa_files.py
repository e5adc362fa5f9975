"""Saving and loading InnerPiSSA adapters, checked against the weights they were made for.

``adapter.json`` holds the configuration and, per target, its weight's shape and top
singular values; ``adapter.safetensors`` the learned parameters. A configuration saved
before ``angle_bound`` and ``random_scale`` existed loads with the forward it was trained
with (``"entries"``, ``"projected"``). A load first checks
the targets, and a load that fails for any reason leaves the model as it was.

Example:
    adapter.save("runs/adapter")
    adapter = load_innerpissa("runs/adapter", model)
"""

from __future__ import annotations

import warnings
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

import probes
from probes import sublayers as sl
from probes.files import read_json
from probes.model_handle import model_handle

from ..steerable import register_loader
from .innerpissa import AdapterConfig, InnerPiSSA, attach_config, attach_innerpissa, weight_identity


def check_targets(config: AdapterConfig, model: Any, path: Path) -> None:
    """Refuse an adapter whose recorded target weights differ from this model's (shape or singular values)."""
    problems = []
    for name, saved in config.targets.items():
        layer, kind = name.split(".", 1)
        try:
            found = weight_identity(probes.weight_svd(model, int(layer), kind))
        except ValueError as error:
            problems.append(f"{name}: {error}")
            continue
        if found["shape"] != saved["shape"]:
            problems.append(f"{name}: weight {found['shape']} here, {saved['shape']} when saved")
        elif not torch.allclose(torch.tensor(found["singular_values"]), torch.tensor(saved["singular_values"]), rtol=1e-2, atol=1e-4):
            problems.append(
                f"{name}: other singular values ({found['singular_values'][:3]}… here, {saved['singular_values'][:3]}… when saved)"
            )
    if problems:
        raise ValueError(
            f"The adapter in {path} was saved for other weights than this model's ({config.model!r}): "
            + "; ".join(problems[:5])
            + ". Load it into the model it was trained on."
        )
    here = model_handle(model).model_id
    if config.model and here and Path(str(config.model)).name != Path(str(here)).name:
        warnings.warn(
            f"The adapter in {path} was saved for {config.model!r}; this model is {here!r}. Its target weights match, so it is loaded.",
            stacklevel=3,
        )


def read_adapter_config(path: Path) -> AdapterConfig:
    raw = read_json(path / "adapter.json", "an InnerPiSSA adapter's configuration")
    known = {f.name for f in fields(AdapterConfig)}
    unknown = sorted(set(raw) - known) if isinstance(raw, dict) else []
    if not isinstance(raw, dict) or unknown or not {"layers", "kinds"} <= set(raw):
        raise ValueError(
            f"{path / 'adapter.json'} is not an InnerPiSSA configuration" + (f" (unknown fields {unknown})" if unknown else "") + "."
        )
    # files written before these options existed: keep the forward they were trained with
    legacy: dict[str, Any] = {"angle_bound": "entries", "random_scale": "projected"}
    return AdapterConfig(**({name: value for name, value in legacy.items() if name not in raw} | raw))


@register_loader(
    "innerpissa",
    marker="adapter.json",  # InnerPiSSA folders hold adapter.json, no steerable.json
    example=lambda model: attach_innerpissa(model, layers=[0, sl.n_layers(model) - 1], kinds=("o", "down"), rank=4),
)
def load_innerpissa(path: str | Path, model: Any) -> InnerPiSSA:
    """Attach a saved adapter to ``model`` and load its parameters.

    Checks first that the adapter was made for this model's weights (each target's shape and top
    singular values); a load that fails for any reason leaves the model as it was.
    """
    path = Path(path)
    config = read_adapter_config(path)
    check_targets(config, model, path)
    handle = attach_config(model, config)  # the sign, seed and chosen components come with the config
    try:
        try:
            state = load_file(str(path / "adapter.safetensors"))
        except Exception as error:  # truncated or garbled file
            raise ValueError(f"{path / 'adapter.safetensors'} is damaged ({type(error).__name__}: {error}).") from None
        handle.layers.load_state_dict(state)
    except BaseException:
        handle.detach()
        raise
    return handle
