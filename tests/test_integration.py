"""The embedded SmolLM2 model end to end (slow)."""

from __future__ import annotations

import pytest
import torch

import probes
from probes import sublayers as sl

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_collect_on_embedded_model_matches_output_hidden_states(smollm, padding_side):
    pairs = probes.honesty_pairs(n=6, tokenizer=smollm.tokenizer, chat=True, seed=3)
    pairs += probes.as_pairs([("I love cheese; let me tell you about", "I hate cheese; let me tell you about")])
    smollm.tokenizer.padding_side = padding_side
    try:
        acts = probes.collect(smollm, pairs, layers=[0, 14, 28, 29], sublayers=("resid", "o", "up"), tokens=2, batch_size=4, progress=False)
    finally:
        smollm.tokenizer.padding_side = "left"
    torch_model = sl.unwrap(smollm)
    for index in (0, 6):
        ids = smollm.tokenizer(pairs[index].negative, return_tensors="pt")
        with torch.no_grad():
            hidden = torch_model(**ids, output_hidden_states=True).hidden_states
        for layer in (0, 14, 28):
            torch.testing.assert_close(acts[layer, "resid"][index, 1], hidden[layer + 1][0, -2:], atol=2e-4, rtol=1e-4)


def test_top_singular_values_of_embedded_weights_lowrank_within_one_percent(smollm):
    for layer, kind in [(3, "up"), (20, "down"), (10, "q")]:
        exact = probes.weight_svd(smollm, layer, kind).S[:32]
        approx = probes.weight_svd(smollm, layer, kind, rank=32, lowrank=True, cache=False).S
        assert ((approx - exact).abs() / exact).max() < 0.01
