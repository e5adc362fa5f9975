"""Scoring readout items against independent computations, and dose-response tables."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import analysis
from analysis.measures.dose import dose_response
from analysis.readouts import score as sc
from probes import sublayers as sl
from steering import Direction, steer
from tests.tiny import tiny_model

READOUT = analysis.ReadoutItem("r1", "How was the trip?", "It was", ("good",), ("bad",), sign=-1.0)


def yes_biased_model():
    """A tiny model that always answers 'Yes' (its LM head puts all mass on yes tokens)."""
    model = tiny_model("llama")
    yes = sc.word_token_ids(model.tokenizer, ("yes",))
    head = sl.unwrap(model).lm_head
    with torch.no_grad():
        head.weight.zero_()
    head.bias = torch.nn.Parameter(torch.full((head.weight.shape[0],), -20.0))
    with torch.no_grad():
        head.bias[yes] = 10.0
    return model


def test_a_model_that_always_says_yes_gets_no_credit_on_a_balanced_set():
    table = analysis.score_items(yes_biased_model(), analysis.dilemmas())
    assert (table["logratio"] > 5).all() and table["valid"].all()
    assert table["readout"].mean() == pytest.approx(0.0, abs=1e-6)
    signs = np.array([i.sign for i in analysis.dilemmas()])
    np.testing.assert_allclose(table["readout"], table["logratio"] * signs)


def probabilities(model, text):
    with torch.no_grad():
        return torch.softmax(sl.unwrap(model)(**model.tokenizer(text, return_tensors="pt")).logits[0, -1].double(), -1)


@pytest.mark.parametrize("words", [("yes", "no"), ("good", "bad")])
def test_logratio_sums_every_token_of_each_word_set_independently(words):
    model = tiny_model("llama")
    tokenizer = model.tokenizer
    positive, negative = words
    items = analysis.dilemmas()[:3] if words == ("yes", "no") else [READOUT]
    table = analysis.score_items(model, items, min_pmass=0.0)
    pos_ids = [i for i in range(len(tokenizer)) if tokenizer.decode([i]).strip().lower() == positive]
    neg_ids = [i for i in range(len(tokenizer)) if tokenizer.decode([i]).strip().lower() == negative]
    assert len(pos_ids) >= 2 and len(neg_ids) >= 2  # with and without a leading space
    for row, item in zip(table.itertuples(), items):
        probs = probabilities(model, sc.render_item(tokenizer, item))
        p_pos, p_neg = probs[pos_ids].sum(), probs[neg_ids].sum()
        assert row.logratio == pytest.approx(float(torch.log(p_pos / p_neg)), abs=1e-4)
        assert row.readout == pytest.approx(item.sign * float(torch.log(p_pos / p_neg)), abs=1e-4)
        assert row.pmass == pytest.approx(float(p_pos + p_neg), rel=1e-4)
    assert not analysis.score_items(model, items, min_pmass=0.99)["valid"].any()


def test_words_that_are_not_single_tokens_are_left_out_with_a_warning_or_refused():
    tokenizer = tiny_model("llama").tokenizer
    with pytest.warns(UserWarning, match="\\['wonderful'\\] are not single tokens"):
        assert sc.word_token_ids(tokenizer, ("good", "wonderful")) == sc.word_token_ids(tokenizer, ("good",))
    with pytest.raises(ValueError, match="None of the words"):
        sc.word_token_ids(tokenizer, ("wonderful", "lovely"))


def direction_for(scale=3.0):
    vector = torch.nn.functional.normalize(torch.randn(32, generator=torch.Generator().manual_seed(1)), dim=0)
    return Direction(vector=vector, scale=scale, layer=1, kind="resid", method="random")


def test_dose_response_c_zero_reproduces_unsteered_scores_exactly():
    model = tiny_model("llama")
    items = [*analysis.dilemmas()[:6], READOUT]
    df = dose_response(model, direction_for(), items, coeffs=(-2, 0, 2), min_pmass=0.0)
    assert list(df.columns) == ["item", "coeff", "logratio", "pmass", "valid", "readout", "nll"]
    unsteered = analysis.score_items(model, items, min_pmass=0.0)
    at_zero = df[df["coeff"] == 0].reset_index(drop=True)
    assert (at_zero["logratio"].values == unsteered["logratio"].values).all()
    assert not np.allclose(df[df["coeff"] == 2]["logratio"].values, unsteered["logratio"].values)
    assert at_zero["nll"].iloc[0] == pytest.approx(analysis.text_nll(model))


def test_batched_coefficients_equal_one_coefficient_at_a_time():
    model = tiny_model("llama")
    items = analysis.dilemmas()[:4]
    direction = direction_for()
    df = dose_response(model, direction, items, coeffs=(-1, 1, 3), min_pmass=0.0)
    for c in (-1, 1, 3):
        with steer(model, direction, c):
            alone = analysis.score_items(model, items, min_pmass=0.0)
        np.testing.assert_allclose(df[df["coeff"] == c]["logratio"].values, alone["logratio"].values, atol=1e-4)
