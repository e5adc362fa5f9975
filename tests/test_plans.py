"""Direction arithmetic and steering plans (several directions, layers, weights and modes at once)."""

from __future__ import annotations

import pytest
import torch

import analysis
import steering
from probes import sublayers as sl
from steering import Direction, Steering, applied, steer
from steering.steerable import load_steerable
from tests.tiny import tiny_model

BATCH = {"input_ids": torch.tensor([[1, 70, 71, 72, 73], [1, 80, 81, 82, 83]]), "attention_mask": torch.ones(2, 5, dtype=torch.long)}


def direction(layer, kind="resid", seed=0, scale=1.5, width=32):
    torch.manual_seed(seed)
    return Direction(torch.nn.functional.normalize(torch.randn(width), dim=0), scale, layer, kind, f"d{seed}")


def logits(model):
    with torch.no_grad():
        return sl.unwrap(model)(**BATCH).logits


def test_arithmetic_acts_on_the_steps():
    a, b = direction(1, seed=1), direction(1, seed=2)
    torch.testing.assert_close((a + b).step, a.step + b.step)
    torch.testing.assert_close((a - b).step, a.step - b.step)
    torch.testing.assert_close((2.5 * a).step, 2.5 * a.step)
    torch.testing.assert_close((-a).step, -a.step)
    orthogonal = a.orthogonalized(b)
    assert abs(float(orthogonal.vector @ b.vector)) < 1e-6
    torch.testing.assert_close(orthogonal.step + (a.step @ b.vector) * b.vector, a.step)
    assert abs(float(torch.linalg.vector_norm((a + b).vector)) - 1) < 1e-6
    with pytest.raises(ValueError, match="one \\(layer, kind\\)"):
        a + direction(2, seed=3)


def test_a_sum_steers_like_both_directions_together():
    model = tiny_model("llama")
    a, b = direction(1, seed=1), direction(1, seed=2)
    with steer(model, a + b, 1.3):
        summed = logits(model)
    with steer(model, [a, b], 1.3):
        together = logits(model)
    torch.testing.assert_close(summed, together, rtol=1e-5, atol=1e-5)


def test_a_plan_equals_its_directions_applied_one_inside_the_other():
    model = tiny_model("llama")
    a, b = direction(0, seed=1), direction(2, "o", seed=2)
    plan = Steering([a, b], weights=[1.0, -0.5], modes=["add", "ablate"])
    with applied(model, plan, 2.0):
        by_plan = logits(model)
    with steer(model, a, 2.0), steer(model, b, -1.0, mode="ablate"):
        nested = logits(model)
    plain = logits(model)
    assert torch.equal(by_plan, nested)
    assert (by_plan - plain).abs().max() > 1e-3
    with applied(model, plan, 0.0):
        assert torch.equal(logits(model), plain)


def test_a_plan_round_trips_through_its_files(tmp_path):
    model = tiny_model("llama")
    a, b, gate = direction(1, seed=1), direction(1, seed=2), direction(1, seed=4)
    plan = Steering(
        [a, b],
        weights=[1.0, 0.25],
        modes=["clamp", "add"],
        targets=[0.7, None],
        condition=steering.Condition(gate, -0.2),
        positions=slice(1, 4),
    )
    plan.save(tmp_path / "plan", model=model)
    loaded = load_steerable(tmp_path / "plan", model)
    assert isinstance(loaded, Steering)
    assert (loaded.weights, loaded.modes, loaded.targets, loaded.name) == (plan.weights, plan.modes, plan.targets, plan.name)
    assert loaded.condition is not None and loaded.condition.threshold == -0.2 and loaded.positions == slice(1, 4)
    assert torch.equal(loaded.condition.direction.vector, gate.vector)
    for x, y in zip(loaded.directions, plan.directions):
        assert torch.equal(x.vector, y.vector) and x.scale == y.scale and (x.layer, x.kind, x.method) == (y.layer, y.kind, y.method)
    record = (tmp_path / "plan" / "steerable.json").read_text()
    assert "model.layers.1" in record
    with applied(model, plan, 1.5):
        original = logits(model)
    with applied(model, loaded, 1.5):
        again = logits(model)
    assert torch.equal(original, again)


def test_dose_response_takes_a_plan_in_ablate_mode():
    model = tiny_model("llama")
    plan = Steering([direction(1, seed=1)], modes=["ablate"])
    items = analysis.dilemmas()[:3]
    df = analysis.dose_response(model, plan, items, coeffs=(0.0, 1.0), min_pmass=0.0)
    unsteered = analysis.score_items(model, items, min_pmass=0.0)
    assert (df[df["coeff"] == 0]["logratio"].to_numpy() == unsteered["logratio"].to_numpy()).all()
    assert (df[df["coeff"] == 1]["logratio"].to_numpy() != unsteered["logratio"].to_numpy()).any()


def test_plans_refuse_mismatched_lists():
    with pytest.raises(ValueError, match="2 directions but 1 weights"):
        Steering([direction(1, seed=1), direction(1, seed=2)], weights=[1.0])
    with pytest.raises(ValueError, match="mode='scale'"):
        Steering([direction(1)], modes=["scale"])
