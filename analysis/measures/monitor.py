"""Monitoring: how strongly is a concept active, token by token, along each direction?

`monitor` runs each prompt (and optionally a greedy generation from it) and reads,
at every prompt and generated token, the projection ``⟨h, v⟩`` of the state ``h`` of
each direction's sublayer on its unit vector ``v``. With ``reference`` (the
`probes.Activations` the directions were made from) each projection is also
z-scored against the pairs' states there (both sides, every captured token), so 0 is
"as the contrastive pairs on average" and ±1 one of their standard deviations.

The states are read by forward hooks registered after any steering already active,
so inside ``steering.steer(model, d, c)`` the monitor sees the steered states: at the
steered module every prompt token's projection on ``d`` moves by exactly ``c·s``.

Example:
    table = analysis.monitor(model, [d12, d20], ["Should I tell my boss?"], generate=24, reference=acts)
    analysis.monitor_figure(table).show()        # drawn by analysis.reports.monitor_plots
    with steering.steer(model, d12, 2.0):
        steered = analysis.monitor(model, [d12], prompts, generate=24, reference=acts)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

import probes
from probes.batching import check_lengths
from probes.hooks import edit_outputs
from probes.module_output import module_hidden
from probes.pairs import render
from probes.remote import require_weights
from steering.directions import Direction
from steering.intervene import check_fits

COLUMNS = ["prompt", "position", "token", "phase", "direction", "layer", "kind", "projection", "z"]


def reference_moments(reference: Any, direction: Direction) -> tuple[float, float]:
    """Mean and standard deviation of the pairs' projections on ``direction`` (both sides, all tokens)."""
    states: Float[Tensor, "pair side token d"] = reference[direction.layer, direction.kind]
    projections = states.float().reshape(-1, states.shape[-1]) @ direction.vector.float()
    return float(projections.mean()), float(projections.std())


def check_prompts(model: Any, texts: Sequence[str], chat: bool, generate: int) -> None:
    """Refuse prompts that are not text, that have no tokens, or that (with the tokens to generate) run past
    the positions a model with learned position embeddings has."""
    ids = []
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"prompt {index} is a {type(text).__name__}, not a text.")
        ids.append(model.tokenizer(text, add_special_tokens=not chat)["input_ids"])
        if not ids[-1]:
            raise ValueError(f"prompt {index} is empty (no tokens): monitor reads the states of a prompt's tokens, so give it text.")
    check_lengths(model, ids, texts, extra=max(generate - 1, 0))  # the last generated token is never fed back


def monitor(
    model: Any,
    directions: Sequence[Direction],
    prompts: Sequence[str],
    *,
    generate: int = 0,
    reference: Any = None,
    chat: bool = False,
) -> pd.DataFrame:
    """Projection of every prompt and generated token's state on each direction, as a tidy table.

    Args:
        directions: read where each says (``layer``, ``kind``); several may share a module.
        prompts: texts, run one at a time (no padding enters the readings).
        generate: greedy new tokens per prompt (0: the prompt only).
        reference: the `probes.Activations` of the pairs, for the ``z`` column (NaN without it).
        chat: wrap each prompt as the user turn of the tokenizer's chat template.

    Returns:
        One row per (prompt, token position, direction): ``prompt`` (its index), ``position``,
        ``token`` (decoded), ``phase`` ("prompt" or "generated"), ``direction`` (its name),
        ``layer``, ``kind``, ``projection``, ``z``.
    """
    directions = list(directions)
    if not directions:
        raise ValueError("monitor needs at least one direction.")
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of texts, not one string: monitor(model, directions, [prompt]).")
    if not prompts:
        raise ValueError("monitor needs at least one prompt: monitor(model, directions, ['Should I tell my boss?']).")
    if isinstance(generate, bool) or not isinstance(generate, int) or generate < 0:
        raise ValueError(f"generate={generate!r}: the number of new tokens to generate must be a whole number ≥ 0.")
    require_weights(model, "monitor (it reads every token's state through forward hooks in this process)")
    sublayers = [check_fits(model, direction) for direction in directions]
    texts = [render(prompt, "", model.tokenizer, chat=True) if chat else prompt for prompt in prompts]
    check_prompts(model, texts, chat, generate)
    moments = [reference_moments(reference, d) if reference is not None else (float("nan"), float("nan")) for d in directions]
    paths = sorted({sublayer.path for sublayer in sublayers})
    readings: dict[str, list[Tensor]] = {}

    def record(path: str):
        def edit(output: Any, inputs: tuple) -> Any:
            readings[path].append(module_hidden(output)[0].detach().float())  # [positions, features]
            return output

        return edit

    torch_model = probes.torch_module(model)
    device = next(torch_model.parameters()).device
    rows = []
    for index, text in enumerate(texts):
        inputs = model.tokenizer(text, return_tensors="pt", add_special_tokens=not chat).to(device)
        readings = {path: [] for path in paths}
        with torch.no_grad(), edit_outputs(model, {path: record(path) for path in paths}):
            if generate:
                ids = torch_model.generate(
                    **inputs,
                    max_new_tokens=generate,
                    do_sample=False,
                    pad_token_id=model.tokenizer.eos_token_id if model.tokenizer.pad_token_id is None else model.tokenizer.pad_token_id,
                )[0]
            else:
                torch_model(**inputs)
                ids = inputs["input_ids"][0]
        n_prompt = inputs["input_ids"].shape[1]
        tokens = [model.tokenizer.decode([token]) for token in ids.tolist()]
        for direction, sublayer, (mean, std) in zip(directions, sublayers, moments):
            states = torch.cat(readings[sublayer.path])  # prompt positions, then one per generated token
            projections = (sublayer.split(states) @ direction.vector.float().to(states.device)).cpu().tolist()
            for position, value in enumerate(projections):  # the last generated token is never read
                rows.append(
                    {
                        "prompt": index,
                        "position": position,
                        "token": tokens[position],
                        "phase": "prompt" if position < n_prompt else "generated",
                        "direction": direction.name,
                        "layer": direction.layer,
                        "kind": direction.kind,
                        "projection": value,
                        "z": (value - mean) / std if std > 0 else float("nan"),
                    }
                )
    return pd.DataFrame(rows, columns=COLUMNS)
