"""ReprPO training on a tiny model: it separates, stays reversible, and checks its sign."""

from __future__ import annotations

import pytest

import analysis
import probes
import steering
from steering.adapters.reprpo import train_reprpo
from tests.tiny import checksum, tiny_model


def independent_separation(model, adapter, pairs, layer, direction, c) -> float:
    """Mean positive − negative gap along ``direction`` at ``layer``'s last token, via probes.collect."""
    with adapter.coeff(c):
        acts = probes.collect(model, pairs, layers=[layer], sublayers="resid", progress=False)
    return float((acts.diff[layer, "resid"][:, -1] @ direction).mean())


def test_short_training_raises_separation_at_plus_one_and_lowers_it_at_minus_one():
    model = tiny_model("llama")
    pairs = probes.honesty_pairs(n=16, tokenizer=model.tokenizer)
    before = checksum(model)
    adapter = steering.attach_innerpissa(model, layers=[0, 1], kinds=("o", "down"), rank=8)
    result = train_reprpo(model, adapter, pairs, steps=25, lr=1e-2, loss_layers=[2], tokens=1, objective="gap", progress=False)
    direction = result.directions[2]
    at = {c: independent_separation(model, adapter, pairs, 2, direction, c) for c in (-1.0, 0.0, 1.0)}
    assert at[1.0] > at[0.0] > at[-1.0]
    assert checksum(model) == before  # training never touches a base weight
    assert list(result.history.columns[:3]) == ["step", "lr", "loss"] and len(result.history) == 25
    assert result.history["gain_pos"].iloc[-5:].mean() > 0 > result.history["gain_neg"].iloc[-5:].mean()
    assert len(analysis.plots.training_curves(result.history).data) == 8  # 4 loss parts; gap and midpoint at c = ±1
    adapter.detach()
    assert checksum(model) == before


def test_sign_check_flips_an_adapter_trained_the_wrong_way(monkeypatch):
    import steering.adapters.reprpo as train

    model = tiny_model("llama")
    pairs = probes.honesty_pairs(n=8, tokenizer=model.tokenizer)
    adapter = steering.attach_innerpissa(model, layers=[0], kinds=("down",), rank=4)
    original = train.projection_loss
    monkeypatch.setattr(train, "projection_loss", lambda gap, ref, scale, c, config: original(gap, ref, scale, -c, config))
    result = train_reprpo(model, adapter, pairs, steps=15, lr=2e-2, loss_layers=[2], tokens=1, progress=False)
    assert result.sign_flipped and adapter.config.sign == -1.0
    assert result.separation["c=+1"] > result.separation["c=0"] > result.separation["c=-1"]


def test_pairs_with_no_tokens_left_after_truncation_are_refused():
    model = tiny_model("llama")
    adapter = steering.attach_innerpissa(model, layers=[0], kinds=("down",), rank=2)
    with pytest.raises(ValueError, match="fewer than tokens=4"):
        train_reprpo(model, adapter, [("ab", "cd")], steps=1, progress=False)
    with pytest.raises(ValueError, match="max_length=1"):
        train_reprpo(model, adapter, [("a long text", "a short one")], steps=1, max_length=1, tokens=1, progress=False)
    with pytest.raises(ValueError, match="at least 2 pairs"):
        train_reprpo(model, adapter, [("a long text", "a short one")], steps=1, tokens=1, progress=False)


def test_uspace_direction_space_lies_in_the_top_output_singular_vectors_and_changes_the_direction():
    import torch

    model = tiny_model("llama")
    pairs = probes.honesty_pairs(n=12, tokenizer=model.tokenizer)
    found = {}
    for space in ("activation", "uspace"):
        adapter = steering.attach_innerpissa(model, layers=[0], kinds=("down",), rank=2)
        found[space] = (
            train_reprpo(model, adapter, pairs, steps=1, loss_layers=[1], tokens=1, direction_space=space, direction_rank=4, progress=False)
            .directions[1]
            .double()
        )
        adapter.detach()
    down = probes.sublayers.unwrap(model).model.layers[1].mlp.down_proj.weight.detach().double()
    U4 = torch.linalg.svd(down, full_matrices=False).U[:, :4]
    # by hand: the first principal axis of the pair differences' coordinates in U4, mapped back
    acts = probes.collect(model, pairs, layers=[1], sublayers="resid", progress=False)
    coords = acts.diff[1, "resid"][:, -1].double() @ U4
    axis = torch.linalg.svd(coords - coords.mean(0), full_matrices=False).Vh[0]
    expected = U4 @ axis
    assert abs(float(found["uspace"] @ expected / expected.norm())) > 0.999
    assert float((U4 @ U4.T @ found["uspace"]).norm()) > 0.999  # inside the span
    assert abs(float(found["uspace"] @ found["activation"])) < 0.99  # the option changes the result


def test_the_monotonic_hinge_is_per_pair_with_a_margin():
    import torch

    from steering.adapters.reprpo import monotonic_loss

    ref = torch.tensor([0.0, 0.0])
    plus = torch.tensor([-1.0, 3.0])  # pair 0 violates by 1, pair 1 exceeds by 3: a batch-mean hinge would be 0
    minus = torch.tensor([-1.0, -1.0])
    assert float(monotonic_loss(plus, minus, ref, margin=0.0)) == 0.5
    assert float(monotonic_loss(plus, minus, ref, margin=0.5)) == (1.5 + 0.0 + 0.0 + 0.0) / 2


def independent_midpoint(model, adapter, pairs, layer, direction, c) -> float:
    """Mean of (positive + negative) / 2 along ``direction`` at ``layer``'s last token, via probes.collect."""
    with adapter.coeff(c):
        acts = probes.collect(model, pairs, layers=[layer], sublayers="resid", progress=False)
    middle = (acts.positive[layer, "resid"][:, -1] + acts.negative[layer, "resid"][:, -1]) / 2
    return float((middle @ direction).mean())


def test_an_added_vector_moves_the_midpoint_and_is_invisible_to_the_gap():
    import torch

    from steering.adapters.reprpo import midpoints, separations

    generator = torch.Generator().manual_seed(0)
    states = {"h": torch.randn(6, 3, 5, generator=generator)}  # 3 pairs (pos, neg interleaved), 3 tokens, d = 5
    direction = {"h": torch.nn.functional.normalize(torch.randn(5, generator=generator), dim=0)}
    shifted = {"h": states["h"] + 0.7 * direction["h"]}
    projected = (states["h"] @ direction["h"]).numpy()
    by_hand = ((projected[0::2] + projected[1::2]) / 2).mean(-1)
    assert torch.allclose(midpoints(states, direction)[0], torch.as_tensor(by_hand), atol=1e-6)
    assert torch.allclose(midpoints(shifted, direction), midpoints(states, direction) + 0.7, atol=1e-5)
    assert torch.allclose(separations(shifted, direction), separations(states, direction), atol=1e-5)


def test_the_shift_objective_moves_the_pair_midpoint_both_ways():
    model = tiny_model("llama")
    pairs = probes.honesty_pairs(n=16, tokenizer=model.tokenizer)
    adapter = steering.attach_innerpissa(model, layers=[0, 1], kinds=("o", "down"), rank=8)
    result = train_reprpo(model, adapter, pairs, steps=25, lr=1e-2, loss_layers=[2], tokens=1, objective="shift", progress=False)
    direction = result.directions[2]
    at = {c: independent_midpoint(model, adapter, pairs, 2, direction, c) for c in (-1.0, 0.0, 1.0)}
    assert at[1.0] > at[0.0] > at[-1.0]
    assert result.history["shift_pos"].iloc[-5:].mean() > 0 > result.history["shift_neg"].iloc[-5:].mean()
    with pytest.raises(ValueError, match="absolute margin on the gap"):
        train_reprpo(model, adapter, pairs, steps=1, objective="shift", projection="softplus", progress=False)
    with pytest.raises(ValueError, match="objective='mid'"):
        train_reprpo(model, adapter, pairs, steps=1, objective="mid", progress=False)
