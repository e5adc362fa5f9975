"""Interventions: exact edits, c = 0 identity, per-row coefficients, generation, calibration."""

from __future__ import annotations

import pytest
import torch

import probes
from probes import sublayers as sl
from probes.module_output import module_hidden
from steering import Direction, calibrate, steer
from tests.tiny import tiny_model

TEXTS = ["The cat sat on", "A long road", "We", "numbers one two three"]


def inputs(model, texts=TEXTS):
    return model.tokenizer(texts, return_tensors="pt", padding=True)


def record(model, path: str):
    """A plain hook registered after steering's, recording what the module finally returns."""
    seen = []
    module = sl.get_module(model, path)
    handle = module.register_forward_hook(
        lambda m, a, kw, out: seen.append((a[0].detach().clone() if a else None, module_hidden(out).detach().clone())), with_kwargs=True
    )
    return seen, handle


def random_direction(model, layer: int, kind: str, seed: int = 0, scale: float = 0.7) -> Direction:
    sub = sl.resolve(model, layer, kind)
    width = sl.config_of(model).hidden_size if kind == "resid" else sl.weight_matrix(model, sub).shape[0]
    vector = torch.nn.functional.normalize(torch.randn(width, generator=torch.Generator().manual_seed(seed)), dim=0)
    return Direction(vector=vector, scale=scale, layer=layer, kind=kind, method="random")


@pytest.mark.parametrize(
    "family, kind", [("llama", "resid"), ("llama", "up"), ("qwen2", "attn"), ("gpt2", "q"), ("gpt_neox", "v"), ("gpt2", "mlp")]
)
def test_additive_steering_changes_the_output_by_exactly_c_s_v(family, kind):
    model = tiny_model(family)
    torch_model = sl.unwrap(model)
    direction = random_direction(model, 1, kind)
    sub = sl.resolve(model, 1, kind)
    batch = inputs(model)
    plain, handle = record(model, sub.path)
    with torch.no_grad():
        torch_model(**batch)
    handle.remove()
    with steer(model, direction, 1.5):
        steered, handle = record(model, sub.path)
        with torch.no_grad():
            torch_model(**batch)
        handle.remove()
    change = sub.split(steered[0][1]) - sub.split(plain[0][1])
    expected = (1.5 * 0.7 * direction.vector).expand_as(change)
    torch.testing.assert_close(change, expected, atol=1e-5, rtol=1e-5)
    if sub.fused is not None:  # the other q/k/v slices of the fused output are untouched
        whole_change = (steered[0][1] - plain[0][1]).abs().sum()
        assert float(whole_change) == pytest.approx(float(change.abs().sum()), rel=1e-4)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_c_zero_equals_no_steering(family):
    model = tiny_model(family)
    torch_model = sl.unwrap(model)
    batch = inputs(model)
    with torch.no_grad():
        base = torch_model(**batch).logits
        with steer(model, [random_direction(model, 0, "resid"), random_direction(model, 2, "up" if family == "llama" else "o")], 0.0):
            zero = torch_model(**batch).logits
    assert torch.equal(base, zero)


def test_weight_space_steering_equals_dense_low_rank_update():
    model = tiny_model("llama")
    torch_model = sl.unwrap(model)
    basis = probes.weight_svd(model, 1, "down")
    coords = torch.nn.functional.normalize(torch.randn(basis.rank, generator=torch.Generator().manual_seed(3)), dim=0)
    direction = Direction(
        vector=basis.U @ coords,
        scale=0.4,
        layer=1,
        kind="mlp",
        method="uspace_pca",
        space="uspace",
        coords=coords,
        meta={"basis_kind": "mlp"},
    )
    weight = torch_model.model.layers[1].mlp.down_proj.weight.detach()
    U, _, Vh = torch.linalg.svd(weight, full_matrices=False)
    # dense U diag(δs) Vᵀ from an independent SVD: a sign flip of a singular pair (u_i, v_i)
    # cancels in u_i δ_i v_iᵀ, so steerscope's basis and linalg's give the same ΔW
    delta_w = (U * coords) @ Vh
    batch = inputs(model)
    with steer(model, direction, -2.0):
        seen, handle = record(model, "model.layers.1.mlp.down_proj")
        with torch.no_grad():
            torch_model(**batch)
        handle.remove()
    x, out = seen[0]
    expected = x @ weight.T + (-2.0 * 0.4) * x @ delta_w.T
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)


def test_per_row_coefficients_equal_running_each_row_alone():
    model = tiny_model("qwen3")
    torch_model = sl.unwrap(model)
    direction = random_direction(model, 1, "resid", scale=2.0)
    text = ["The weather today is"]
    batch = inputs(model, text * 3)
    coeffs = torch.tensor([-1.0, 0.0, 2.5])
    with torch.no_grad(), steer(model, direction, coeffs):
        together = torch_model(**batch).logits
    for row, c in enumerate(coeffs.tolist()):
        with torch.no_grad(), steer(model, direction, c):
            alone = torch_model(**inputs(model, text)).logits[0]
        torch.testing.assert_close(together[row], alone, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="one value per batch row"), torch.no_grad(), steer(model, direction, torch.tensor([1.0, 2.0])):
        torch_model(**batch)


def test_steering_applies_at_every_generated_token_with_kv_cache():
    model = tiny_model("llama")
    torch_model = sl.unwrap(model)
    direction = random_direction(model, 1, "resid")
    batch = inputs(model, ["The cat sat on"])
    path = sl.resolve(model, 1, "resid").path
    before, first = [], sl.get_module(model, path).register_forward_hook(lambda m, a, out: before.append(module_hidden(out).clone()))
    with steer(model, direction, 3.0):
        after, handle = record(model, path)
        with torch.no_grad():
            torch_model.generate(**batch, max_new_tokens=5, do_sample=False, use_cache=True, pad_token_id=0)
        handle.remove()
    first.remove()
    assert len(before) == len(after) == 5  # prefill + 4 decode steps
    assert [b.shape[1] for b in before[1:]] == [1, 1, 1, 1]  # KV cache on: one new position per step
    for unedited, (_, edited) in zip(before, after):
        torch.testing.assert_close(edited - unedited, (3.0 * 0.7 * direction.vector).expand_as(edited), atol=1e-5, rtol=1e-5)


def test_steering_acts_inside_nnsight_traces_downstream():
    model = tiny_model("llama")
    direction = random_direction(model, 0, "resid")
    batch = dict(inputs(model))
    with torch.no_grad(), model.trace(batch):
        plain = model.model.layers[1].output.save()
    with torch.no_grad(), steer(model, direction, 1.0), model.trace(batch):
        steered = model.model.layers[1].output.save()
    assert not torch.allclose(module_hidden(plain), module_hidden(steered))


def test_calibrate_finds_the_coefficient_where_p95_kl_reaches_the_target():
    from steering.calibrate import greedy_continuations, kl_quantiles

    model = tiny_model("llama")
    direction = random_direction(model, 1, "resid", scale=1.0)
    c = calibrate(model, direction, target_kl=0.05, max_new_tokens=6)
    full, mask = greedy_continuations(
        model,
        (
            "The weather today is",
            "Here is a short description of a kitchen:",
            "My favourite way to spend a Sunday is",
            "The history of the bicycle begins",
        ),
        6,
    )
    below, at = kl_quantiles(model, direction, [c * 0.9, c], full, mask, 0.95)
    assert below < 0.05 <= at * 1.0001
    with pytest.raises(ValueError, match="target_kl"):
        calibrate(model, direction, target_kl=0)
