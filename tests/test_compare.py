"""The method comparison on a tiny model: every baseline and ablation runs, the model ends as it began."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

import analysis
import probes
from analysis import compare
from probes import sublayers as sl
from steering.lora import attach_lora
from tests.tiny import checksum, tiny_model




def test_compare_methods_runs_every_method_and_restores_the_model():
    model = tiny_model("llama")
    before = checksum(model)
    modules_before = [name for name, _ in sl.unwrap(model).named_modules()]
    pairs = probes.honesty_pairs(n=8, tokenizer=model.tokenizer)
    table, runs = compare.compare_methods(model, pairs, analysis.dilemmas()[:4], layers=[0, 1], kinds=("down",), rank=4,
                                          train_options={"steps": 2, "loss_layers": [2], "tokens": 1, "progress": False},
                                          log=lambda message: None)
    assert list(table["method"]) == ["InnerPiSSA", "PCA resid L1", "random L1", "prompting", "LoRA (ReprPO)",
                                     "InnerPiSSA: no V rotation", "InnerPiSSA: no S scaling", "InnerPiSSA: S mult",
                                     "InnerPiSSA: U rotation on"]
    for column in ("slope", "paired_t", "p_value", "spearman", "delta_nll", "valid_frac", "control_effect", "parameters", "train_s"):
        assert column in table
    params = dict(zip(table["method"], table["parameters"]))
    assert params["InnerPiSSA"] == 2 * (4 * 4 + 4) and params["InnerPiSSA: no V rotation"] == 2 * 4
    assert params["LoRA (ReprPO)"] == 2 * 4 * (48 + 32) and params["prompting"] == 0
    assert set(runs[0].dose["coeff"]) == {-2.0, -1.0, 0.0, 1.0, 2.0}
    assert set(runs[0].generations) == {-1.0, 0.0, 1.0}
    assert checksum(model) == before and [n for n, _ in sl.unwrap(model).named_modules()] == modules_before
    assert "InnerPiSSA" in compare.methods_markdown(table)
    assert len(compare.pareto_figure(table).data) == len(table)


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


def test_control_effect_and_paired_t_on_known_tables():
    controls = pd.DataFrame([{"item": i, "coeff": c, "readout": c * (i + 1), "known": i < 2} for i in range(3) for c in (-1.0, 0.0, 1.0)])
    assert compare.control_effect(controls) == pytest.approx(1.5)
    dose = pd.DataFrame([{"item": i, "coeff": c, "readout": c * 2 + 0.1 * i * c, "valid": True} for i in range(5) for c in (-1.0, 1.0)])
    t, p = compare.paired_t(dose)
    assert t > 10 and p < 1e-3
