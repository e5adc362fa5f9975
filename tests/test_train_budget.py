"""ReprPO's training budget chosen on held-out pairs (early stopping, best parameters kept) and the checks of
its frozen direction (sign vote, cosine with the mean difference), each against an independent record."""

from __future__ import annotations

import math

import pytest
import torch

import probes
import steering
from probes import sublayers as sl
from steering.adapters.reprpo import train_reprpo
from tests.tiny import tiny_model

PATIENCE = 3


def attach(model, kind: str):
    if kind == "lora":
        return steering.attach_lora(model, [0, 1], ("o", "down"), rank=4)
    return steering.attach_innerpissa(model, layers=[0, 1], kinds=("o", "down"), rank=4)


@pytest.mark.parametrize("kind", ["innerpissa", "lora"])
def test_a_too_large_lr_stops_early_and_keeps_the_parameters_of_the_best_validation_step(kind, monkeypatch):
    model = tiny_model("llama")
    pairs = probes.honesty_pairs(n=24, tokenizer=model.tokenizer)
    adapter = attach(model, kind)
    parameters = adapter.trainable_parameters()
    copies = [[p.detach().clone() for p in parameters]]  # copies[k]: the parameters after k optimizer steps

    class Recording(torch.optim.AdamW):
        def step(self, closure=None):  # type: ignore[override]
            loss = super().step(closure)
            copies.append([p.detach().clone() for p in parameters])
            return loss

    monkeypatch.setattr(torch.optim, "AdamW", Recording)
    result = train_reprpo(
        model,
        adapter,
        pairs[:16],
        val_pairs=pairs[16:],
        steps=12,
        lr=0.03,  # 10× the default: the gap objective's validation loss rises after a step or three
        objective="gap",  # (the shift objective's keeps falling for 12 steps on this tiny model)
        eval_every=1,
        patience=PATIENCE,
        loss_layers=[2],
        tokens=1,
        progress=False,
    )
    best, run = result.best_step, result.steps_run
    assert len(copies) == run + 1 and len(result.history) == run
    assert 0 < best < run == min(12, best + PATIENCE)  # stopped PATIENCE steps after the best
    validation = result.validation.set_index("step")["val_loss"]  # type: ignore[union-attr]
    assert list(validation.index) == list(range(run + 1))  # before training and after every step
    assert int(validation.idxmin()) == best and result.val_loss == validation.min() < validation[run]
    for kept, at_best in zip(adapter.trainable_parameters(), copies[best], strict=True):
        assert torch.equal(kept, at_best)
    assert any(not torch.equal(kept, at_end) for kept, at_end in zip(adapter.trainable_parameters(), copies[run]))
    row = result.summary()
    assert (row["steps_run"], row["best_step"], row["lr"], row["stopped_early"]) == (run, best, 0.03, True)
    assert math.isfinite(row["train_loss"]) and row["val_loss"] == result.val_loss
    adapter.detach()


def test_without_validation_pairs_the_last_parameters_are_kept():
    model = tiny_model("llama")
    pairs = probes.honesty_pairs(n=8, tokenizer=model.tokenizer)
    adapter = steering.attach_innerpissa(model, layers=[0], kinds=("down",), rank=2)
    result = train_reprpo(model, adapter, pairs, steps=3, loss_layers=[1], tokens=1, progress=False)
    assert (result.steps_run, result.best_step, result.val_loss, result.validation) == (3, 3, None, None)
    assert math.isfinite(result.train_loss)
    adapter.detach()


def test_validation_pairs_that_are_training_pairs_are_flagged():
    model = tiny_model("llama")
    pairs = probes.honesty_pairs(n=8, tokenizer=model.tokenizer)
    adapter = steering.attach_innerpissa(model, layers=[0], kinds=("down",), rank=2)
    with pytest.warns(UserWarning, match="2 of the 2 validation pairs are also training pairs"):
        train_reprpo(model, adapter, pairs, val_pairs=pairs[:2], steps=1, loss_layers=[1], tokens=1, progress=False)
    adapter.detach()


def test_direction_vote_and_cosine_with_the_mean_difference_match_captured_states():
    model = tiny_model("llama")
    pairs = probes.honesty_pairs(n=16, tokenizer=model.tokenizer)
    adapter = steering.attach_innerpissa(model, layers=[0], kinds=("down",), rank=2)
    result = train_reprpo(model, adapter, pairs, steps=1, loss_layers=[2], tokens=1, progress=False)
    acts = probes.collect(model, pairs, layers=[2], sublayers="resid", progress=False)  # base model (adapter at c = 0)
    diffs = acts.diff[2, "resid"][:, -1].double()  # [pair, d]: positive − negative at the last token
    direction = result.directions[2].double()
    mean_diff = diffs.mean(0)
    expected_cos = float(mean_diff @ direction / (mean_diff.norm() * direction.norm()))
    expected_vote = float((diffs @ direction > 0).double().mean())
    assert abs(result.direction_mean_diff_cos[2] - expected_cos) < 1e-4
    assert result.direction_vote[2] == expected_vote
    assert result.summary()["direction_mean_diff_cos_L2"] == result.direction_mean_diff_cos[2]
    adapter.detach()


@pytest.mark.parametrize("kind", ["innerpissa", "lora"])
def test_weight_change_norm_is_the_frobenius_norm_of_the_weight_change(kind):
    model = tiny_model("llama")
    adapter = attach(model, kind)
    with torch.no_grad():
        for parameter in adapter.trainable_parameters():
            parameter.normal_(0, 0.1, generator=torch.Generator().manual_seed(parameter.numel()))
    blocks = sl.unwrap(model).model.layers
    modules = [m for layer in (0, 1) for m in (blocks[layer].self_attn.o_proj, blocks[layer].mlp.down_proj)]
    total = 0.0
    with torch.no_grad():
        for module in modules:  # the module's map of the identity at c = 1 minus at c = 0 is ΔWᵀ
            eye = torch.eye(module.in_features)[None]
            outputs = {}
            for c in (0.0, 1.0):
                with adapter.coeff(c):
                    outputs[c] = module(eye)[0]
            total += float((outputs[1.0] - outputs[0.0]).double().square().sum())
    assert total > 0 and adapter.weight_change_norm(1.0) == pytest.approx(math.sqrt(total), rel=1e-4)
    if kind == "lora":  # linear in c
        assert adapter.weight_change_norm(-2.0) == pytest.approx(2 * math.sqrt(total), rel=1e-4)
    adapter.detach()
