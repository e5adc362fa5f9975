"""One contract, every intervention: identity at c = 0, an exact detach, per-row c, save and load
through `load_steerable`, and one ReprPO step for adapters.

Run over every type registered with `steering.register_loader` (built by its registered
``example``: a new type is picked up with no change here) and a one-direction plan.
The observable is the next-token log-probabilities after each rendered prompt, the
prompt carrying the intervention's prefix at that coefficient.
"""

from __future__ import annotations

import pytest
import torch

import steering
from analysis.readouts import score as sc
from probes import sublayers as sl
from steering import AdapterHandle, Direction, Steering, applied, load_steerable
from steering.steerable import LOADERS
from tests.tiny import checksum, tiny_model

PROMPTS = ["Is honesty the best policy?", "How was the trip?", "Tell me about the sky."]


def direction(layer: int, kind: str, seed: int, width: int = 32) -> Direction:
    vector = torch.nn.functional.normalize(torch.randn(width, generator=torch.Generator().manual_seed(seed)), dim=0)
    return Direction(vector=vector, scale=2.0, layer=layer, kind=kind, method="test")


def perturbed(handle):
    with torch.no_grad():
        for parameter in handle.trainable_parameters():
            parameter.normal_(0, 0.1, generator=torch.Generator().manual_seed(3))
    return handle


def registered(type_name: str):
    example = LOADERS[type_name].example
    assert example is not None, f"steerable type {type_name!r} registers no example, so the contract tests cannot build one"

    def build(model):
        built = example(model)
        return perturbed(built) if isinstance(built, AdapterHandle) else built

    return build


BUILDERS = {
    "direction": lambda model: Steering([direction(1, "resid", 0)]),
    "two directions at two layers": lambda model: Steering([direction(0, "o", 1), direction(2, "down", 2)]),
    **{f"registered {name}": registered(name) for name in sorted(LOADERS)},
}


def logprobs(model, steerable, coeffs: list[float]) -> torch.Tensor:
    """Next-token log-probabilities of every prompt at every coefficient, in one batched pass (one c per row)."""
    texts = [sc.render_prompt(model.tokenizer, p, persona=steerable.prompt_prefix(c)) for c in coeffs for p in PROMPTS]
    per_row = torch.tensor([c for c in coeffs for _ in PROMPTS])
    return sc.last_logprobs(
        model,
        texts,
        batch_size=len(texts),
        context=lambda index: applied(model, steerable, per_row[index] if len(coeffs) > 1 else coeffs[0]),
    )


def base_logprobs(model) -> torch.Tensor:
    return sc.last_logprobs(model, [sc.render_prompt(model.tokenizer, p) for p in PROMPTS])


@pytest.fixture(params=list(BUILDERS))
def case(request):
    model = tiny_model("llama")
    state = (checksum(model), [n for n, _ in sl.unwrap(model).named_modules()], base_logprobs(model))
    return request.param, model, BUILDERS[request.param](model), state


def test_every_intervention_is_the_base_model_at_c_zero(case):
    _, model, steerable, (_, _, base) = case
    assert torch.equal(logprobs(model, steerable, [0.0]), base)
    assert not torch.allclose(logprobs(model, steerable, [1.0]), base, atol=1e-4)  # and does something at c = 1
    steerable.detach()


def test_detach_leaves_exactly_the_base_model(case):
    _, model, steerable, (weights, modules, base) = case
    logprobs(model, steerable, [1.0, -1.0])
    steerable.detach()
    torch_model = sl.unwrap(model)
    assert checksum(model) == weights and [n for n, _ in torch_model.named_modules()] == modules
    assert all(not m._forward_hooks for m in torch_model.modules())
    assert all(p.requires_grad for p in torch_model.parameters())
    assert torch.equal(base_logprobs(model), base)


def test_one_coefficient_per_row_equals_one_at_a_time(case):
    _, model, steerable, _ = case
    coeffs = [-1.0, 0.0, 0.5, 2.0]
    together = logprobs(model, steerable, coeffs)
    alone = torch.cat([logprobs(model, steerable, [c]) for c in coeffs])
    torch.testing.assert_close(together, alone, atol=2e-5, rtol=1e-4)
    steerable.detach()


def test_save_and_load_round_trip(case, tmp_path):
    _, model, steerable, _ = case
    expected = logprobs(model, steerable, [1.0, -1.0])
    steerable.save(tmp_path / "saved")
    steerable.detach()
    loaded = load_steerable(tmp_path / "saved", model)
    try:
        torch.testing.assert_close(logprobs(model, loaded, [1.0, -1.0]), expected, atol=1e-5, rtol=1e-5)
    finally:
        loaded.detach()


def test_applied_refuses_what_is_not_an_intervention():
    model = tiny_model("llama")
    with pytest.raises(TypeError, match="Cannot steer with a str"), applied(model, "pca_diff", 1.0):
        pass


def test_every_registered_type_is_built_and_loaded_as_its_own_type(tmp_path):
    """The registry is the one list: each example saves a folder that `load_steerable` reads back as the same class."""
    assert {"steering", "prompting", "innerpissa", "lora"} <= set(LOADERS)
    for name, loader in sorted(LOADERS.items()):
        model = tiny_model("llama")
        built = loader.example(model)
        built.save(tmp_path / name)
        built.detach()
        loaded = load_steerable(tmp_path / name, model)
        assert type(loaded) is type(built), name
        loaded.detach()


def is_adapter_type(name: str) -> bool:
    built = LOADERS[name].example(tiny_model("llama"))
    built.detach()
    return isinstance(built, AdapterHandle)


@pytest.mark.parametrize("name", [name for name in sorted(LOADERS) if is_adapter_type(name)])
def test_every_adapter_type_trains_one_reprpo_step(name):
    model = tiny_model("llama")
    adapter = LOADERS[name].example(model)
    before = [p.detach().clone() for p in adapter.trainable_parameters()]
    pairs = [
        ("I always tell the truth.", "I often lie to people."),
        ("Honesty matters to me.", "Deceit is my habit."),
        ("I keep my word.", "I break my promises."),
    ]
    result = steering.train_reprpo(
        model, adapter, pairs, steps=1, batch_pairs=3, warmup_steps=0, tokens=2, loss_layers=[sl.n_layers(model) - 1], progress=False
    )
    assert len(result.history) == 1
    assert any(not torch.equal(a, b) for a, b in zip(before, adapter.trainable_parameters())), f"{name}: one step changed nothing"
    adapter.detach()
