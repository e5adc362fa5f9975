"""InnerPiSSA: identity at c = 0, exact detach, merge, save/load, orthogonality, gradients."""

from __future__ import annotations

import pytest
import torch

import probes
import steering
from probes import sublayers as sl
from probes.module_output import module_hidden
from steering.adapters.innerpissa import cayley
from tests.tiny import checksum, tiny_model

TEXTS = ["The cat sat on the mat", "We", "numbers one two three four"]


def logits(model, coeff=None, adapter=None):
    batch = model.tokenizer(TEXTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        if adapter is None:
            return sl.unwrap(model)(**batch).logits
        with adapter.coeff(coeff):
            return sl.unwrap(model)(**batch).logits


def attach(model, **options):
    adapter = steering.attach_innerpissa(
        model, layers=[0, 2], kinds=options.pop("kinds", ("o", "down", "q")), rank=4, **({"rotate_u": True, "init_std": 0.05} | options)
    )
    with torch.no_grad():  # trained-looking parameters, not the tiny init
        for parameter in adapter.trainable_parameters():
            parameter.normal_(0, 0.3, generator=torch.Generator().manual_seed(parameter.numel()))
    return adapter


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox", "qwen3"])
def test_c_zero_is_the_base_model_and_detach_restores_it(family):
    model = tiny_model(family)
    base, before = logits(model), checksum(model)
    adapter = attach(model)
    assert (logits(model, 0.0, adapter) - base).abs().max() <= 1e-5
    assert (logits(model, 1.0, adapter) - base).abs().max() > 1e-2  # it does something at c = 1
    adapter.detach()
    assert torch.equal(logits(model), base) and checksum(model) == before
    assert all(p.requires_grad for p in sl.unwrap(model).parameters())  # flags restored


@pytest.mark.parametrize("mode", ["add", "tanh", "mult", "none"])
def test_merge_equals_the_unmerged_forward_and_unmerge_restores(mode):
    model = tiny_model("gpt2")  # Conv1D weights and a fused q/k/v
    before = checksum(model)
    adapter = attach(model, scale_mode=mode)
    hooked = logits(model, 0.7, adapter)
    adapter.merge(0.7)
    merged = logits(model)  # hooks are inert while merged
    torch.testing.assert_close(merged, hooked, atol=1e-4, rtol=1e-4)
    adapter.unmerge()
    assert checksum(model) == before


def test_rotations_are_orthogonal_and_reversible():
    generator = torch.randn(6, 6, generator=torch.Generator().manual_seed(0))
    for c in (1.0, -1.0, 2.5):
        R = cayley(generator, c, max_angle=0.3)
        torch.testing.assert_close(R @ R.T, torch.eye(6), atol=1e-5, rtol=0)
    torch.testing.assert_close(cayley(generator, -1.0, 0.3), cayley(generator, 1.0, 0.3).T, atol=1e-6, rtol=0)
    torch.testing.assert_close(cayley(generator, 0.0, 0.3), torch.eye(6))


def test_save_and_load_reproduce_logits_at_plus_and_minus_one(tmp_path):
    model = tiny_model("llama")
    adapter = attach(model)
    expected = {c: logits(model, c, adapter) for c in (1.0, -1.0)}
    adapter.flip_sign()
    flipped = logits(model, 1.0, adapter)
    adapter.save(tmp_path / "adapter")
    adapter.detach()
    config = (tmp_path / "adapter" / "adapter.json").read_text()
    assert '"kinds": [' in config and '"rank": 4' in config and '"sign": -1.0' in config
    loaded = steering.load_innerpissa(tmp_path / "adapter", model)
    torch.testing.assert_close(logits(model, 1.0, loaded), flipped)
    torch.testing.assert_close(logits(model, -1.0, loaded), expected[1.0])


def test_per_row_coefficients_match_single_coefficients():
    model = tiny_model("llama")
    adapter = attach(model)
    batch = model.tokenizer([TEXTS[0]] * 3, return_tensors="pt")
    with torch.no_grad(), adapter.coeff(torch.tensor([-1.0, 0.0, 1.0])):
        together = sl.unwrap(model)(**batch).logits
    for row, c in enumerate((-1.0, 0.0, 1.0)):
        with torch.no_grad(), adapter.coeff(c):
            alone = sl.unwrap(model)(**model.tokenizer([TEXTS[0]], return_tensors="pt")).logits[0]
        torch.testing.assert_close(together[row], alone, atol=1e-5, rtol=1e-4)


def test_gradients_reach_rotation_and_scale_through_an_nnsight_trace_and_nothing_else():
    model = tiny_model("llama")
    adapter = steering.attach_innerpissa(model, layers=[0], kinds=("o", "up"), rank=4, rotate_u=True, scale_mode="mult")
    batch = dict(model.tokenizer(TEXTS, return_tensors="pt", padding=True))
    with adapter.coeff(1.0), model.trace(batch):
        hidden = model.model.layers[2].output.save()
    module_hidden(hidden).pow(2).mean().backward()
    names = {name for name, p in adapter.layers.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert names == {f"{t}.{p}" for t in ("0_o", "0_up") for p in ("theta_v", "theta_u", "scale")}
    assert all(p.grad is None for p in sl.unwrap(model).parameters())
    assert adapter.num_parameters() == 2 * (4 * 4 * 2 + 4)


def test_data_aware_selection_picks_the_most_separating_components():
    model = tiny_model("llama")
    pairs = probes.honesty_pairs(n=12, tokenizer=model.tokenizer)
    adapter = steering.attach_innerpissa(model, layers=[1], kinds=("down",), rank=3, select="data", pairs=pairs)
    chosen = adapter.config.components["1.down"]
    acts = probes.collect(model, pairs, layers=[1], sublayers="down", progress=False)
    U = torch.linalg.svd(sl.unwrap(model).model.layers[1].mlp.down_proj.weight.detach(), full_matrices=False).U
    separation = (acts.diff[1, "down"][:, -1] @ U).abs().mean(0)
    assert sorted(chosen) == sorted(separation.topk(3).indices.tolist())


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m: steering.attach_innerpissa(m, layers=[0], kinds=("q",), rank=33), "rank=33 is larger"),
        (lambda m: steering.attach_innerpissa(m, layers=[0], kinds=("gate",), rank=2), "kind the gpt2 architecture lacks"),
        (lambda m: steering.attach_innerpissa(m, layers=[0], kinds=("resid",), rank=2), "has none"),
        (lambda m: steering.attach_innerpissa(m, layers=[0], kinds=("o",), select="data"), "needs pairs"),
    ],
)
def test_bad_adapter_requests_raise_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call(tiny_model("gpt2"))
