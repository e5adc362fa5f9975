"""Steering at chosen positions during generation, checked against a hand-written greedy loop.

The reference never uses steerscope's position tracker: it re-runs the whole sequence at every step
(no KV cache) with a plain forward hook that adds ``c·s·v`` at the columns each ``positions`` value
names, computed here from the prompt's length. ``steer(..., positions=...)`` must give the same
tokens with the KV cache and without it, for input ids alone and for a tokenizer's padded batch
(attention mask), on every tiny family. Also: the offset of a forward is read from every form
transformers has used (`probes.forward_offset`).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import steering
from probes import sublayers as sl
from probes.forward_offset import forward_offset
from steering import Direction, steer
from tests.tiny import FAMILIES, tiny_model

NEW_TOKENS = 6
POSITIONS = ["all", "prompt", "generated", 2, slice(1, 7), slice(3, None, 2)]


def steered_columns(positions, prompt_length: int, total: int) -> torch.Tensor:
    """Which absolute columns of a ``total``-long sequence ``positions`` names, from its definition."""
    columns = torch.arange(total)
    if positions == "all":
        return torch.ones(total, dtype=torch.bool)
    if positions == "prompt":
        return columns < prompt_length
    if positions == "generated":
        return columns >= prompt_length
    if isinstance(positions, int):
        return columns >= prompt_length - positions
    return torch.isin(columns, columns[positions])


def reference_generation(model, direction, coeff, positions, inputs) -> torch.Tensor:
    """Greedy generation without the KV cache, steering the columns `steered_columns` names by hand."""
    hf = sl.unwrap(model)
    module = sl.get_module(model, sl.resolve(model, direction.layer, direction.kind).path)
    ids, mask = inputs["input_ids"], inputs.get("attention_mask")
    prompt_length = ids.shape[1]
    banned = [token for token in [hf.generation_config.eos_token_id] if token is not None]
    for _ in range(NEW_TOKENS):
        keep = steered_columns(positions, prompt_length, ids.shape[1]).float()[None, :, None]

        def add(_module, _args, output, keep=keep):
            hidden = output[0] if isinstance(output, tuple) else output
            steered = hidden + coeff * direction.scale * keep * direction.vector
            return (steered, *output[1:]) if isinstance(output, tuple) else steered

        handle = module.register_forward_hook(add)
        try:
            with torch.no_grad():
                positions_ids = None if mask is None else (mask.cumsum(-1) - 1).clamp(min=0)  # as generate() builds them
                logits = hf(input_ids=ids, attention_mask=mask, position_ids=positions_ids, use_cache=False).logits[:, -1]
        finally:
            handle.remove()
        logits[:, banned] = -torch.inf  # what min_new_tokens does to the generate() calls below
        ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
        if mask is not None:
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    return ids


def model_inputs(model, kind: str) -> dict[str, torch.Tensor]:
    if kind == "input_ids":
        return {"input_ids": torch.tensor([[1, 70, 71, 72, 73]])}
    return dict(model.tokenizer(["the cat sat", "a dog"], return_tensors="pt", padding=True))


def resid_direction(model, layer=1, seed=3, scale=6.0) -> Direction:
    torch.manual_seed(seed)
    width = sl.unwrap(model).config.get_text_config().hidden_size
    return Direction(torch.nn.functional.normalize(torch.randn(width), dim=0), scale, layer, "resid", "test")


@pytest.mark.parametrize("inputs_kind", ["input_ids", "tokenizer"])
@pytest.mark.parametrize("family", FAMILIES)
def test_generation_steers_the_named_positions_with_and_without_the_kv_cache(family, inputs_kind):
    model = tiny_model(family)
    hf = sl.unwrap(model)
    direction = resid_direction(model)
    inputs = model_inputs(model, inputs_kind)
    options = dict(max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        plain = hf.generate(**inputs, **options)
    differs = []
    for positions in POSITIONS:
        expected = reference_generation(model, direction, 2.0, positions, inputs)
        for cache in (True, False):
            with steer(model, direction, 2.0, positions=positions), torch.no_grad():
                got = hf.generate(**inputs, use_cache=cache, **options)
            assert torch.equal(got, expected), f"positions={positions!r}, use_cache={cache}"
        differs.append(not torch.equal(expected, plain))
    # not vacuous: most choices change the greedy tokens of this random model (a few may not, e.g. on gemma2)
    assert sum(differs) >= len(POSITIONS) - 2, dict(zip(map(str, POSITIONS), differs))


@pytest.mark.parametrize("positions", [slice(-2, None), slice(None, -1), slice(0, 8, -1), slice(2, 5, 0), 0, -1, True, "last"])
def test_positions_that_cannot_mean_the_same_with_and_without_the_cache_are_refused(positions):
    model = tiny_model("llama")
    with pytest.raises(ValueError, match="positions="), steer(model, resid_direction(model), 1.0, positions=positions):
        pass


def test_numpy_integers_are_positions():
    model = tiny_model("llama")
    direction = resid_direction(model)
    inputs = model_inputs(model, "input_ids")
    options = dict(max_new_tokens=4, do_sample=False, pad_token_id=0)
    results = []
    for positions in (2, np.int64(2), slice(np.int64(1), np.int32(7))):
        with steer(model, direction, 2.0, positions=positions), torch.no_grad():
            results.append(sl.unwrap(model).generate(**inputs, **options))
    assert torch.equal(results[0], results[1])
    assert steering.positions.check_positions(slice(np.int64(1), np.int32(7))) == slice(1, 7, None)


class LegacyCache:
    def get_seq_length(self) -> int:
        return 9


@pytest.mark.parametrize(
    "kwargs, offset",
    [
        ({"cache_position": torch.tensor([4, 5])}, 4),  # transformers 4.38 – 5.2x
        ({"past_key_values": LegacyCache(), "input_ids": torch.zeros(1, 1)}, 9),  # 4.x Cache objects
        ({"cache": LegacyCache(), "position_ids": torch.tensor([[9]])}, 9),  # 5.24: cache= and position_ids
        ({"past_key_values": ((torch.zeros(1, 2, 7, 4), torch.zeros(1, 2, 7, 4)),)}, 7),  # legacy tuples
        ({"past_key_values": ()}, 0),
        ({"input_ids": torch.zeros(2, 1), "attention_mask": torch.ones(2, 12)}, 11),
        ({"input_ids": torch.zeros(2, 12), "attention_mask": torch.ones(2, 12)}, 0),
        ({"position_ids": torch.tensor([[11], [2]])}, 11),  # left padding: the unpadded row holds the offset
        ({"input_ids": torch.zeros(1, 5)}, 0),
    ],
    ids=["cache_position", "past_key_values", "cache", "legacy-tuple", "empty-tuple", "mask", "mask-full", "position_ids", "none"],
)
def test_the_offset_of_a_forward_is_read_from_every_form(kwargs, offset):
    assert forward_offset(kwargs) == offset


def test_the_offset_agrees_with_the_installed_transformers_in_generation():
    """Record what the installed transformers passes at each step and compare with the true offset."""
    model = tiny_model("llama")
    hf = sl.unwrap(model)
    seen: list[tuple[int, int]] = []

    def record(_module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        seen.append((forward_offset(kwargs, args), ids.shape[1]))

    handle = hf.register_forward_pre_hook(record, with_kwargs=True)
    try:
        with torch.no_grad():
            hf.generate(
                **model.tokenizer(["the cat", "a"], return_tensors="pt", padding=True), max_new_tokens=4, do_sample=False, pad_token_id=0
            )
    finally:
        handle.remove()
    prompt = seen[0][1]
    assert seen == [(0, prompt)] + [(prompt + step, 1) for step in range(3)]
