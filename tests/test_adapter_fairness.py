"""Fair InnerPiSSA ablations (issue 25, item 5): the no-SVD ablation at the leverage of the SVD bases, and
``max_angle`` bounding the rotation angle it names. Each is checked against an independent computation
(``torch.linalg.svd`` of the weight, eigenvalues of the rotation)."""

from __future__ import annotations

import json
import math

import pytest
import torch

import steering
from probes import sublayers as sl
from steering.adapters.innerpissa import cayley
from tests.tiny import tiny_model

TEXTS = ["The cat sat on the mat and looked at the door.", "I told my friend the truth.", "one two three four"]
DISPLACEMENT = 0.01  # about what Adam moves every parameter in a few steps at lr 3e-3, whatever its leverage


def principal_angles(R: torch.Tensor) -> torch.Tensor:
    """|arg λ| of the eigenvalues of an orthogonal matrix: its principal rotation angles."""
    return torch.linalg.eigvals(R.double()).angle().abs()


def displaced(model, **options):
    """An adapter whose every parameter is moved by ±DISPLACEMENT (the same signs for every variant)."""
    adapter = steering.attach_innerpissa(model, layers=[0, 1], kinds=("o", "down"), rank=8, **options)
    signs = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in adapter.trainable_parameters():
            parameter.copy_(DISPLACEMENT * torch.randn(parameter.shape, generator=signs).sign())
    return adapter


def output_change(model, adapter) -> float:
    """Mean ‖h(c = 1) − h(c = 0)‖ of the last layer's states over real tokens, relative to ‖h(0)‖."""
    batch = model.tokenizer(TEXTS, return_tensors="pt", padding=True)
    states = {}
    for c in (0.0, 1.0):
        with torch.no_grad(), adapter.coeff(c):
            states[c] = sl.unwrap(model)(**batch, output_hidden_states=True).hidden_states[-1][batch["attention_mask"].bool()]
    return float((states[1.0] - states[0.0]).norm(dim=-1).mean() / states[0.0].norm(dim=-1).mean())


def test_random_bases_carry_the_weights_true_top_singular_values():
    model = tiny_model("llama")
    adapter = steering.attach_innerpissa(model, layers=[0, 2], kinds=("o", "down"), rank=4, basis="random", seed=5)
    assert adapter.config.random_scale == "matched"
    blocks = sl.unwrap(model).model.layers
    for target in adapter.targets:
        layer, kind = target.name.split(".")
        module = blocks[int(layer)].self_attn.o_proj if kind == "o" else blocks[int(layer)].mlp.down_proj
        U_svd, S_svd, Vh_svd = torch.linalg.svd(module.weight.detach().double(), full_matrices=False)
        part = adapter.layer(target)
        torch.testing.assert_close(part.S.double(), S_svd[:4], rtol=1e-5, atol=1e-6)
        for basis in (part.U, part.V):  # orthonormal ...
            torch.testing.assert_close(basis.T @ basis, torch.eye(4), atol=1e-5, rtol=0)
        # ... and not the singular vectors: random directions overlap the top-4 subspace only by chance
        assert float((U_svd[:, :4].T @ part.U.double()).square().sum()) < 3.0
        assert float((Vh_svd[:4] @ part.V.double()).square().sum()) < 3.0
    adapter.detach()


def test_the_same_displacement_moves_the_output_as_much_in_random_bases_as_in_the_svd_bases():
    model = tiny_model("llama")
    moved = {}
    for name, options in {
        "svd": {},
        "random": {"basis": "random"},
        "random, projected S": {"basis": "random", "random_scale": "projected"},
    }.items():
        adapter = displaced(model, **options)
        moved[name] = output_change(model, adapter)
        adapter.detach()
    ratio, projected = moved["random"] / moved["svd"], moved["random, projected S"] / moved["svd"]
    assert 0.5 < ratio < 2.0, moved  # matched leverage (0.98 on this model)
    assert projected < 0.35, moved  # S = diag(UᵀWV): the old ablation barely moves the output (0.19 here)


def test_an_adapter_saved_before_the_options_loads_with_the_forward_it_was_trained_with(tmp_path):
    model = tiny_model("llama")
    batch = model.tokenizer(TEXTS, return_tensors="pt", padding=True)
    old = displaced(model, basis="random", random_scale="projected", angle_bound="entries", seed=2)
    with torch.no_grad():
        for parameter in old.trainable_parameters():
            parameter.mul_(40)  # large enough for the two bounds to differ
        with old.coeff(1.0):
            expected = sl.unwrap(model)(**batch).logits
    old.save(tmp_path / "old")
    old.detach()
    config = json.loads((tmp_path / "old" / "adapter.json").read_text())
    del config["angle_bound"], config["random_scale"]  # as written before these options existed
    (tmp_path / "old" / "adapter.json").write_text(json.dumps(config))
    loaded = steering.load_innerpissa(tmp_path / "old", model)
    assert (loaded.config.angle_bound, loaded.config.random_scale) == ("entries", "projected")
    with torch.no_grad(), loaded.coeff(1.0):
        torch.testing.assert_close(sl.unwrap(model)(**batch).logits, expected)
    loaded.detach()


@pytest.mark.parametrize("rank", [2, 4, 16])
@pytest.mark.parametrize("size", [1e-3, 0.3, 3.0, 100.0])
def test_max_angle_bounds_the_largest_principal_angle_of_the_rotation(rank, size):
    generator = size * torch.randn(rank, rank, generator=torch.Generator().manual_seed(rank))
    max_angle = 0.3
    for c in (1.0, -1.0, 0.5, -0.25):
        assert float(principal_angles(cayley(generator, c, max_angle)).max()) <= max_angle + 1e-5
    largest = float(principal_angles(cayley(generator, 1.0, max_angle)).max())
    skew = (generator - generator.T).double() / 2
    unbounded = 2 * math.atan(float(torch.linalg.eigvals(skew).abs().max()))  # the angle without any bound
    if unbounded > 2 * math.atan(3 * math.tan(max_angle / 2)):
        assert largest > 0.99 * max_angle  # saturated: the bound is reached, not just respected
    if size == 1e-3:  # far below the bound the generator is used as it is: R = (I − K)(I + K)⁻¹, K its skew part
        assert abs(largest - unbounded) < 1e-3 * unbounded
        eye = torch.eye(rank, dtype=torch.float64)
        torch.testing.assert_close(
            cayley(generator, 1.0, max_angle).double(), (eye - skew) @ torch.linalg.inv(eye + skew), atol=1e-5, rtol=0
        )
    # beyond |c| = 1 the angle grows as 2·atan(|c|·tan(max_angle / 2)) at most
    assert float(principal_angles(cayley(generator, 3.0, max_angle)).max()) <= 2 * math.atan(3 * math.tan(max_angle / 2)) + 1e-5


def test_the_old_entrywise_bound_did_not_bound_the_angle():
    generator = 3.0 * torch.randn(16, 16, generator=torch.Generator().manual_seed(16))
    assert float(principal_angles(cayley(generator, 1.0, 0.3, bound="entries")).max()) > 1.5  # 2.1 rad for "0.3"


def test_an_adapters_angles_respect_max_angle_and_the_bound_keeps_gradients_finite_at_zero():
    model = tiny_model("llama")
    adapter = steering.attach_innerpissa(model, layers=[0], kinds=("o", "down"), rank=8, rotate_u=True, max_angle=0.2, init_std=0.0)
    batch = model.tokenizer(TEXTS, return_tensors="pt", padding=True)
    with adapter.coeff(1.0):
        sl.unwrap(model)(**batch).logits.square().mean().backward()
    grads = [p.grad for p in adapter.trainable_parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)  # type: ignore[union-attr]
    with torch.no_grad():
        for parameter in adapter.trainable_parameters():
            parameter.normal_(0, 2.0, generator=torch.Generator().manual_seed(parameter.numel()))
    angles = adapter.largest_angles(1.0)
    assert sorted(angles) == ["0.down:u", "0.down:v", "0.o:u", "0.o:v"]
    assert all(0.19 < angle <= 0.2 + 1e-5 for angle in angles.values()), angles
    for target in adapter.targets:  # independently: the eigenvalues of the V rotation the forward uses
        layer = adapter.layer(target)
        R = cayley(layer.theta_v.detach(), 1.0, 0.2)  # type: ignore[union-attr]
        assert abs(float(principal_angles(R).max()) - angles[f"{target.name}:v"]) < 1e-6
    adapter.detach()


def test_a_bound_of_pi_or_more_is_refused():
    with pytest.raises(ValueError, match="below π"):
        steering.attach_innerpissa(tiny_model("llama"), layers=[1], kinds=("o",), rank=2, max_angle=3.2)
    with pytest.raises(ValueError, match="angle_bound='both'"):
        steering.attach_innerpissa(tiny_model("llama"), layers=[1], kinds=("o",), rank=2, angle_bound="both")  # type: ignore[arg-type]


def test_the_adapter_figure_shows_the_adapters_own_rotation_angles():
    """analysis.plots.adapter_changes draws what the adapter's rotation does (its saved angle bound), in degrees."""
    import math

    import analysis

    model = tiny_model("llama")
    adapter = steering.attach_innerpissa(model, layers=[0, 1], kinds=("o",), rank=4)
    with torch.no_grad():
        for parameter in adapter.trainable_parameters():
            parameter.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
    drawn = analysis.plots.adapter_changes(adapter).data[0].y
    expected = [adapter.largest_angles(1.0)[f"{t.name}:v"] * 180 / math.pi for t in adapter.targets]
    assert list(drawn) == pytest.approx(expected) and max(expected) <= adapter.config.max_angle * 180 / math.pi + 1e-6
    adapter.detach()
