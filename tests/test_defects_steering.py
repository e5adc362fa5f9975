"""Issue 23 ("Nothing silently wrong"): steering plans, calibration, predictors and the monitor under
hostile-but-fair use. Each test failed before its fix; expectations are computed independently
(finite differences, a hand-written KL, the logit lens by hand, files read back as JSON)."""

from __future__ import annotations

import importlib
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import analysis
import probes
import steering
from analysis.measures.predict import finite_difference_effects, predict_steerability
from probes import sublayers as sl
from steering import Direction, Steering, applied, load_directions, save_directions, steer
from steering.plans import in_mode
from steering.steerable import load_steerable
from tests.tiny import tiny_model

BATCH = {"input_ids": torch.tensor([[1, 70, 71, 72, 73], [1, 80, 81, 82, 83]]), "attention_mask": torch.ones(2, 5, dtype=torch.long)}


def direction(layer=1, kind="resid", seed=0, scale=1.5, width=32, method="random"):
    vector = F.normalize(torch.randn(width, generator=torch.Generator().manual_seed(seed)), dim=0)
    return Direction(vector, scale, layer, kind, method)


def logits(model, batch=BATCH):
    with torch.no_grad():
        return sl.unwrap(model)(**batch).logits


def on_meta(model):
    """``model`` as a remote model looks here: its weights on the meta device."""
    sl.unwrap(model).to("meta")
    return model


# -- 1. one prediction per direction -------------------------------------------------------------


def test_predict_steerability_gives_each_direction_its_own_prediction():
    model = tiny_model("llama")
    items = analysis.dilemmas()[:4]
    nulls = [direction(1, seed=1, scale=2.0), direction(1, seed=2, scale=2.0)]  # same (layer, kind, method)
    table = predict_steerability(model, nulls, items)
    assert len(table) == 2 and list(table["n_items"]) == [4, 4]
    for row, null in zip(table.itertuples(), nulls):
        alone = finite_difference_effects(model, [null], items, step=1e-2)["effect"].mean()
        assert row.predicted_effect == pytest.approx(alone, rel=2e-2, abs=2e-4)
        assert row.direction == null.name
    assert table["predicted_effect"].iloc[0] != pytest.approx(table["predicted_effect"].iloc[1])


# -- 11. the logit lens only where a direction lives in the residual stream -------------------------


def test_lens_margin_is_nan_off_the_residual_stream_even_at_its_width():
    model = tiny_model("llama")  # q, k (GQA: 16) and resid are 32 wide here
    items = analysis.dilemmas()[:3]
    q, resid = direction(1, "q", seed=3), direction(1, "resid", seed=3)
    table = predict_steerability(model, [q, resid], items)
    assert math.isnan(table["lens_margin"].iloc[0]) and table["lens_promotes"].iloc[0] == ""
    torch_model = sl.unwrap(model)
    v = resid.vector * resid.scale * torch_model.model.norm.weight.detach()  # final RMSNorm gain, then unembedding
    lens = (torch_model.lm_head.weight.detach() @ v).float()
    expected = []
    for item in items:
        positive = analysis.readouts.score.word_token_ids(model.tokenizer, item.positive)
        negative = analysis.readouts.score.word_token_ids(model.tokenizer, item.negative)
        expected.append(item.sign * float(torch.logsumexp(lens[positive], -1) - torch.logsumexp(lens[negative], -1)))
    assert table["lens_margin"].iloc[1] == pytest.approx(np.mean(expected), rel=1e-4, abs=1e-6)


# -- 6. calibrate ---------------------------------------------------------------------------------


def p95_kl(model, d, c, prompts, max_new_tokens):
    """Per-token KL(unsteered ‖ steered) on each prompt's own greedy continuation, one prompt at a time."""
    torch_model = sl.unwrap(model)
    values = []
    for prompt in prompts:
        ids = model.tokenizer(prompt, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            full = torch_model.generate(input_ids=ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=0)
            base = F.log_softmax(torch_model(input_ids=full).logits.float(), -1)[0]
            with steer(model, d, c):
                steered = F.log_softmax(torch_model(input_ids=full).logits.float(), -1)[0]
        kl = (base.exp() * (base - steered)).sum(-1)
        values.append(kl[ids.shape[1] - 1 : full.shape[1] - 1])
    return float(torch.quantile(torch.cat(values), 0.95))


def test_calibrate_finds_a_dose_below_its_grid_when_the_first_step_overshoots():
    model = tiny_model("llama")
    strong = direction(1, scale=1e4)
    prompts = ("The weather today is", "My favourite way to spend a Sunday is")
    c = steering.calibrate(model, strong, target_kl=0.05, prompts=prompts, max_new_tokens=4)
    assert c < 1 / 64
    assert 0.05 * 0.95 <= p95_kl(model, strong, c, prompts, 4) <= 0.05 * 1.3


def test_the_calibration_bracket_is_two_neighbouring_powers_of_two_around_the_target():
    from steering.calibrate import MIN_COEFF, bracket

    def linear(coeffs):  # KL = 1e4·c reaches 0.05 at c = 5e-6, between 2⁻¹⁸ and 2⁻¹⁷
        return [1e4 * c for c in coeffs]

    assert bracket(linear, 0.05, 1e4, 0.95) == (2.0**-18, 2.0**-17)
    assert bracket(linear, 300.0, 1e4, 0.95) == (2.0**-6, 2.0**-5)  # c = 0.03, reached going up
    assert bracket(linear, 5e4, 1e4, 0.95) == (4.0, 8.0)  # c = 5
    with pytest.raises(ValueError, match=f"Even c = {MIN_COEFF:g}"):
        bracket(lambda coeffs: [1.0] * len(coeffs), 0.05, 1e4, 0.95)
    with pytest.raises(ValueError, match="Even c = 8192"):
        bracket(lambda coeffs: [0.0] * len(coeffs), 0.05, 1e4, 0.95)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"target_kl": float("nan")}, "target_kl=nan"),
        ({"target_kl": float("inf")}, "target_kl=inf"),
        ({"max_coeff": 0.001}, "max_coeff=0.001"),
        ({"max_coeff": -1.0}, "max_coeff=-1"),
        ({"quantile": 1.5}, "quantile=1.5"),
        ({"prompts": []}, "prompts"),
        ({"max_new_tokens": 0}, "max_new_tokens=0"),
    ],
)
def test_calibrate_refuses_bad_options_before_any_work(monkeypatch, options, message):
    calibrate_module = importlib.import_module("steering.calibrate")  # steering.calibrate is also the function
    model = tiny_model("llama")

    def never(*args, **kwargs):
        raise AssertionError("calibrate started working before validating its options")

    monkeypatch.setattr(calibrate_module, "greedy_continuations", never)
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        steering.calibrate(model, direction(1), **options)


# -- 7. orthogonalize_weights on a remote model ---------------------------------------------------------


def test_orthogonalize_weights_refuses_a_model_whose_weights_are_elsewhere():
    model = on_meta(tiny_model("llama"))
    with pytest.raises(NotImplementedError, match=r"mode='ablate'"):
        steering.orthogonalize_weights(model, direction(1, "o"))


# -- 8. shared tensors in one file ------------------------------------------------------------------


def test_a_conditional_plan_on_its_own_direction_saves_loads_and_applies_the_same(tmp_path):
    model = tiny_model("llama")
    pairs = probes.honesty_pairs(n=8, tokenizer=model.tokenizer, chat=True)
    acts = probes.collect(model, pairs, layers=[1], sublayers="resid", progress=False)
    d = steering.compute("mean_diff", acts, 1, "resid")
    plan = in_mode(d, "conditional", acts)
    plan.save(tmp_path / "plan", model=model)
    loaded = load_steerable(tmp_path / "plan", model)
    assert loaded.condition is not None and loaded.condition.threshold == plan.condition.threshold
    with applied(model, plan, 3.0):
        expected = logits(model)
    with applied(model, loaded, 3.0):
        assert torch.equal(logits(model), expected)
    assert not torch.equal(expected, logits(model))


def test_a_condition_at_a_token_that_was_not_captured_is_named():
    model = tiny_model("llama")
    pairs = probes.honesty_pairs(n=4, tokenizer=model.tokenizer, chat=True)
    acts = probes.collect(model, pairs, layers=[1], sublayers="resid", progress=False)
    with pytest.raises(ValueError, match="1 token position"):
        steering.calibrate_condition(acts, steering.compute("mean_diff", acts, 1, "resid"), token=3)


def test_one_direction_twice_saves_and_loads(tmp_path):
    d = direction(1, seed=5)
    save_directions([d, d], tmp_path / "twice.safetensors")
    loaded = load_directions(tmp_path / "twice.safetensors")
    assert len(loaded) == 2 and all(torch.equal(x.vector, d.vector) and x.scale == d.scale for x in loaded)


# -- 10. a plan remembers its model -------------------------------------------------------------------


def test_a_plan_saved_on_one_model_is_refused_by_another_of_the_same_width(tmp_path):
    plan = Steering([direction(1, seed=1)], weights=[2.0])
    plan.save(tmp_path / "plan", model=tiny_model("llama", seed=0))
    with pytest.raises(ValueError, match="saved for other weights"):
        load_steerable(tmp_path / "plan", tiny_model("llama", seed=1))
    with pytest.raises(ValueError, match="model.layers.1"):
        Steering.load(tmp_path / "plan", model=tiny_model("gpt_neox"))  # 32 wide, other module paths
    assert isinstance(load_steerable(tmp_path / "plan", tiny_model("llama", seed=0)), Steering)


def test_a_plan_loaded_for_a_remote_model_is_checked_by_name(tmp_path):
    saved_on = tiny_model("llama")
    sl.config_of(saved_on).name_or_path = "org/model-a"
    folder = Steering([direction(1)], modes=["ablate"]).save(tmp_path / "plan", model=saved_on)
    remote = on_meta(tiny_model("llama"))
    sl.config_of(remote).name_or_path = "org/model-b"
    with pytest.raises(ValueError, match="'org/model-a'; this model is 'org/model-b'"):
        load_steerable(folder, remote)
    sl.config_of(remote).name_or_path = "org/model-a"
    assert load_steerable(folder, remote).modes == ["ablate"]


def test_a_lora_adapter_saved_on_one_model_is_refused_by_another_of_the_same_shapes(tmp_path):
    model = tiny_model("llama", seed=0)
    lora = steering.attach_lora(model, [1], ("o",), rank=2)
    with torch.no_grad():
        for parameter in lora.trainable_parameters():
            parameter.normal_(0, 0.1)
    lora.save(tmp_path / "lora")
    with lora.coeff(1.0):
        expected = logits(model)
    lora.detach()
    other = tiny_model("llama", seed=1)
    with pytest.raises(ValueError, match="saved for other weights"):
        load_steerable(tmp_path / "lora", other)
    assert all(not hasattr(m, "base_layer") for m in sl.unwrap(other).modules())  # refused before attaching
    again = load_steerable(tmp_path / "lora", model)
    with again.coeff(1.0):
        assert torch.equal(logits(model), expected)


# -- 12, 13. clamp targets -------------------------------------------------------------------------


def test_a_tensor_target_is_saved_as_a_number_and_the_plan_applies(tmp_path):
    model = tiny_model("llama")
    d = direction(1, seed=2)
    plan = Steering([d], modes=["clamp"], targets=[torch.tensor(1.5)])
    plan.save(tmp_path / "plan", model=model)
    assert json.loads((tmp_path / "plan" / "steerable.json").read_text())["targets"] == [1.5]
    with steer(model, d, 1.0, mode="clamp", target=1.5):
        expected = logits(model)
    with applied(model, load_steerable(tmp_path / "plan", model), 1.0):
        assert torch.equal(logits(model), expected)


def test_a_plan_saved_with_a_tensor_target_before_the_fix_still_loads(tmp_path):
    model = tiny_model("llama")
    d = direction(1, seed=2)
    folder = Steering([d], modes=["clamp"], targets=[1.5]).save(tmp_path / "plan")
    record = json.loads((folder / "steerable.json").read_text())
    (folder / "steerable.json").write_text(json.dumps(record | {"targets": ["tensor(1.5000)"]}))  # as older versions wrote it
    with steer(model, d, 1.0, mode="clamp", target=1.5):
        expected = logits(model)
    with applied(model, load_steerable(folder, model), 1.0):
        assert torch.equal(logits(model), expected)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_a_non_finite_clamp_target_is_refused(bad):
    model = tiny_model("llama")
    with pytest.raises(ValueError, match="target"), steer(model, direction(1), 1.0, mode="clamp", target=bad):
        pass
    with pytest.raises(ValueError, match="target"):
        Steering([direction(1)], modes=["clamp"], targets=[bad])


def test_a_target_for_a_mode_that_has_none_is_refused():
    with pytest.raises(ValueError, match="clamp"):
        Steering([direction(1)], modes=["add"], targets=[1.0])
    with pytest.raises(ValueError, match="clamp"), steer(tiny_model("llama"), direction(1), 1.0, mode="ablate", target=1.0):
        pass


def test_non_finite_plan_weights_and_condition_thresholds_are_refused():
    with pytest.raises(ValueError, match="weights"):
        Steering([direction(1)], weights=[float("nan")])
    with pytest.raises(ValueError, match="threshold"):
        steering.Condition(direction(1), float("nan"))


# -- messages that name the problem and the fix ------------------------------------------------------


def test_steering_with_no_directions_is_refused():
    with pytest.raises(ValueError, match="no directions"), steer(tiny_model("llama"), [], 1.0):
        pass


def test_direction_arithmetic_sum_division_and_non_finite_factors():
    a, b, c = direction(1, seed=1), direction(1, seed=2), direction(1, seed=3)
    torch.testing.assert_close(sum([a, b, c]).step, a.step + b.step + c.step)
    torch.testing.assert_close((a / 2).step, a.step * 0.5)
    torch.testing.assert_close((a / -4.0).step, a.step * -0.25)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="finite"):
            a * bad
        with pytest.raises(ValueError, match="finite"):
            a / bad
    with pytest.raises(ValueError, match="zero"):
        a / 0
    with pytest.raises(TypeError):
        a * "two"


def test_monitor_refuses_an_empty_prompt_before_running():
    model = tiny_model("llama")
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        analysis.monitor(model, [direction(1)], ["Hello", ""])


def test_monitor_refuses_texts_past_learned_positions():
    model = tiny_model("gpt2")  # 256 learned positions
    with pytest.raises(ValueError, match="256 positions"):
        analysis.monitor(model, [direction(1)], ["x" * 300])
    with pytest.raises(ValueError, match="256 positions"):
        analysis.monitor(model, [direction(1)], ["x" * 250], generate=20)


def test_monitor_refuses_a_remote_model_naming_the_local_alternative():
    model = on_meta(tiny_model("llama"))
    with pytest.raises(NotImplementedError, match="load the model locally"):
        analysis.monitor(model, [direction(1)], ["Hello"])


@pytest.mark.parametrize(
    "prompts, generate, message", [([], 0, "at least one prompt"), (["Hi"], 2.5, "generate=2.5"), (["Hi"], True, "generate=True")]
)
def test_monitor_refuses_no_prompts_and_a_fractional_generate(prompts, generate, message):
    with pytest.raises(ValueError, match=message):
        analysis.monitor(tiny_model("llama"), [direction(1)], prompts, generate=generate)


def test_predictions_for_no_directions_are_refused_by_name():
    with pytest.raises(ValueError, match="no directions"):
        predict_steerability(tiny_model("llama"), [], analysis.dilemmas()[:2])


@pytest.mark.parametrize("coeff", [float("nan"), float("inf")])
def test_orthogonalize_weights_refuses_a_non_finite_coefficient_and_leaves_the_weights(coeff):
    model = tiny_model("llama")
    before = sl.unwrap(model).model.layers[1].self_attn.o_proj.weight.detach().clone()
    with pytest.raises(ValueError, match="coeff"):
        steering.orthogonalize_weights(model, direction(1, "o"), coeff)
    assert torch.equal(sl.unwrap(model).model.layers[1].self_attn.o_proj.weight, before)


def test_saving_something_that_is_not_a_direction_is_named(tmp_path):
    with pytest.raises(TypeError, match="item 1 is a str"):
        save_directions([direction(1), "mean_diff"], tmp_path / "x.safetensors")


@pytest.mark.parametrize(
    "option, message",
    [
        ({"steps": 0}, "steps=0: give a whole number of training steps"),
        ({"batch_pairs": 0}, "batch_pairs=0: give a whole number of pairs per step"),
        ({"tokens": 2.5}, "tokens=2.5"),
        ({"lr": float("nan")}, "lr=nan"),
        ({"lr": 0.0}, "lr=0.0"),
        ({"coherence_weight": float("inf")}, "coherence_weight=inf"),
        ({"warmup_steps": -1}, "warmup_steps=-1"),
        ({"patience": 0}, "patience=0"),
    ],
)
def test_training_options_are_named_with_their_own_meaning(option, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.")) as caught:
        steering.ReprPOConfig(**option)
    assert "texts per forward pass" not in str(caught.value)


@pytest.mark.parametrize("rank, message", [(0, "rank=0"), (1.5, "rank=1.5"), (True, "rank=True")])
def test_a_lora_rank_that_is_not_a_whole_number_is_named(rank, message):
    model = tiny_model("llama")
    with pytest.raises(ValueError, match=message):
        steering.attach_lora(model, [1], ("o",), rank=rank)
    assert all(not hasattr(m, "base_layer") for m in sl.unwrap(model).modules())


def test_prompting_with_two_empty_prompts_is_refused():
    with pytest.raises(ValueError, match="Prompting"):
        steering.Prompting("", "")
    with pytest.raises(TypeError, match="texts"):
        steering.Prompting(None, "Lie.")


def test_compute_takes_a_numpy_token_and_names_an_option_the_method_lacks():
    model = tiny_model("llama")
    pairs = probes.honesty_pairs(n=4, tokenizer=model.tokenizer, chat=True)
    acts = probes.collect(model, pairs, layers=[1], sublayers="resid", tokens=2, progress=False)
    by_numpy = steering.compute("mean_diff", acts, 1, "resid", token=np.int64(-1))
    states = acts[1, "resid"][:, :, -1].double()
    expected = F.normalize((states[:, 0] - states[:, 1]).mean(0), dim=0).float()
    torch.testing.assert_close(by_numpy.vector, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"mean_diff takes no option 'seed'"):
        steering.compute("mean_diff", acts, 1, "resid", seed=3)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda d, path: steering.export_gguf([d], path, coeff=float("nan")), "coeff=nan"),
        (lambda d, path: steering.export_gguf([d], path, layer_count=1), "layer_count=1"),
        (lambda d, path: steering.export_gguf([d, direction(2, width=48)], path), "48 features"),
        (lambda d, path: steering.export_gguf([Direction(d.vector, float("inf"), 2, "resid", "x")], path), "not finite"),
    ],
)
def test_export_gguf_refuses_what_would_write_a_broken_control_vector(tmp_path, call, message):
    with pytest.raises(ValueError, match=message):
        call(direction(2), tmp_path / "v.gguf")
    assert not (tmp_path / "v.gguf").exists()


def test_export_gguf_takes_one_direction_and_round_trips(tmp_path):
    d = direction(2, scale=1.5)
    (loaded,) = steering.import_gguf(steering.export_gguf(d, tmp_path / "v.gguf", coeff=2.0))
    assert loaded.layer == 2 and loaded.scale == pytest.approx(3.0)
    torch.testing.assert_close(loaded.vector, d.vector)


def test_a_second_lora_on_the_same_projection_is_refused_and_the_first_is_kept():
    model = tiny_model("llama")
    first = steering.attach_lora(model, [1], ("o",), rank=2)
    with torch.no_grad():
        for parameter in first.trainable_parameters():
            parameter.normal_(0, 0.1)
    trained = [p.detach().clone() for p in first.trainable_parameters()]
    with pytest.raises(ValueError, match="already carries a LoRA adapter"):
        steering.attach_lora(model, [0, 1], ("o",), rank=2)
    assert all(torch.equal(p, q) for p, q in zip(first.trainable_parameters(), trained))
    assert not hasattr(sl.unwrap(model).model.layers[0].self_attn.o_proj, "base_layer")  # nothing half-attached
    first.detach()
    assert not hasattr(sl.unwrap(model).model.layers[1].self_attn.o_proj, "base_layer")


@pytest.mark.parametrize(
    "attach", [lambda m: steering.attach_lora(m, [1], ("o",), rank=2), lambda m: steering.attach_innerpissa(m, [1], ("o",), rank=2)]
)
def test_a_detached_adapter_refuses_to_steer(attach):
    model = tiny_model("llama")
    adapter = attach(model)
    adapter.detach()
    with pytest.raises(ValueError, match="detached"), applied(model, adapter, 1.0):
        pass
    with pytest.raises(ValueError, match="detached"), adapter.coeff(1.0):
        pass


def test_validate_predictors_ranks_the_logit_lens_only_on_the_residual_stream():
    """Rows written before lens_margin was NaN off the residual stream (a q row with a value) are not ranked."""
    from scipy.stats import spearmanr

    generator = np.random.default_rng(1)
    n = 10
    results = pd.DataFrame(
        {
            "layer": list(range(n)) * 2,
            "kind": ["resid"] * n + ["q"] * n,
            "method": "mean_diff",
            "item_slope": generator.normal(size=2 * n),
            "lens_margin": generator.normal(size=2 * n),
        }
    )
    row = analysis.measures.predict.validate_predictors(results, predictors=["lens_margin"], n_boot=50).iloc[0]
    resid = results[results["kind"] == "resid"]
    assert row["n_configs"] == n
    assert row["spearman"] == pytest.approx(spearmanr(resid["lens_margin"], resid["item_slope"]).statistic)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m, d, items: finite_difference_effects(m, [d], items, step=0), "step=0"),
        (lambda m, d, items: predict_steerability(m, [d], items, top_tokens=-1), "top_tokens=-1"),
        (
            lambda m, d, items: predict_steerability(
                m, [d], items, separation=pd.DataFrame({"layer": [1], "kind": ["resid"], "auroc": [0.9]})
            ),
            "auroc_null",
        ),
        (lambda m, d, items: analysis.measures.predict.validate_predictors(pd.DataFrame({"predicted_effect": [1.0, 2.0]})), "item_slope"),
    ],
)
def test_predictor_options_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call(tiny_model("llama"), direction(1), analysis.dilemmas()[:2])


def test_more_promoted_tokens_than_the_vocabulary_lists_them_all():
    model = tiny_model("llama")
    everything = predict_steerability(model, [direction(1)], analysis.dilemmas()[:2], top_tokens=10**6)["lens_promotes"].iloc[0]
    vocabulary = predict_steerability(model, [direction(1)], analysis.dilemmas()[:2], top_tokens=sl.unwrap(model).config.vocab_size)
    assert everything == vocabulary["lens_promotes"].iloc[0]
