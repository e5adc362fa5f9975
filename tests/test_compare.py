"""Judging interventions: the LoRA handle, the capability drift and the seed aggregation."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

import analysis
from analysis import compare
from probes import sublayers as sl
from steering.adapters.lora import attach_lora
from tests.tiny import tiny_model


def test_lora_handle_is_identity_at_zero_reversible_and_detachable():
    model = tiny_model("llama")
    batch = model.tokenizer(["hello there", "a b"], return_tensors="pt", padding=True)
    with torch.no_grad():
        base = sl.unwrap(model)(**batch).logits
    lora = attach_lora(model, [0, 1], ("o", "up"), rank=4)
    with torch.no_grad():
        for parameter in lora.trainable_parameters():
            parameter.normal_(0, 0.3)
        assert torch.equal(sl.unwrap(model)(**batch).logits, base)
        with lora.coeff(1.0):
            plus = sl.unwrap(model)(**batch).logits
        assert (plus - base).abs().max() > 1e-3
    assert all(not p.requires_grad for n, p in sl.unwrap(model).named_parameters() if "lora_" not in n)
    lora.detach()
    with torch.no_grad():
        assert torch.equal(sl.unwrap(model)(**batch).logits, base)
    assert all(p.requires_grad for p in sl.unwrap(model).parameters())


def test_control_drift_is_the_mean_absolute_change_of_known_answers():
    from steering import Direction, steer

    model = tiny_model("llama")
    direction = Direction(torch.nn.functional.normalize(torch.ones(32), dim=0), 4.0, 1, "resid", "test")
    known = [item for item in analysis.controls() if item.sign != 0]
    at = {}
    for c in (-1.0, 0.0, 1.0):
        with steer(model, direction, c):
            at[c] = analysis.score_items(model, known, min_pmass=0.0).set_index("item")["readout"]
    expected = ((at[1.0] - at[0.0]).abs().mean() + (at[-1.0] - at[0.0]).abs().mean()) / 2
    assert compare.control_drift(model, direction) == pytest.approx(expected, rel=1e-4)


def test_methods_table_gives_the_mean_and_sd_over_seeds():
    runs = [
        compare.MethodRun("m", pd.DataFrame(), pd.DataFrame(), {"effect": e, "p_value": p, "delta_nll": 0.1}, seed=s)
        for s, (e, p) in enumerate([(1.0, 0.01), (2.0, 0.2), (4.0, 0.03)])
    ]
    row = compare.methods_table(runs).iloc[0]
    assert row["seeds"] == 3 and row["effect"] == pytest.approx(7 / 3)
    assert row["effect_sd"] == pytest.approx(float(pd.Series([1.0, 2.0, 4.0]).std(ddof=1)))
    assert row["p_value"] == pytest.approx(0.03) and row["p_value_max"] == pytest.approx(0.2)
