"""Fisher directions as the notes define them, each against an independent autograd or linear-algebra computation."""

from __future__ import annotations

import pytest
import torch

import probes
from probes import sublayers as sl
from steering import directions
from steering.directions.fisher import REGS, clear_gradient_cache, text_gradients
from tests.test_directions import PLANTED_PAIRS, planted_model
from tests.tiny import tiny_model

PAIRS = PLANTED_PAIRS[:6]


def preference(model, pairs, layer):
    """p by hand: the top right singular vector of the centred last-token resid differences, sign by majority vote
    (``layer`` must not be the last: transformers takes the last hidden state after the final norm)."""
    torch_model = sl.unwrap(model)
    diffs = []
    for positive, negative in pairs:
        states = []
        for text in (positive, negative):
            with torch.no_grad():
                hidden = torch_model(**model.tokenizer(text, return_tensors="pt"), output_hidden_states=True).hidden_states
            states.append(hidden[layer + 1][0, -1].double())
        diffs.append(states[0] - states[1])
    diffs = torch.stack(diffs)
    p = torch.linalg.svd(diffs - diffs.mean(0), full_matrices=False).Vh[0]
    return (p if ((diffs @ p) > 0).double().mean() >= 0.5 else -p).float()


def text_gradient(model, text, pref, layer, kind_path, loss_layer, coherence, sign, everywhere=False):
    """∂L/∂δ for one text run alone: δ added to the sublayer output at its last token (or at every token)."""
    torch_model = sl.unwrap(model)
    ids = model.tokenizer(text, return_tensors="pt")["input_ids"]
    width = sl.get_module(model, kind_path).weight.shape[0]
    shift = torch.zeros(width, requires_grad=True)
    captured = {}

    def add(module, args, out):
        if everywhere:
            return out + shift
        out = out.clone()
        out[0, -1] = out[0, -1] + shift
        return out

    handles = [
        torch_model.get_submodule(kind_path).register_forward_hook(add),
        torch_model.model.layers[loss_layer].register_forward_hook(
            lambda m, a, out: captured.__setitem__("h", out[0] if isinstance(out, tuple) else out)
        ),
    ]
    try:
        logits = torch_model(ids).logits
    finally:
        for handle in handles:
            handle.remove()
    logp = torch.log_softmax(logits[0, :-1].float(), -1).gather(-1, ids[0, 1:, None]).mean()
    # this text's share of its pair's loss: ∓⟨h, p⟩ and its own coherence term
    loss = -sign * (captured["h"][0, -1].float() @ pref) + coherence * torch.relu(0.99 * logp.detach() - logp) ** 2
    (grad,) = torch.autograd.grad(loss, shift)
    return grad


@pytest.mark.parametrize("coherence, positions", [(0.0, "last"), (1e4, "last"), (1.0, "all")])
def test_pair_gradients_equal_an_independent_autograd_computation(coherence, positions):
    clear_gradient_cache()
    model, _ = planted_model()
    grads = text_gradients(model, PAIRS, 0, "up", loss_layer=1, coherence=coherence, positions=positions)
    pref = preference(model, PAIRS, 1)
    everywhere = positions == "all"
    for i, (positive, negative) in enumerate(PAIRS):
        expected_pos = text_gradient(model, positive, pref, 0, "model.layers.0.mlp.up_proj", 1, coherence, +1, everywhere)
        expected_neg = text_gradient(model, negative, pref, 0, "model.layers.0.mlp.up_proj", 1, coherence, -1, everywhere)
        scale = max(float(expected_pos.norm()), 1e-6)
        torch.testing.assert_close(grads.positive[i], expected_pos, atol=1e-4 * scale, rtol=1e-3)
        torch.testing.assert_close(grads.negative[i], expected_neg, atol=1e-4 * scale, rtol=1e-3)


def test_the_separation_term_makes_positive_and_negative_gradients_oppose():
    clear_gradient_cache()
    model, _ = planted_model()
    grads = text_gradients(model, PAIRS, 0, "resid", loss_layer=1, coherence=0.0)
    cosine = torch.nn.functional.cosine_similarity(grads.positive.mean(0), grads.negative.mean(0), dim=0)
    assert cosine < -0.5
    acts = probes.collect(model, PAIRS, layers=[0], sublayers="resid", progress=False)
    dual = directions.compute("fisher_dual", acts, 0, "resid", model=model, pairs=PAIRS, loss_layer=1, coherence=0.0)
    assert dual.meta["gradient_cosine"] == pytest.approx(float(cosine), abs=1e-5)


def unit(v):
    return v / v.norm()


def test_each_variant_equals_its_formula_with_an_absolute_lambda():
    clear_gradient_cache()
    model, _ = planted_model()
    acts = probes.collect(model, PAIRS, layers=[0], sublayers="resid", progress=False)
    options = dict(model=model, pairs=PAIRS, loss_layer=1, coherence=1.0)
    grads = text_gradients(model, PAIRS, 0, "resid", loss_layer=1, coherence=1.0)
    q = (grads.positive - grads.negative).double()
    eye = torch.eye(q.shape[1], dtype=torch.float64)
    for reg in (1e-1, 1e-3):
        cov = torch.cov(q.T, correction=0)
        normalised = q / q.norm(dim=1, keepdim=True)
        expected = {
            "cov": -torch.linalg.solve(cov + reg * eye, q.mean(0)),
            "ief": -torch.linalg.solve(normalised.T @ normalised / len(q) + reg * eye, q.mean(0)),
            "dual": unit(
                -torch.linalg.solve(
                    grads.positive.double().T @ grads.positive.double() / len(q) + reg * eye, grads.positive.double().mean(0)
                )
            )
            - unit(
                -torch.linalg.solve(
                    grads.negative.double().T @ grads.negative.double() / len(q) + reg * eye, grads.negative.double().mean(0)
                )
            ),
        }
        for variant, vector in expected.items():
            found = directions.compute(f"fisher_{variant}", acts, 0, "resid", reg=reg, **options).vector.double()
            assert abs(float(found @ unit(vector))) > 0.999, (variant, reg)  # up to the calibrated sign


def test_reg_names_are_the_seeds_absolute_lambdas():
    assert REGS == {"reg0": 0.0, "reg1": 1e-1, "reg2": 1e-2, "reg3": 1e-3, "reg4": 1e-4, "reg5": 1e-5}
    model, _ = planted_model()
    acts = probes.collect(model, PAIRS, layers=[0], sublayers="resid", progress=False)
    options = dict(model=model, pairs=PAIRS, loss_layer=1, coherence=1.0)
    named = directions.compute("fisher_cov_reg1", acts, 0, "resid", **options).vector
    torch.testing.assert_close(named, directions.compute("fisher_cov", acts, 0, "resid", reg=0.1, **options).vector)
    assert not torch.allclose(named, directions.compute("fisher_cov_reg5", acts, 0, "resid", **options).vector, atol=1e-4)


def test_coherence_only_has_a_gradient_when_steering_every_position():
    clear_gradient_cache()
    model, _ = planted_model()
    last = [text_gradients(model, PAIRS, 0, "up", loss_layer=1, coherence=w).positive for w in (0.0, 1e4)]
    torch.testing.assert_close(last[0], last[1])  # the last token cannot change its own text's log-probabilities
    everywhere = [text_gradients(model, PAIRS, 0, "up", loss_layer=1, coherence=w, positions="all").positive for w in (0.0, 1e4)]
    assert not torch.allclose(everywhere[0], everywhere[1], atol=1e-3)


def test_cov_and_ief_are_distinct_and_the_uncentred_fisher_would_repeat_cov():
    from tests.test_capture_faults import PAIRS as VARIED  # gradients that vary from pair to pair

    model = tiny_model("llama")
    acts = probes.collect(model, VARIED, layers=[0], sublayers="resid", progress=False)
    options = dict(model=model, pairs=VARIED, loss_layer=1, coherence=1.0, reg=1e-2)
    cov = directions.compute("fisher_cov", acts, 0, "resid", **options).vector.double()
    ief = directions.compute("fisher_ief", acts, 0, "resid", **options).vector.double()
    assert abs(float(cov @ ief)) < 0.9
    q = text_gradients(model, VARIED, 0, "resid", loss_layer=1, coherence=1.0).pairs.double()
    uncentred = -torch.linalg.solve(q.T @ q / len(q) + 1e-2 * torch.eye(q.shape[1], dtype=torch.float64), q.mean(0))
    assert abs(float(unit(uncentred) @ cov)) > 0.9999  # Sherman–Morrison: why plain "fisher" is not offered
