"""Saved adapters load only into the weights they were made for, and a failed load or an
out-of-order detach leaves the model exactly as it was."""

from __future__ import annotations

import json

import pytest
import torch

import steering
from probes import sublayers as sl
from tests.tiny import tiny_model


def trained_adapter(model):
    adapter = steering.attach_innerpissa(model, layers=[1, 2], kinds=("o", "down"), rank=4, seed=1)
    with torch.no_grad():
        for parameter in adapter.trainable_parameters():
            parameter.normal_(0, 0.05)
    return adapter


def logits(model, c_context=None):
    ids = model.tokenizer(["Honesty is"], return_tensors="pt")
    with torch.no_grad():
        return sl.unwrap(model)(**ids).logits


def model_is_untouched(model, base_logits):
    torch_model = sl.unwrap(model)
    no_hooks = all(not m._forward_hooks for m in torch_model.modules())
    all_trainable = all(p.requires_grad for p in torch_model.parameters())
    return no_hooks and all_trainable and torch.equal(logits(model), base_logits)


@pytest.fixture
def saved(tmp_path):
    model = tiny_model("llama")
    adapter = trained_adapter(model)
    path = adapter.save(tmp_path / "adapter")
    adapter.detach()
    return path


@pytest.mark.parametrize("other", ["gpt2", "another seed", "another width"])
def test_an_adapter_is_refused_by_a_model_it_was_not_made_for(saved, other):
    if other == "gpt2":
        model = tiny_model("gpt2")
    elif other == "another seed":
        model = tiny_model("llama", seed=5)
    else:
        import transformers as T

        import probes
        from tests.tiny import byte_tokenizer, config_for

        config = config_for("llama")
        config.intermediate_size = 64
        model = probes.wrap(T.AutoModelForCausalLM.from_config(config), byte_tokenizer())
    base = logits(model)
    with pytest.raises(ValueError, match="saved for other weights|lacks|has no"):
        steering.load_innerpissa(saved, model)
    assert model_is_untouched(model, base)


def test_the_same_weights_load_and_reproduce_the_saved_adapter(saved):
    model = tiny_model("llama")
    original = trained_adapter(model)
    with original.coeff(1.0):
        expected = logits(model)
    original.detach()
    loaded = steering.load_innerpissa(saved, model)
    with loaded.coeff(1.0):
        torch.testing.assert_close(logits(model), expected)
    loaded.detach()


@pytest.mark.parametrize("damage", ["truncated tensors", "bad sign", "max_angle 0", "unknown field"])
def test_a_failed_load_leaves_no_hooks_and_every_parameter_trainable(saved, damage):
    model = tiny_model("llama")
    base = logits(model)
    if damage == "truncated tensors":
        tensors = saved / "adapter.safetensors"
        tensors.write_bytes(tensors.read_bytes()[:-64])
        expected = "adapter.safetensors is damaged"
    else:
        config = json.loads((saved / "adapter.json").read_text())
        edit = {"bad sign": ("sign", 3.0), "max_angle 0": ("max_angle", 0), "unknown field": ("colour", "red")}[damage]
        config[edit[0]] = edit[1]
        (saved / "adapter.json").write_text(json.dumps(config))
        expected = {"bad sign": "sign=3.0", "max_angle 0": "max_angle=0", "unknown field": "unknown fields"}[damage]
    with pytest.raises(ValueError, match=expected):
        steering.load_innerpissa(saved, model)
    assert model_is_untouched(model, base)


def test_detaching_adapters_in_any_order_restores_every_flag():
    model = tiny_model("llama")
    torch_model = sl.unwrap(model)
    torch_model.lm_head.weight.requires_grad_(False)  # a user's own choice, kept throughout
    flags = {name: p.requires_grad for name, p in torch_model.named_parameters()}
    a = steering.attach_innerpissa(model, layers=[0], kinds=("o",), rank=2)
    b = steering.attach_innerpissa(model, layers=[1], kinds=("down",), rank=2)
    a.detach()
    assert not any(p.requires_grad for p in torch_model.parameters())  # b still trains alone
    b.detach()
    assert {name: p.requires_grad for name, p in torch_model.named_parameters()} == flags


def test_a_lora_and_an_innerpissa_detached_out_of_order_restore_every_flag():
    from steering.adapters.lora import attach_lora

    model = tiny_model("llama")
    torch_model = sl.unwrap(model)
    flags = {name: p.requires_grad for name, p in torch_model.named_parameters()}
    lora = attach_lora(model, layers=[1], kinds=("o",), rank=2)
    adapter = steering.attach_innerpissa(model, layers=[2], kinds=("down",), rank=2)
    assert lora.num_parameters() > 0 and all(p.requires_grad for p in lora.trainable_parameters())
    lora.detach()
    adapter.detach()
    assert {name: p.requires_grad for name, p in torch_model.named_parameters()} == flags


def test_max_angle_zero_is_refused_instead_of_giving_nan():
    with pytest.raises(ValueError, match="max_angle=0"):
        steering.attach_innerpissa(tiny_model("llama"), layers=[1], kinds=("o",), rank=2, max_angle=0.0)


def test_a_no_svd_adapter_made_with_any_seed_reloads_its_own_random_bases(tmp_path):
    model = tiny_model("llama")
    adapter = steering.attach_innerpissa(model, layers=[1], kinds=("o",), rank=4, basis="random", seed=3)
    with torch.no_grad():
        for parameter in adapter.trainable_parameters():
            parameter.normal_(0, 0.05)
    with adapter.coeff(1.0):
        expected = logits(model)
    path = adapter.save(tmp_path / "adapter")
    adapter.detach()
    loaded = steering.load_innerpissa(path, model)
    with loaded.coeff(1.0):
        torch.testing.assert_close(logits(model), expected)
    loaded.detach()
