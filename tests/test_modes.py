"""Every mode of steer (add, ablate, clamp, conditional) against hand-computed states at the steered module,
with the KV cache on and off, as hooks and as nnsight edits, and baked into the weights."""

from __future__ import annotations

import pytest
import torch

import probes
import steering
from probes import sublayers as sl
from probes.module_output import module_hidden
from steering import Direction, steer
from tests.tiny import tiny_model

BATCH = {"input_ids": torch.tensor([[1, 70, 71, 72, 73], [1, 80, 81, 82, 83]]), "attention_mask": torch.ones(2, 5, dtype=torch.long)}
CASES = [("llama", "o"), ("llama", "resid"), ("gpt2", "q")]  # gpt2 q: a slice of the fused c_attn


def random_direction(model, layer, kind, seed=3, scale=2.0):
    torch.manual_seed(seed)
    width = acts_width(model, layer, kind)
    return Direction(torch.nn.functional.normalize(torch.randn(width), dim=0), scale, layer, kind, "test")


def acts_width(model, layer, kind):
    return probes.collect(model, [("a b", "c d")], layers=[layer], sublayers=kind, progress=False)[layer, kind].shape[-1]


def module_states(model, direction, **steering_options):
    """The steered module's output features (after every edit), by a hook registered after steer's."""
    sublayer = sl.resolve(model, direction.layer, direction.kind)
    steering_block = steer(model, direction, **steering_options) if steering_options else torch.no_grad()
    with steering_block, probes.trace_modules(model, [sublayer.path]) as traces, torch.no_grad():
        logits = sl.unwrap(model)(**BATCH).logits
    return sublayer.split(module_hidden(traces[sublayer.path].output)).float(), logits


@pytest.mark.parametrize("family, kind", CASES)
@pytest.mark.parametrize("mode", ["add", "ablate", "clamp"])
def test_c_zero_is_the_base_model_in_every_mode(family, kind, mode):
    model = tiny_model(family)
    direction = random_direction(model, 1, kind)
    _, plain = module_states(model, direction)
    _, at_zero = module_states(model, direction, coeff=0.0, mode=mode)
    assert torch.equal(plain, at_zero)


@pytest.mark.parametrize("family, kind", CASES)
def test_ablate_removes_and_clamp_sets_the_component(family, kind):
    model = tiny_model(family)
    direction = random_direction(model, 1, kind)
    v = direction.vector
    before, _ = module_states(model, direction)
    ablated, _ = module_states(model, direction, coeff=1.0, mode="ablate")
    half, _ = module_states(model, direction, coeff=0.5, mode="ablate")
    clamped, _ = module_states(model, direction, coeff=1.0, mode="clamp", target=3.0)
    assert (before @ v).abs().max() > 0.1
    torch.testing.assert_close(ablated @ v, torch.zeros_like(before @ v), atol=1e-5, rtol=0)
    torch.testing.assert_close(half @ v, 0.5 * (before @ v), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(clamped @ v, torch.full_like(before @ v, 3.0), atol=1e-5, rtol=0)
    orthogonal = before - (before @ v)[..., None] * v  # what ablation must leave untouched
    torch.testing.assert_close(ablated - (ablated @ v)[..., None] * v, orthogonal, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family, kind", CASES)
def test_conditional_steering_fires_only_where_the_condition_passes(family, kind):
    model = tiny_model(family)
    direction, gate = random_direction(model, 1, kind), random_direction(model, 1, kind, seed=7)
    before, _ = module_states(model, direction)
    ranked = (before @ gate.vector).flatten().sort().values
    middle = ranked.numel() // 2
    threshold = float((ranked[middle - 1] + ranked[middle]) / 2)  # half the positions fire, none within rounding of it
    condition = steering.Condition(gate, threshold)
    after, _ = module_states(model, direction, coeff=1.5, condition=condition)
    fires = (before @ gate.vector) > threshold
    assert 0 < int(fires.sum()) < fires.numel()
    expected = before + 1.5 * direction.scale * fires[..., None].float() * direction.vector
    torch.testing.assert_close(after, expected, atol=1e-5, rtol=1e-5)
    never = steering.Condition(gate, float("inf"))
    _, plain = module_states(model, direction)
    assert torch.equal(module_states(model, direction, coeff=1.5, condition=never)[1], plain)


OPTIONS = [
    {"mode": "add"},
    {"mode": "ablate"},
    {"mode": "clamp", "target": -2.0},
    {"mode": "add", "condition": "median"},
]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: o["mode"] + ("+condition" if "condition" in o else ""))
def test_generation_with_the_kv_cache_equals_generation_without(options):
    model = tiny_model("llama")
    direction = random_direction(model, 1, "resid")
    if options.get("condition"):
        before, _ = module_states(model, direction)
        options = options | {
            "condition": steering.Condition(random_direction(model, 1, "resid", seed=7), float((before @ direction.vector).median()))
        }
    hf = sl.unwrap(model)
    outputs = {}
    for cache in (True, False):
        with steer(model, direction, 2.0, **options), torch.no_grad():
            outputs[cache] = hf.generate(BATCH["input_ids"][:1], max_new_tokens=8, do_sample=False, use_cache=cache, pad_token_id=0)
    assert torch.equal(outputs[True], outputs[False])


@pytest.mark.parametrize("family, kind", [("llama", "o"), ("gpt2", "q")])
@pytest.mark.parametrize("options", OPTIONS[1:], ids=lambda o: o["mode"] + ("+condition" if "condition" in o else ""))
def test_nnsight_edits_equal_hooks_in_every_mode(family, kind, options):
    model = tiny_model(family)
    direction = random_direction(model, 1, kind)
    if options.get("condition"):
        before, _ = module_states(model, direction)
        gate = random_direction(model, 1, kind, seed=7)
        options = options | {"condition": steering.Condition(gate, float((before @ gate.vector).median()))}
    coeffs = torch.tensor([1.5, -1.0])
    with torch.no_grad():
        plain = sl.unwrap(model)(**BATCH).logits
        with steer(model, direction, coeffs, remote=False, **options):
            by_hooks = sl.unwrap(model)(**BATCH).logits
        with steer(model, direction, coeffs, remote="local", **options), model.trace(BATCH, remote="local"):
            by_edits = model.output.logits.save()
    assert (by_hooks - plain).abs().max() > 1e-4
    torch.testing.assert_close(by_edits, by_hooks, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["o", "down", "q"])
def test_orthogonalized_weights_equal_the_ablate_hook(kind):
    model = tiny_model("llama")
    direction = random_direction(model, 1, kind)
    _, by_hook = module_states(model, direction, coeff=1.0, mode="ablate")
    steering.orthogonalize_weights(model, direction)
    states, baked = module_states(model, direction)
    torch.testing.assert_close(baked, by_hook, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(states @ direction.vector, torch.zeros(states.shape[:-1]), atol=1e-5, rtol=0)


def test_modes_refuse_what_they_cannot_do():
    model = tiny_model("llama")
    direction = random_direction(model, 1, "resid")
    with pytest.raises(ValueError, match="mode='subtract'"), steer(model, direction, 1.0, mode="subtract"):
        pass
    with pytest.raises(NotImplementedError, match="resid"):
        steering.orthogonalize_weights(model, direction)
    other_place = random_direction(model, 0, "resid")
    with (
        pytest.raises(ValueError, match="must read the module it gates"),
        steer(model, direction, 1.0, condition=steering.Condition(other_place, 0.0)),
    ):
        pass


def test_calibrated_condition_threshold_is_the_midpoint_of_the_sides():
    model = tiny_model("llama")
    pairs = probes.honesty_pairs(n=8, tokenizer=model.tokenizer, chat=True)
    acts = probes.collect(model, pairs, layers=[1], sublayers="resid", progress=False)
    direction = steering.compute("mean_diff", acts, 1, "resid")
    projections = acts[1, "resid"][:, :, -1].float() @ direction.vector
    condition = steering.calibrate_condition(acts, direction)
    assert condition.threshold == pytest.approx(float((projections[:, 0].mean() + projections[:, 1].mean()) / 2), rel=1e-5)
    flipped = Direction(-direction.vector, direction.scale, 1, "resid", "flipped")
    with pytest.raises(ValueError, match="does not project the positive side above"):
        steering.calibrate_condition(acts, flipped)


POSITIONS = ["prompt", "generated", 2, slice(1, 7)]


@pytest.mark.parametrize("positions", POSITIONS, ids=str)
@pytest.mark.parametrize("mode", ["add", "ablate"])
def test_positions_give_the_same_generation_with_and_without_the_kv_cache(positions, mode):
    model = tiny_model("llama")
    direction = random_direction(model, 1, "resid", scale=4.0)
    hf = sl.unwrap(model)
    outputs = {}
    for cache in (True, False):
        with steer(model, direction, 2.0, mode=mode, positions=positions), torch.no_grad():
            outputs[cache] = hf.generate(BATCH["input_ids"], max_new_tokens=8, do_sample=False, use_cache=cache, pad_token_id=0)
    assert torch.equal(outputs[True], outputs[False])
    with torch.no_grad():
        plain = hf.generate(BATCH["input_ids"], max_new_tokens=8, do_sample=False, pad_token_id=0)
    assert not torch.equal(outputs[True], plain)  # the steering did something at these positions


def test_positions_choose_exactly_which_prompt_states_change():
    model = tiny_model("llama")
    direction = random_direction(model, 1, "resid")
    before, _ = module_states(model, direction)
    for positions, steered_columns in [("prompt", [0, 1, 2, 3, 4]), ("generated", []), (2, [3, 4]), (slice(1, 3), [1, 2])]:
        after, _ = module_states(model, direction, coeff=1.0, positions=positions)
        changed = ((after - before).abs().amax(dim=(0, 2)) > 1e-6).nonzero().flatten().tolist()
        assert changed == steered_columns, positions


def test_generated_only_leaves_the_prompt_states_untouched_during_generation():
    model = tiny_model("llama")
    direction = random_direction(model, 1, "resid", scale=4.0)
    path = sl.resolve(model, 2, "resid").path  # a later module: it sees the steering's effects
    hf = sl.unwrap(model)

    def prompt_states(**options):
        seen = []
        block = steer(model, direction, 2.0, **options) if options else torch.no_grad()
        with block, probes.trace_modules(model, [path]) as traces, torch.no_grad():
            original = traces[path]
            hook = lambda *_: seen.append(module_hidden(original.output)) if not seen else None  # noqa: E731
            handle = sl.get_module(model, path).register_forward_hook(hook)
            out = hf.generate(BATCH["input_ids"], max_new_tokens=4, do_sample=False, pad_token_id=0)
            handle.remove()
        return seen[0], out

    plain_states, plain_out = prompt_states()
    steered_states, steered_out = prompt_states(positions="generated")
    assert torch.equal(plain_states, steered_states)  # the prompt's forward is the base model's
    assert not torch.equal(plain_out, steered_out)


@pytest.mark.parametrize("positions", POSITIONS, ids=str)
@pytest.mark.parametrize("mode", ["add", "ablate"])
def test_nnsight_edits_steer_the_same_positions_as_hooks_in_generation(positions, mode):
    model = tiny_model("llama")
    direction = random_direction(model, 1, "resid", scale=4.0)
    ids = BATCH["input_ids"][:1]
    hf = sl.unwrap(model)
    with steer(model, direction, 2.0, mode=mode, positions=positions, remote=False), torch.no_grad():
        by_hooks = hf.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0)
    with (
        steer(model, direction, 2.0, mode=mode, positions=positions, remote="local"),
        torch.inference_mode(),
        model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0, remote="local") as tracer,
    ):
        by_edits = tracer.result.save()
    assert torch.equal(by_edits, by_hooks)
    with steer(model, direction, 2.0, mode=mode, positions=positions, remote=False), torch.no_grad():
        hooked_logits = hf(**BATCH).logits
    with steer(model, direction, 2.0, mode=mode, positions=positions, remote="local"), torch.no_grad(), model.trace(BATCH, remote="local"):
        edited_logits = model.output.logits.save()
    torch.testing.assert_close(edited_logits, hooked_logits, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        plain = hf(**BATCH).logits
    assert torch.equal(hooked_logits, plain) == (positions == "generated")  # one forward is all prompt
