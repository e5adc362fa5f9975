"""Hugging Face-style folders: the card read by huggingface_hub's ModelCard, the adapter by PEFT, and
everything back by from_pretrained with the same logits."""

from __future__ import annotations

import pytest
import torch
from huggingface_hub import ModelCard
from peft import PeftModel

import steering
from probes import sublayers as sl
from steering.directions.direction import Direction
from steering.formats.hub import from_pretrained, save_pretrained
from tests.tiny import tiny_model

TEXTS = ["The quick brown fox", "jumps over the lazy dog."]


def logits(model, steerable=None, c=1.0):
    batch = model.tokenizer(TEXTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        if steerable is None:
            return sl.unwrap(model)(**batch).logits
        with steering.applied(model, steerable, c):
            return sl.unwrap(model)(**batch).logits


def unit(seed: int) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(32, generator=torch.Generator().manual_seed(seed)), dim=0)


def test_a_plan_folder_has_a_card_naming_the_base_model_and_loads_with_the_same_effect(tmp_path):
    model = tiny_model("llama")
    plan = steering.Steering([Direction(unit(0), 1.5, 1, "resid", "a"), Direction(unit(1), 0.7, 2, "o", "b")], weights=[1.0, -0.5])
    expected = logits(model, plan, 2.0)
    save_pretrained(plan, tmp_path / "plan", model=model, base_model="HuggingFaceTB/SmolLM2-135M-Instruct")
    card = ModelCard.load(tmp_path / "plan" / "README.md")  # huggingface_hub's own parser of the card metadata
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct" and card.data.library_name == "steerscope"
    assert "hidden_states[L + 1]" in card.text  # the layer convention is written down
    loaded = from_pretrained(tmp_path / "plan")
    assert isinstance(loaded, steering.Steering) and loaded.weights == [1.0, -0.5]
    torch.testing.assert_close(logits(model, loaded, 2.0), expected, atol=0, rtol=0)


def test_directions_are_saved_as_a_plan(tmp_path):
    d = Direction(unit(2), 2.0, 1, "resid", "pca_diff")
    save_pretrained([d], tmp_path / "dirs", base_model="tiny/llama")
    (back,) = from_pretrained(tmp_path / "dirs").directions
    torch.testing.assert_close(back.vector, d.vector, atol=0, rtol=0)
    assert (back.layer, back.kind, back.scale) == (1, "resid", 2.0)


def test_an_innerpissa_folder_is_read_by_peft_and_by_steerscope(tmp_path):
    model = tiny_model("llama")
    adapter = steering.attach_innerpissa(model, layers=[0, 2], kinds=("o", "down"), rank=4, rotate_u=True)
    with torch.no_grad():
        for parameter in adapter.trainable_parameters():
            parameter.normal_(0, 0.3, generator=torch.Generator().manual_seed(parameter.numel()))
    expected = {c: logits(model, adapter, c) for c in (0.5, -1.0)}
    save_pretrained(adapter, tmp_path / "ipissa", c=0.5, base_model="tiny/llama")
    adapter.detach()
    card = ModelCard.load(tmp_path / "ipissa" / "README.md")
    assert card.data.base_model == "tiny/llama" and card.data.library_name == "peft"
    peft_model = PeftModel.from_pretrained(sl.unwrap(model), str(tmp_path / "ipissa"))
    with torch.no_grad():
        got = peft_model(**model.tokenizer(TEXTS, return_tensors="pt", padding=True)).logits
    peft_model.unload()
    torch.testing.assert_close(got, expected[0.5], atol=2e-5, rtol=1e-5)
    loaded = from_pretrained(tmp_path / "ipissa", model)  # steerscope's adapter: the coefficient stays free
    for c, value in expected.items():
        torch.testing.assert_close(logits(model, loaded, c), value, atol=1e-6, rtol=0)
    loaded.detach()


def test_a_card_needs_a_base_model(tmp_path):
    with pytest.raises(ValueError, match="base_model="):
        save_pretrained(Direction(unit(0), 1.0, 1, "resid", "a"), tmp_path / "x")
