"""A model's facts are resolved once (`probes.model_handle`) and agree with its config and modules."""

from __future__ import annotations

import pytest

import probes
from probes import families, model_handle
from probes import sublayers as sl
from tests.tiny import FAMILIES, tiny_model

GATED = {"llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text"}  # gated MLPs: a gate projection


@pytest.mark.parametrize("family", FAMILIES)
def test_the_handle_matches_the_config_and_modules(family):
    model = tiny_model(family)
    handle = model_handle.model_handle(model)
    config = sl.config_of(model)
    assert handle.module is probes.torch_module(model)
    assert handle.n_layers == getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None)
    expected = {"resid", "attn", "mlp", "q", "k", "v", "o", "up", "down"} | ({"gate"} if family in GATED else set())
    assert set(handle.kinds) == expected
    assert handle.tokenizer is model.tokenizer


def test_facts_are_resolved_once_per_model(monkeypatch):
    model = tiny_model("llama")
    calls = []
    real = model_handle.detect_family
    monkeypatch.setattr(model_handle, "detect_family", lambda module: calls.append(module) or real(module))
    model_handle.handles.pop(probes.torch_module(model), None)
    for layer in range(sl.n_layers(model)):
        for kind in sl.available_kinds(model):
            sl.resolve(model, layer, kind)
    probes.collect(model, [("I tell the truth.", "I lie.")] * 2, layers="all", sublayers=("resid", "up"), progress=False)
    assert len(calls) == 1


def test_an_unknown_architecture_still_gets_a_handle_and_a_clear_error():
    model = tiny_model("llama")
    module = probes.torch_module(model)
    module.model.layers_renamed = module.model.layers
    del module.model.layers
    module.config.model_type = "brand_new"
    model_handle.handles.pop(module, None)
    assert model_handle.model_handle(model).family is None
    with pytest.raises(ValueError, match="does not know the module layout of model_type='brand_new'"):
        sl.n_layers(model)
    assert families.detect_family(module) is None
