"""Fisher directions as the notes define them, each against an independent autograd or linear-algebra computation."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.covariance import ledoit_wolf_shrinkage

import probes
from probes import sublayers as sl
from steering import directions, steer
from steering.directions.fisher import REGS, RELS, clear_gradient_cache, ledoit_wolf, text_gradients
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


def text_loss(model, text, pref, loss_layer, coherence, sign, baseline=None):
    """This text's share of its pair's loss, ∓⟨h, p⟩ + w·relu(0.99·b − logp)², run alone (no padding), with the
    read state h and the logits it was computed from (``baseline`` b: the text's logp at c = 0 when given)."""
    torch_model = sl.unwrap(model)
    ids = model.tokenizer(text, return_tensors="pt")["input_ids"]
    captured = {}
    handle = torch_model.model.layers[loss_layer].register_forward_hook(
        lambda m, a, out: captured.__setitem__("h", out[0] if isinstance(out, tuple) else out)
    )
    try:
        logits = torch_model(ids).logits
    finally:
        handle.remove()
    h = captured["h"][0, -1].float()
    logp = torch.log_softmax(logits[0, :-1].float(), -1).gather(-1, ids[0, 1:, None]).mean()
    b = logp.detach() if baseline is None else baseline
    return -sign * (h @ pref) + coherence * torch.relu(0.99 * b - logp) ** 2, h, logits, logp.detach()


def text_gradient(model, text, pref, layer, kind_path, loss_layer, coherence, sign, everywhere=False):
    """∂L/∂δ for one text run alone: δ added to the sublayer output at its last token (or at every token),
    and ‖∂L/∂(h, logits)‖², the squared norm of the loss gradient with respect to the outputs it reads."""
    torch_model = sl.unwrap(model)
    width = sl.get_module(model, kind_path).weight.shape[0]
    shift = torch.zeros(width, requires_grad=True)

    def add(module, args, out):
        if everywhere:
            return out + shift
        out = out.clone()
        out[0, -1] = out[0, -1] + shift
        return out

    handle = torch_model.get_submodule(kind_path).register_forward_hook(add)
    try:
        loss, h, logits, _ = text_loss(model, text, pref, loss_layer, coherence, sign)
    finally:
        handle.remove()
    grad, h_grad, logit_grad = torch.autograd.grad(loss, (shift, h, logits))
    return grad, float(h_grad.pow(2).sum() + logit_grad.pow(2).sum())


@pytest.mark.parametrize("coherence, positions", [(0.0, "last"), (1e4, "last"), (1.0, "all")])
def test_pair_gradients_equal_an_independent_autograd_computation(coherence, positions):
    clear_gradient_cache()
    model, _ = planted_model()
    grads = text_gradients(model, PAIRS, 0, "up", loss_layer=1, coherence=coherence, positions=positions)
    pref = preference(model, PAIRS, 1)
    everywhere = positions == "all"
    for i, (positive, negative) in enumerate(PAIRS):
        expected_pos, out_pos = text_gradient(model, positive, pref, 0, "model.layers.0.mlp.up_proj", 1, coherence, +1, everywhere)
        expected_neg, out_neg = text_gradient(model, negative, pref, 0, "model.layers.0.mlp.up_proj", 1, coherence, -1, everywhere)
        scale = max(float(expected_pos.norm()), 1e-6)
        torch.testing.assert_close(grads.positive[i], expected_pos, atol=1e-4 * scale, rtol=1e-3)
        torch.testing.assert_close(grads.negative[i], expected_neg, atol=1e-4 * scale, rtol=1e-3)
        # iEF's weight: the pair's ‖∂L_i/∂(h₊, h₋, logits₊, logits₋)‖² (2 = ‖p‖² + ‖p‖² without coherence)
        assert float(grads.output_norms[i]) == pytest.approx(out_pos + out_neg, rel=1e-3)
        if coherence == 0:
            assert float(grads.output_norms[i]) == pytest.approx(2.0, rel=1e-5)


def test_the_default_direction_is_the_derivative_of_steering_it_at_every_position():
    """d/dc of the summed pair loss under ``steer(model, direction, c)`` (a finite difference, steer's default
    positions) equals Σ⟨g₊ + g₋, s·v⟩ of the default gradients, and not of the last-token ones."""
    clear_gradient_cache()
    model, _ = planted_model()
    acts = probes.collect(model, PAIRS, layers=[0], sublayers="resid", progress=False)
    direction = directions.compute("fisher_cov", acts, 0, "resid", model=model, pairs=PAIRS, loss_layer=1, coherence=1.0)
    assert direction.meta["positions"] == "all" and direction.meta["coherence"] == 1.0
    pref = preference(model, PAIRS, 1)
    texts = [(text, sign) for pair in PAIRS for text, sign in zip(pair, (+1, -1))]
    baselines = [text_loss(model, text, pref, 1, 1.0, sign)[3] for text, sign in texts]

    def total(c):
        with torch.no_grad(), steer(model, direction, c):
            return sum(float(text_loss(model, text, pref, 1, 1.0, sign, b)[0]) for (text, sign), b in zip(texts, baselines))

    eps = 1e-3  # the relu² penalty curves: a larger step is off by its second derivative
    measured = (total(eps) - total(-eps)) / (2 * eps)
    step = direction.vector.double() * direction.scale

    def predicted(positions):
        grads = text_gradients(model, PAIRS, 0, "resid", loss_layer=1, coherence=1.0, positions=positions)
        return float((grads.positive + grads.negative).double().sum(0) @ step)

    assert measured == pytest.approx(predicted("all"), rel=5e-3, abs=1e-5)
    assert abs(measured - predicted("last")) > 0.1 * abs(measured)


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


def output_norms(model, pairs, loss_layer, coherence):
    """Each pair's ‖∂L_i/∂(h, logits)‖² from single-text runs (independent of where δ goes)."""
    pref = preference(model, pairs, loss_layer)
    found = []
    for positive, negative in pairs:
        found.append(
            sum(
                text_gradient(model, text, pref, 0, "model.layers.0.mlp.up_proj", loss_layer, coherence, sign)[1]
                for text, sign in ((positive, +1), (negative, -1))
            )
        )
    return torch.tensor(found, dtype=torch.float64)


def solve(fisher, mean_grad, lam):
    """−(F + λI)⁻¹ḡ in numpy."""
    return torch.from_numpy(-np.linalg.solve(fisher.numpy() + lam * np.eye(fisher.shape[0]), mean_grad.numpy()))


def test_each_variant_equals_its_formula_with_an_absolute_lambda():
    clear_gradient_cache()
    model, _ = planted_model()
    acts = probes.collect(model, PAIRS, layers=[0], sublayers="resid", progress=False)
    options = dict(model=model, pairs=PAIRS, loss_layer=1, coherence=1.0)
    grads = text_gradients(model, PAIRS, 0, "resid", loss_layer=1, coherence=1.0)
    q = (grads.positive - grads.negative).double()
    weights = output_norms(model, PAIRS, 1, 1.0)
    assert not torch.allclose(weights, weights.mean().expand_as(weights), rtol=1e-3)  # the coherence term makes them differ
    positive, negative = grads.positive.double(), grads.negative.double()
    for reg in (1e-1, 1e-3):
        cov = torch.cov(q.T, correction=0)
        normalised = q / q.norm(dim=1, keepdim=True)
        expected = {
            "cov": solve(cov, q.mean(0), reg),
            "ief": solve((q / weights[:, None]).T @ q / len(q), q.mean(0), reg),  # mean q qᵀ / ‖∂L/∂outputs‖²
            "unit": solve(normalised.T @ normalised / len(q), q.mean(0), reg),
            "dual": unit(solve(positive.T @ positive / len(q), positive.mean(0), reg))
            - unit(solve(negative.T @ negative / len(q), negative.mean(0), reg)),
        }
        for variant, vector in expected.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # 6 pairs in 32 dimensions: the tiny-λ warning
                found = directions.compute(f"fisher_{variant}", acts, 0, "resid", reg=reg, **options)
            assert abs(float(found.vector.double() @ unit(vector))) > 0.999, (variant, reg)  # up to the calibrated sign
            assert found.meta["reg"] == reg and found.meta["shrinkage"] is None


def test_ief_without_coherence_is_the_empirical_fisher_and_so_fisher_cov():
    clear_gradient_cache()
    model, _ = planted_model()
    acts = probes.collect(model, PAIRS, layers=[0], sublayers="resid", progress=False)
    options = dict(model=model, pairs=PAIRS, loss_layer=1, coherence=0.0)
    q = text_gradients(model, PAIRS, 0, "resid", loss_layer=1, coherence=0.0).pairs.double()
    ief = directions.compute("fisher_ief", acts, 0, "resid", reg=1e-2, **options).vector.double()
    cov = directions.compute("fisher_cov", acts, 0, "resid", reg=2e-2, **options).vector.double()  # iEF's F is E/2
    uncentred = solve(q.T @ q / len(q), q.mean(0), 2e-2)
    assert abs(float(ief @ unit(uncentred))) > 0.9999 and abs(float(ief @ cov)) > 0.9999


def test_relative_damping_and_ledoit_wolf_equal_an_independent_solve():
    clear_gradient_cache()
    model, _ = planted_model()
    acts = probes.collect(model, PLANTED_PAIRS, layers=[0], sublayers="resid", progress=False)
    options = dict(model=model, pairs=PLANTED_PAIRS, loss_layer=1, coherence=1.0)
    grads = text_gradients(model, PLANTED_PAIRS, 0, "resid", loss_layer=1, coherence=1.0)
    q = grads.pairs.double()
    weights = output_norms(model, PLANTED_PAIRS, 1, 1.0)
    X = {"cov": q - q.mean(0), "ief": q / weights.sqrt()[:, None], "unit": q / q.norm(dim=1, keepdim=True)}
    for variant, samples in X.items():
        fisher = samples.T @ samples / len(q)
        mu = float(fisher.trace()) / fisher.shape[0]
        for rel in (1e-1, 1.0):
            expected = solve(fisher, q.mean(0), rel * mu)
            found = directions.compute(f"fisher_{variant}", acts, 0, "resid", rel=rel, **options)
            assert abs(float(found.vector.double() @ unit(expected))) > 0.999, (variant, rel)
            assert found.meta["rel"] == pytest.approx(rel) and found.meta["reg"] == pytest.approx(rel * mu, rel=1e-6)
        rho = ledoit_wolf_shrinkage(samples.numpy(), assume_centered=True)  # sklearn's estimate, F_ρ = (1 − ρ)F + ρμI
        expected = torch.from_numpy(-np.linalg.solve((1 - rho) * fisher.numpy() + rho * mu * np.eye(fisher.shape[0]), q.mean(0).numpy()))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ρ is tiny here for ief and unit (a dominant eigenvalue): the warning
            found = directions.compute(f"fisher_{variant}_lw", acts, 0, "resid", **options)
        assert abs(float(found.vector.double() @ unit(expected))) > 0.999, variant
        assert found.meta["shrinkage"] == pytest.approx(rho, rel=1e-6)
        assert found.meta["rel"] == pytest.approx(rho / (1 - rho), rel=1e-6)
        default = directions.compute(f"fisher_{variant}", acts, 0, "resid", **options)  # the default: rel = 1
        torch.testing.assert_close(default.vector, directions.compute(f"fisher_{variant}_rel1", acts, 0, "resid", **options).vector)
        assert default.meta["rel"] == 1.0 and default.meta["shrinkage"] is None
    sides = (grads.positive.double(), grads.negative.double())  # dual: each side's uncentred second moment, its own μ
    for rel in (1e-1, 1.0):
        solved = []
        for side in sides:
            moment = side.T @ side / len(side)
            solved.append(unit(solve(moment, side.mean(0), rel * float(moment.trace()) / moment.shape[0])))
        found = directions.compute("fisher_dual", acts, 0, "resid", rel=rel, **options)
        assert abs(float(found.vector.double() @ unit(solved[0] - solved[1]))) > 0.999, rel
    for side in sides:
        rho = ledoit_wolf_shrinkage(side.numpy(), assume_centered=True)
        assert ledoit_wolf(side) == pytest.approx(rho, rel=1e-6)


@pytest.mark.parametrize("n, d, centred", [(6, 40, True), (50, 8, False), (30, 30, True)])
def test_ledoit_wolf_equals_sklearn(n, d, centred):
    generator = torch.Generator().manual_seed(n + d)
    samples = torch.randn(n, d, generator=generator, dtype=torch.float64) @ torch.randn(d, d, generator=generator, dtype=torch.float64)
    samples = samples - samples.mean(0) if centred else samples + 3.0
    assert ledoit_wolf(samples) == pytest.approx(ledoit_wolf_shrinkage(samples.numpy(), assume_centered=True), rel=1e-9)


def test_names_state_lambda_and_old_names_keep_their_absolute_lambdas():
    assert REGS == {"reg0": 0.0, "reg1": 1e-1, "reg2": 1e-2, "reg3": 1e-3, "reg4": 1e-4, "reg5": 1e-5}
    assert RELS == {"rel1e-2": 1e-2, "rel1e-1": 1e-1, "rel1": 1.0, "rel10": 10.0}
    model, _ = planted_model()
    acts = probes.collect(model, PLANTED_PAIRS, layers=[0], sublayers="resid", progress=False)
    options = dict(model=model, pairs=PLANTED_PAIRS, loss_layer=1, coherence=1.0)

    def vector(name, **extra):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return directions.compute(name, acts, 0, "resid", **options, **extra).vector

    torch.testing.assert_close(vector("fisher_cov_reg1"), vector("fisher_cov", reg=0.1))
    torch.testing.assert_close(vector("fisher_cov_rel1e-1"), vector("fisher_cov", rel=0.1))
    torch.testing.assert_close(vector("fisher_unit_reg2"), vector("fisher_unit", reg=1e-2))
    assert not torch.allclose(vector("fisher_cov_reg1"), vector("fisher_cov_reg5"), atol=1e-4)
    assert "0.1" in directions.METHODS["fisher_cov_reg1"].fn.__doc__ and "1e-5" in directions.METHODS["fisher_cov_reg1"].fn.__doc__
    assert "fisher_unit" in directions.METHODS["fisher_ief"].fn.__doc__  # the old meaning, renamed
    with pytest.raises(ValueError, match="fisher_cov_rel1 takes no option 'reg'"):
        directions.compute("fisher_cov_rel1", acts, 0, "resid", reg=0.1, **options)
    with pytest.raises(ValueError, match="not both"):
        directions.compute("fisher_cov", acts, 0, "resid", reg=0.1, rel=0.1, **options)


def test_coherence_only_has_a_gradient_when_steering_every_position():
    clear_gradient_cache()
    model, _ = planted_model()
    last = [text_gradients(model, PAIRS, 0, "up", loss_layer=1, coherence=w, positions="last").positive for w in (0.0, 1e4)]
    torch.testing.assert_close(last[0], last[1])  # the last token cannot change its own text's log-probabilities
    everywhere = [text_gradients(model, PAIRS, 0, "up", loss_layer=1, coherence=w, positions="all").positive for w in (0.0, 1e4)]
    assert not torch.allclose(everywhere[0], everywhere[1], atol=1e-3)


def test_cov_and_unit_are_distinct_and_the_uncentred_fisher_would_repeat_cov():
    from tests.test_capture_faults import PAIRS as VARIED  # gradients that vary from pair to pair

    model = tiny_model("llama")
    acts = probes.collect(model, VARIED, layers=[0], sublayers="resid", progress=False)
    options = dict(model=model, pairs=VARIED, loss_layer=1, coherence=1.0, reg=1e-2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cov = directions.compute("fisher_cov", acts, 0, "resid", **options).vector.double()
        normalised = directions.compute("fisher_unit", acts, 0, "resid", **options).vector.double()
    assert abs(float(cov @ normalised)) < 0.9
    q = text_gradients(model, VARIED, 0, "resid", loss_layer=1, coherence=1.0).pairs.double()
    uncentred = -torch.linalg.solve(q.T @ q / len(q) + 1e-2 * torch.eye(q.shape[1], dtype=torch.float64), q.mean(0))
    assert abs(float(unit(uncentred) @ cov)) > 0.9999  # Sherman–Morrison: why plain "fisher" is not offered


# The review's setting (issue 25): the tiny Llama, 16 honesty pairs ≤ 32 dimensions, layer 0 resid.
def review_setting():
    model = tiny_model("llama")
    pairs = probes.honesty_pairs(n=16, tokenizer=model.tokenizer, chat=True)
    acts = probes.collect(model, pairs, layers=[0], sublayers="resid", progress=False)
    return model, pairs, acts


def outside_part(q):
    """ḡ⊥ by eigendecomposition: ḡ minus its projection on the eigenvectors of C with non-zero eigenvalues."""
    cov = np.cov(q.numpy().T, bias=True)
    values, vectors = np.linalg.eigh(cov)
    span = vectors[:, values > values.max() * 1e-9]
    mean = q.numpy().mean(0)
    return torch.from_numpy(mean - span @ (span.T @ mean))


def test_warns_when_pairs_do_not_exceed_dimensions_and_the_damping_is_tiny():
    clear_gradient_cache()
    model, pairs, acts = review_setting()
    options = dict(model=model, pairs=pairs)
    with pytest.warns(
        UserWarning, match=r"fisher_cov: 16 pairs ≤ 32 dimensions.*λ = 0.001 is only .* mean eigenvalue.*collapses.*\|cos\| 0\.999"
    ):
        directions.compute("fisher_cov_reg3", acts, 0, "resid", positions="last", **options)
    with pytest.warns(UserWarning, match=r"pseudo-inverse \(λ = 0\) discards ḡ⊥.*\d+% of ‖ḡ‖"):
        directions.compute("fisher_cov_reg0", acts, 0, "resid", **options)
    with pytest.warns(UserWarning, match=r"fisher_dual: 16 pairs ≤ 32 dimensions.*fits the pairs exactly.*fisher_dual_rel1"):
        directions.compute("fisher_dual", acts, 0, "resid", rel=1e-3, **options)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # relative damping: no warning
        for name in ("fisher_cov", "fisher_cov_rel1", "fisher_ief", "fisher_unit_rel1e-1", "fisher_dual"):
            directions.compute(name, acts, 0, "resid", **options)
    more = probes.honesty_pairs(n=40, tokenizer=model.tokenizer, chat=True)  # more pairs than dimensions: no warning
    more_acts = probes.collect(model, more, layers=[0], sublayers="resid", progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        directions.compute("fisher_cov_reg3", more_acts, 0, "resid", model=model, pairs=more)


def test_at_the_new_defaults_the_direction_no_longer_collapses_onto_the_part_outside_the_range():
    """The review measured, at the old defaults (δ at the last token, λ = 1e-3): |cos| 0.9994 with ḡ⊥,
    cos 0.008 with mean_diff, sign vote 0.56. ḡ⊥ is recomputed here by eigendecomposition."""
    clear_gradient_cache()
    model, pairs, acts = review_setting()
    mean_diff = directions.compute("mean_diff", acts, 0, "resid").vector.double()
    options = dict(model=model, pairs=pairs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        old = directions.compute("fisher_cov_reg3", acts, 0, "resid", positions="last", **options)
    new = directions.compute("fisher_cov", acts, 0, "resid", **options)
    for found, positions in ((old, "last"), (new, "all")):
        outside = outside_part(text_gradients(model, pairs, 0, "resid", positions=positions).pairs.double())
        assert found.meta["outside_cosine"] == pytest.approx(abs(float(found.vector.double() @ unit(outside))), abs=1e-6)
    assert old.meta["outside_cosine"] > 0.999 and abs(float(old.vector.double() @ mean_diff)) < 0.05
    assert new.meta["outside_cosine"] < 0.8 and new.meta["positions"] == "all" and new.meta["coherence"] == 0.0
    assert float(new.vector.double() @ mean_diff) > 0.2 and new.meta["vote_share"] > 0.6
