"""ReprPO training on a tiny model: it separates, stays reversible, and checks its sign."""

from __future__ import annotations

import pytest

import analysis
import probes
import steering
from steering.train import train_reprpo
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
    result = train_reprpo(model, adapter, pairs, steps=25, lr=1e-2, loss_layers=[2], tokens=1, progress=False)
    direction = result.directions[2]
    at = {c: independent_separation(model, adapter, pairs, 2, direction, c) for c in (-1.0, 0.0, 1.0)}
    assert at[1.0] > at[0.0] > at[-1.0]
    assert checksum(model) == before  # training never touches a base weight
    assert list(result.history.columns[:3]) == ["step", "lr", "loss"] and len(result.history) == 25
    assert result.history["gain_pos"].iloc[-5:].mean() > 0 > result.history["gain_neg"].iloc[-5:].mean()
    assert len(analysis.plots.training_curves(result.history).data) == 6
    adapter.detach()
    assert checksum(model) == before


def test_sign_check_flips_an_adapter_trained_the_wrong_way(monkeypatch):
    import steering.train as train

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
