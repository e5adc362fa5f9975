"""The sublayer map for each supported family."""

from __future__ import annotations

import pytest

from probes import sublayers as sl
from tests.tiny import FAMILIES, tiny_model

ALL = ("resid", "attn", "mlp", "q", "k", "v", "o", "gate", "up", "down")


@pytest.mark.parametrize("family", FAMILIES)
def test_available_kinds_and_paths_exist(family):
    model = tiny_model(family)
    kinds = sl.available_kinds(model)
    assert kinds == (tuple(k for k in ALL if k != "gate") if family in ("gpt2", "gpt_neox") else ALL)
    for kind in kinds:
        sub = sl.resolve(model, 2, kind)
        assert sl.unwrap(model).get_submodule(sub.path) is not None
        assert ".2" in sub.path


def test_paths_by_family():
    assert sl.resolve(tiny_model("llama"), 1, "up").path == "model.layers.1.mlp.up_proj"
    assert sl.resolve(tiny_model("gpt2"), 0, "q").path == "transformer.h.0.attn.c_attn"
    assert sl.resolve(tiny_model("gpt_neox"), 0, "o").path == "gpt_neox.layers.0.attention.dense"
    assert sl.resolve(tiny_model("gemma2"), 2, "resid").path == "model.layers.2"


def test_layers_normalisation():
    model = tiny_model("llama")
    assert sl.resolve_layers(model, "all") == [0, 1, 2]
    assert sl.resolve_layers(model, -1) == [2]
    assert sl.resolve_layers(model, range(0, 3, 2)) == [0, 2]
    assert sl.resolve_layers(model, [2, -1, 0]) == [0, 2]
    for bad, message in [(3, "out of range"), ("some", "use an int"), ([], "empty"), ([1.5], "not a whole number")]:
        with pytest.raises(ValueError, match=message):
            sl.resolve_layers(model, bad)
