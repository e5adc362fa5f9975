"""The first-order effect (one backward pass through zero shifts) against an independent symmetric
finite difference of steered readouts, for activation and U-space directions, plain and fused modules."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

import analysis
import probes
from analysis.measures.predict import finite_difference_effects, first_order_effects
from steering import directions as dirs
from tests.tiny import tiny_model

CASES = [
    ("llama", 1, "resid", "mean_diff"),
    ("llama", 0, "o", "pca_diff"),
    ("llama", 1, "up", "mean_diff"),
    ("gpt2", 1, "q", "mean_diff"),  # a slice of GPT-2's fused c_attn
    ("llama", 1, "down", "uspace_pca"),  # applied in weight space: h + c·s·U diag(δs) Vᵀ x
]


@pytest.mark.parametrize("family, layer, kind, method", CASES)
def test_first_order_effect_equals_a_finite_difference(family, layer, kind, method):
    model = tiny_model(family)
    pairs = probes.honesty_pairs(n=8, tokenizer=model.tokenizer, chat=True)
    acts = probes.collect(model, pairs, layers=[layer], sublayers=kind, progress=False)
    direction = dirs.compute(method, acts, layer, kind, model=model)
    items = analysis.dilemmas()[:5]

    predicted = first_order_effects(model, [direction], items, batch_size=3)
    measured = finite_difference_effects(model, [direction], items, step=1e-2, batch_size=2)

    assert list(predicted["item"]) == list(measured["item"]) == [item.id for item in items]
    gradient, difference = predicted["effect"].to_numpy(), measured["effect"].to_numpy()
    assert np.abs(difference).max() > 1e-3  # the direction does move these readouts
    np.testing.assert_allclose(gradient, difference, rtol=2e-2, atol=2e-4)  # O(step²) + float32


def test_the_prediction_is_linear_in_the_direction_like_the_readout():
    """Negating and doubling a direction negates and doubles its first-order effect, item by item."""
    model = tiny_model("llama")
    pairs = probes.honesty_pairs(n=8, tokenizer=model.tokenizer, chat=True)
    acts = probes.collect(model, pairs, layers=[1], sublayers="resid", progress=False)
    direction = dirs.compute("mean_diff", acts, 1, "resid")
    variants = [
        replace(direction, vector=-direction.vector, method="negated"),
        replace(direction, scale=2 * direction.scale, method="doubled"),
    ]
    table = first_order_effects(model, [direction, *variants], analysis.dilemmas()[:4])
    effect = table.pivot(index="item", columns="method", values="effect")
    np.testing.assert_allclose(effect["negated"], -effect["mean_diff"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(effect["doubled"], 2 * effect["mean_diff"], rtol=1e-5, atol=1e-7)
