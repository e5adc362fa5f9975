"""ReprPO refuses an adapter layer after every loss layer (it could never train), and the experiment reads
the loss at or after the deepest layer it adapts (Figure 2's last-but-three adapter trained nothing before)."""

from __future__ import annotations

import pytest
import torch

import probes
import steering
from steering.adapters.reprpo import default_loss_layer, train_reprpo
from tests.tiny import tiny_model

PAIRS_N = 8


def test_an_adapter_after_the_loss_layer_is_refused_before_training():
    model = tiny_model("llama")
    pairs = probes.honesty_pairs(n=PAIRS_N, tokenizer=model.tokenizer)
    adapter = steering.attach_innerpissa(model, layers=[0, 2], kinds=("o",), rank=2)
    before = [p.detach().clone() for p in adapter.trainable_parameters()]
    with pytest.raises(ValueError, match=r"layer\(s\) \[1\].*changes layer\(s\) \[2\].*loss_layers=\[2\]"):
        train_reprpo(model, adapter, pairs, steps=1, loss_layers=[1], tokens=1, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(before, adapter.trainable_parameters()))  # nothing trained
    adapter.detach()


def test_the_part_after_the_loss_layer_cannot_reach_what_the_loss_reads():
    """Independent of the check: with only the adapter trainable, the state after block 1 does not depend on a
    layer-2 adapter at all (no gradient can reach it), while the state after block 2 does."""
    model = tiny_model("llama")
    lora = steering.attach_lora(model, [2], ("o",), rank=2)
    ids = model.tokenizer(["a b c", "d e f"], return_tensors="pt", padding=True)
    with lora.coeff(1.0):
        hidden = probes.torch_module(model)(**ids, output_hidden_states=True).hidden_states
    assert not hidden[2].requires_grad  # resid at layer 1 (the loss layer of the refused case)
    assert hidden[3].requires_grad  # resid at layer 2: the adapter moves it
    lora.detach()


def test_adapted_layers_are_read_from_both_adapter_types():
    model = tiny_model("llama")
    inner = steering.attach_innerpissa(model, layers=[0, 2], kinds=("o",), rank=2)
    assert inner.adapted_layers() == [0, 2]
    inner.detach()
    lora = steering.attach_lora(model, [1], ("o",), rank=2)
    assert lora.adapted_layers() == [1]
    lora.detach()
    assert default_loss_layer(30) == 22 and default_loss_layer(3) == 2
