"""Monitoring against collect + a dot product, and under steering; the steerability predictors table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import analysis
import probes
import steering
from steering import directions as dirs
from tests.tiny import tiny_model

PROMPTS = ["Should I tell the truth?", "It was a good day"]


def setup(family="llama", layer=1, kind="resid"):
    model = tiny_model(family)
    pairs = probes.honesty_pairs(n=8, tokenizer=model.tokenizer, chat=True)
    acts = probes.collect(model, pairs, layers=[layer], sublayers=kind, progress=False)
    return model, acts, dirs.compute("mean_diff", acts, layer, kind)


@pytest.mark.parametrize("family, kind", [("llama", "resid"), ("llama", "up"), ("gpt2", "v")])
def test_prompt_projections_equal_collect_and_a_dot_product(family, kind):
    model, acts, direction = setup(family, 1, kind)
    table = analysis.monitor(model, [direction], PROMPTS, reference=acts)
    for index, prompt in enumerate(PROMPTS):
        n = len(model.tokenizer(prompt)["input_ids"])
        captured = probes.collect(model, [(prompt, prompt + " no")], layers=[1], sublayers=kind, tokens=n, progress=False)
        expected = captured[1, kind][0, 0].float() @ direction.vector.float()  # every position of the prompt
        rows = table[table["prompt"] == index]
        assert list(rows["position"]) == list(range(n)) and (rows["phase"] == "prompt").all()
        np.testing.assert_allclose(rows["projection"].to_numpy(), expected.numpy(), rtol=1e-4, atol=1e-5)
    states = acts[1, kind].float().reshape(-1, acts[1, kind].shape[-1]) @ direction.vector.float()
    z = (table["projection"] - float(states.mean())) / float(states.std())
    np.testing.assert_allclose(table["z"].to_numpy(), z.to_numpy(), rtol=1e-5)


def test_generation_is_read_token_by_token():
    model, _, direction = setup()
    table = analysis.monitor(model, [direction], PROMPTS[:1], generate=5)
    n = len(model.tokenizer(PROMPTS[0])["input_ids"])
    assert (table["phase"] == "generated").sum() == 4  # the last new token is never fed back, so never read
    assert table["z"].isna().all()  # no reference given
    generated = probes.torch_module(model).generate(**model.tokenizer(PROMPTS[:1], return_tensors="pt"), max_new_tokens=5, do_sample=False)
    full_text_ids = generated[0, : n + 4].tolist()
    assert list(table["token"]) == [model.tokenizer.decode([t]) for t in full_text_ids]


def test_a_steered_run_moves_every_prompt_projection_by_c_times_s():
    model, _, direction = setup()
    plain = analysis.monitor(model, [direction], PROMPTS, generate=3)
    with steering.steer(model, direction, 2.0):
        steered = analysis.monitor(model, [direction], PROMPTS, generate=3)
    prompt_rows = plain["phase"] == "prompt"
    shift = steered["projection"][prompt_rows].to_numpy() - plain["projection"][prompt_rows].to_numpy()
    np.testing.assert_allclose(shift, 2.0 * direction.scale, rtol=1e-4)
    assert torch.linalg.vector_norm(direction.vector).item() == pytest.approx(1.0, abs=1e-5)


def test_monitor_refuses_bad_input_clearly():
    model, _, direction = setup()
    with pytest.raises(TypeError, match="list of texts"):
        analysis.monitor(model, [direction], "one string")
    with pytest.raises(ValueError, match="at least one direction"):
        analysis.monitor(model, [], PROMPTS)


def test_monitor_figure_has_one_line_per_direction_and_token_hover():
    model, acts, direction = setup()
    other = dirs.compute("pca_diff", acts, 1, "resid")
    table = analysis.monitor(model, [direction, other], PROMPTS[:1], generate=2, reference=acts)
    fig = analysis.monitor_figure(table)
    assert [trace.name for trace in fig.data] == [direction.name, other.name]
    assert list(fig.data[0].text) == list(table[table["direction"] == direction.name]["token"])


def test_predictors_table_recomputes_the_logit_lens_by_hand():
    model, acts, direction = setup()
    items = analysis.dilemmas()[:4]
    sep = analysis.separation(acts)
    sep["auroc_null"] = 0.5
    table = analysis.predict_steerability(model, [direction], items, separation=sep)
    row = table.iloc[0]
    hf = probes.torch_module(model)
    logits = hf.lm_head.weight @ (hf.model.norm.weight * direction.vector * direction.scale)
    ids = lambda words: analysis.readouts.score.word_token_ids(model.tokenizer, words)  # noqa: E731
    by_hand = np.mean(
        [it.sign * float(torch.logsumexp(logits[ids(it.positive)], -1) - torch.logsumexp(logits[ids(it.negative)], -1)) for it in items]
    )
    assert row["lens_margin"] == pytest.approx(by_hand, rel=1e-4)
    assert row["separation_margin"] == pytest.approx(float(sep.query("layer == 1 and kind == 'resid'")["auroc"].iloc[0]) - 0.5)
    effects = analysis.measures.predict.first_order_effects(model, [direction], items)
    assert row["predicted_effect"] == pytest.approx(effects["effect"].mean(), rel=1e-5)


def ranks(values):
    order = np.argsort(values)
    out = np.empty(len(values))
    out[order] = np.arange(len(values))
    return out


def test_predictor_validation_is_spearman_by_hand_with_a_bootstrap_over_configurations():
    generator = np.random.default_rng(3)
    measured = generator.normal(size=40)
    table = pd.DataFrame(
        {"item_slope": measured, "predicted_effect": measured + generator.normal(scale=0.5, size=40), "auroc": generator.normal(size=40)}
    )
    table["layer"], table["kind"], table["method"] = range(40), "resid", "mean_diff"
    result = analysis.measures.predict.validate_predictors(table, n_boot=400).set_index("predictor")
    for predictor in ("predicted_effect", "auroc"):
        by_hand = np.corrcoef(ranks(table[predictor].to_numpy()), ranks(measured))[0, 1]  # no ties: Pearson of ranks
        assert result.loc[predictor, "spearman"] == pytest.approx(by_hand, abs=1e-12)
        assert result.loc[predictor, "ci_lo"] < by_hand < result.loc[predictor, "ci_hi"]
    assert result.loc["predicted_effect", "ci_lo"] > 0.5 and result.loc["auroc", "ci_lo"] < 0 < result.loc["auroc", "ci_hi"]
    assert "lens_margin" not in result.index  # absent columns are skipped
    fig = analysis.plots.predictor_scatter(table, result.reset_index())
    assert len(fig.data) == 2 and len(fig.data[0].x) == 40


def test_a_sweep_report_validates_the_predictors_once_it_has_enough_configurations():
    from types import SimpleNamespace

    from analysis.reports.sweep_report import summary_markdown, sweep_figures

    generator = np.random.default_rng(0)
    n = 12
    slope = generator.normal(size=n)
    results = pd.DataFrame(
        {
            "layer": range(n),
            "kind": "resid",
            "method": ["mean_diff"] * (n - 2) + ["mean_diff+ablate"] * 2,
            "item_slope": slope,
            "predicted_effect": slope * 2 + 0.01 * generator.normal(size=n),
            "lens_margin": generator.normal(size=n),
            "auroc": 0.9,
            "auroc_null": generator.uniform(0.5, 0.9, size=n),
            "p_value": 0.01,
            "normalized_gain": 1.0,
            "score": 1.0,
        }
    )
    separation = pd.DataFrame({"layer": range(n), "kind": "resid", "auroc": 0.9, "auroc_null": 0.6, "space": "activation"})
    result = SimpleNamespace(results=results, separation=separation, doses={}, cosines=None)
    summary = summary_markdown(result)
    assert "Do the cheap predictors rank configurations" in summary
    row = next(line for line in summary.splitlines() if line.startswith("| predicted_effect"))
    assert row.split("|")[2].strip() == "10"  # ablate rows are not predicted by the add-mode screen
    assert "predictors" in sweep_figures(result)
    assert "Do the cheap predictors" not in summary_markdown(
        SimpleNamespace(results=results.head(5), separation=separation, doses={}, cosines=None)
    )
