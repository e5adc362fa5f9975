"""Invariants over random inputs (hypothesis), on tiny models.

- batch size and padding side never change what `collect` captures;
- c = 0 is exactly the base model, whatever the direction;
- `steer` always restores the model, even when its block raises;
- per-row coefficients equal one coefficient at a time;
- a sweep killed after a random number of rows and resumed equals an uninterrupted one;
- a steering plan saved, loaded and applied equals the plan applied (modes, weights, targets, positions, conditions).

Examples per property are set in `PROFILE` below (CI runs them as written).
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import probes
import steering
from probes import sublayers as sl
from steering import Direction
from tests.tiny import tiny_model

PROFILE = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow], derandomize=False)
WORDS = ["honest", "liar", "the", "sky", "is", "blue", "I", "love", "hate", "cheese", "a", "truthful", "note", "trains", "Sun"]


@functools.cache
def model(family: str = "llama", padding_side: str = "left"):
    return tiny_model(family, padding_side=padding_side)


texts = st.lists(st.sampled_from(WORDS), min_size=3, max_size=12).map(" ".join)
pair_sets = st.lists(st.tuples(texts, texts).filter(lambda p: p[0] != p[1]), min_size=1, max_size=6)


@settings(max_examples=25, **PROFILE)
@given(
    pairs=pair_sets,
    batch_size=st.integers(1, 8),
    side=st.sampled_from(["left", "right"]),
    tokens=st.integers(1, 3),
    family=st.sampled_from(["llama", "gpt2"]),
)
def test_batch_size_and_padding_never_change_captures(pairs, batch_size, side, tokens, family):
    reference = probes.collect(
        model(family, "left"), pairs, layers="all", sublayers=("resid", "v", "down"), tokens=tokens, batch_size=1, progress=False
    )
    varied = probes.collect(
        model(family, side), pairs, layers="all", sublayers=("resid", "v", "down"), tokens=tokens, batch_size=batch_size, progress=False
    )
    for key in reference:
        torch.testing.assert_close(varied[key], reference[key], atol=2e-5, rtol=1e-4)


directions = st.builds(
    lambda seed, layer, kind, scale: Direction(
        vector=torch.nn.functional.normalize(
            torch.randn(48 if kind == "gate" else 32, generator=torch.Generator().manual_seed(seed)), dim=0
        ),
        scale=scale,
        layer=layer,
        kind=kind,
        method="random",
    ),
    seed=st.integers(0, 10_000),
    layer=st.integers(0, 2),
    kind=st.sampled_from(["resid", "o", "down", "gate", "mlp"]),
    scale=st.floats(0.01, 100.0),
)


def logits(m, text="Honest: the sky is"):
    with torch.no_grad():
        return sl.unwrap(m)(**m.tokenizer([text], return_tensors="pt")).logits


@settings(max_examples=30, **PROFILE)
@given(direction=directions)
def test_c_zero_is_the_base_model_exactly(direction):
    base = logits(model())
    with steering.steer(model(), direction, 0.0):
        assert torch.equal(logits(model()), base)


@settings(max_examples=20, **PROFILE)
@given(direction=directions, coeff=st.floats(-5, 5), fail=st.booleans())
def test_steer_always_restores_the_model(direction, coeff, fail):
    base = logits(model())
    try:
        with steering.steer(model(), direction, coeff):
            if fail:
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    assert torch.equal(logits(model()), base)
    assert all(not m._forward_hooks for m in sl.unwrap(model()).modules())


@settings(max_examples=15, **PROFILE)
@given(direction=directions, coeffs=st.lists(st.floats(-4, 4, allow_nan=False), min_size=1, max_size=5))
def test_per_row_coefficients_equal_one_coefficient_at_a_time(direction, coeffs):
    m = model()
    batch = m.tokenizer(["Honest: the sky is"] * len(coeffs), return_tensors="pt")
    with torch.no_grad(), steering.steer(m, direction, torch.tensor(coeffs)):
        together = sl.unwrap(m)(**batch).logits
    for row, c in enumerate(coeffs):
        with steering.steer(m, direction, c):
            torch.testing.assert_close(together[row], logits(m)[0], atol=1e-4, rtol=1e-4)


@functools.cache
def uninterrupted_sweep() -> pd.DataFrame:
    import tempfile

    from tests.test_sweep_faults import small_sweep

    return small_sweep(tempfile.mkdtemp(prefix="uninterrupted-")).results


@settings(max_examples=4, **PROFILE)
@given(fraction=st.floats(0.0, 1.0))
def test_a_sweep_killed_at_a_random_row_and_resumed_equals_an_uninterrupted_one(tmp_path_factory, fraction):
    import analysis.studies.sweep as sweep_module
    from tests.test_sweep_faults import metrics, small_sweep

    complete = uninterrupted_sweep()
    stop_at = 1 + int(fraction * (len(complete) - 1))  # a row of the sweep, first to last
    out = tmp_path_factory.mktemp("killed")
    original = sweep_module.dose_response
    calls = []

    def dying(*args, **kwargs):
        calls.append(1)
        if len(calls) == stop_at:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    sweep_module.dose_response = dying
    try:
        with pytest.raises(KeyboardInterrupt):
            small_sweep(out)
    finally:
        sweep_module.dose_response = original
    resumed = small_sweep(out, resume=True).results
    pd.testing.assert_frame_equal(metrics(resumed), metrics(complete))


places = st.tuples(st.integers(0, 2), st.sampled_from(["resid", "o", "down", "mlp"]))  # all 32 wide on the tiny llama
bounds = st.none() | st.integers(0, 8)
plan_positions = (
    st.sampled_from(["all", "prompt", "generated"])
    | st.integers(1, 6)
    | st.integers(1, 6).map(np.int64)
    | st.builds(slice, bounds, bounds, st.none() | st.integers(1, 3))
)


def unit_direction(seed: int, layer: int, kind: str, scale: float) -> Direction:
    vector = torch.nn.functional.normalize(torch.randn(32, generator=torch.Generator().manual_seed(seed)), dim=0)
    return Direction(vector=vector, scale=scale, layer=layer, kind=kind, method=f"r{seed}")


@st.composite
def plans(draw) -> steering.Steering:
    n = draw(st.integers(1, 3))
    conditional = draw(st.booleans())
    shared = draw(places)
    directions = []
    for _ in range(n):
        layer, kind = shared if conditional else draw(places)
        directions.append(unit_direction(draw(st.integers(0, 10_000)), layer, kind, draw(st.floats(0.1, 5.0))))
    modes = draw(st.lists(st.sampled_from(steering.MODES), min_size=n, max_size=n))
    targets = [draw(st.none() | st.floats(-3, 3) | st.floats(-3, 3).map(torch.tensor)) if mode == "clamp" else None for mode in modes]
    condition = None
    if conditional:  # on one of the plan's own directions (what in_mode(d, "conditional") builds) or another one
        gate = draw(
            st.sampled_from(directions)
            | st.builds(unit_direction, st.integers(0, 10_000), st.just(shared[0]), st.just(shared[1]), st.just(1.0))
        )
        condition = steering.Condition(gate, draw(st.floats(-1.0, 1.0)))
    return steering.Steering(
        directions,
        weights=draw(st.lists(st.floats(-3, 3), min_size=n, max_size=n)),
        modes=modes,
        targets=targets,
        condition=condition,
        positions=draw(plan_positions),
    )


@settings(max_examples=10, **PROFILE)
@given(plan=plans(), coeff=st.floats(-3, 3))
def test_a_plan_saved_loaded_and_applied_equals_the_plan_applied(tmp_path_factory, plan, coeff):
    m = model()
    folder = plan.save(tmp_path_factory.mktemp("plan"), model=m)
    loaded = steering.load_steerable(folder, m)
    assert isinstance(loaded, steering.Steering)
    assert (loaded.weights, loaded.modes, loaded.targets, loaded.positions) == (plan.weights, plan.modes, plan.targets, plan.positions)
    with steering.applied(m, plan, coeff):
        expected = logits(m)
    with steering.applied(m, loaded, coeff):
        assert torch.equal(logits(m), expected)
