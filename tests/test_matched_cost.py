"""Issue 25.2: methods compared at a matched cost. The KL on neutral text, the coefficient at a budget and the
effect there, each against a hand-written computation (one text at a time, no padding, no batching)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from scipy import stats

import steering
from analysis.measures.matched_cost import at_coeff, effect_at, with_budget_coeffs
from probes import sublayers as sl
from steering import Direction, Prompting, steer
from steering.calibrate import match_cost, neutral_kl
from tests.tiny import tiny_model

TEXTS = ["The weather today is mild and grey.", "A kitchen with a long wooden table and two windows."]


def direction(scale=1.5, layer=1, seed=0, width=32):
    vector = F.normalize(torch.randn(width, generator=torch.Generator().manual_seed(seed)), dim=0)
    return Direction(vector, scale, layer, "resid", "random")


def hand_kl(model, texts, c, intervention=None, persona=None):
    """Mean over every text token after the first of KL(unsteered ‖ steered), one unpadded text at a time."""
    torch_model = sl.unwrap(model)
    total, count = 0.0, 0
    for text in texts:
        ids = model.tokenizer(text, return_tensors="pt")["input_ids"]
        n = ids.shape[1]
        with torch.no_grad():
            base = F.log_softmax(torch_model(input_ids=ids).logits.float(), -1)[0, : n - 1]
            if persona is not None:  # the persona's text and a blank line before the text (after its BOS, if any)
                head = torch.tensor([model.tokenizer(persona + "\n\n", add_special_tokens=False)["input_ids"]])
                bos = int(ids[0, 0] == model.tokenizer.bos_token_id)
                full = torch.cat([ids[:, :bos], head, ids[:, bos:]], dim=1)
                steered = F.log_softmax(torch_model(input_ids=full).logits.float(), -1)[0, -n:-1]
            else:
                with steer(model, intervention, c):
                    steered = F.log_softmax(torch_model(input_ids=ids).logits.float(), -1)[0, : n - 1]
        total += float((base.exp() * (base - steered)).sum())
        count += n - 1
    return total / count


def test_neutral_kl_equals_a_hand_written_kl_for_a_direction_at_each_coefficient():
    model = tiny_model("llama")
    d = direction()
    got = neutral_kl(model, d, [-1.0, 0.0, 0.5, 2.0], TEXTS)
    expected = [hand_kl(model, TEXTS, c, d) for c in (-1.0, 0.5, 2.0)]
    assert got[1] == 0.0
    assert [got[0], got[2], got[3]] == pytest.approx(expected, rel=1e-4, abs=1e-9)
    assert 0 < got[2] < got[3]  # a larger dose costs more


def test_prompting_costs_what_its_persona_does_to_the_text():
    model = tiny_model("llama")
    prompt = Prompting("You are honest.", "You are a liar.")
    got = neutral_kl(model, prompt, [1.0, -1.0], TEXTS)
    assert got == pytest.approx([hand_kl(model, TEXTS, 0, persona=p) for p in (prompt.positive, prompt.negative)], rel=1e-4)
    assert min(got) > 0  # a persona is not free
    match = match_cost(model, prompt, 0.01, TEXTS)
    assert (match.coeff, match.reached) == (1.0, False) and match.kl == pytest.approx(np.mean(got), rel=1e-6)


def test_the_matched_coefficient_costs_the_budget_by_a_hand_written_kl():
    model = tiny_model("llama")
    d = direction()
    budget = 0.02
    match = match_cost(model, d, budget, TEXTS)
    assert match.reached
    cost = lambda c: (hand_kl(model, TEXTS, c, d) + hand_kl(model, TEXTS, -c, d)) / 2  # noqa: E731
    assert budget <= cost(match.coeff) <= budget * 1.03  # bisection stops just at or above the budget
    assert cost(match.coeff / 1.05) < budget  # and not far above it
    assert match.kl == pytest.approx(cost(match.coeff), rel=1e-4)


def test_an_intervention_that_stays_under_the_budget_is_judged_at_the_largest_coefficient():
    model = tiny_model("llama")
    weak = direction(scale=1e-7)
    match = match_cost(model, weak, 0.5, TEXTS, max_coeff=4.0)
    assert (match.coeff, match.reached) == (4.0, False) and "under the budget" in match.note


def test_an_adapter_is_matched_like_a_direction():
    model = tiny_model("llama")
    adapter = steering.attach_innerpissa(model, [0, 1], ("o", "down"), 2, seed=0)
    try:
        with torch.no_grad():  # move it off the identity so it acts
            for p in adapter.trainable_parameters():
                p.add_(0.3 * torch.randn_like(p))
        match = match_cost(model, adapter, 1e-3, TEXTS)
        kl = neutral_kl(model, adapter, [match.coeff, -match.coeff], TEXTS)
        assert match.reached and 1e-3 <= np.mean(kl) <= 1.03e-3
    finally:
        adapter.detach()


@pytest.mark.parametrize("budget,message", [(0.0, "budget=0.0"), (float("nan"), "budget=nan"), (-1, "budget=-1")])
def test_match_cost_refuses_a_budget_that_is_not_a_positive_kl(budget, message):
    with pytest.raises(ValueError, match=message):
        match_cost(tiny_model("llama"), direction(), budget, TEXTS)


def test_neutral_kl_refuses_texts_it_cannot_measure():
    with pytest.raises(ValueError, match="non-empty list"):
        neutral_kl(tiny_model("llama"), direction(), [1.0], "one string")


def synthetic_dose(c_star, seed=0):
    """Signed readouts of 6 dilemmas × 2 actions at −c*, −1, 0, 1, c*: each dilemma its own slope, one invalid item."""
    rng = np.random.default_rng(seed)
    rows = []
    for d in range(6):
        slope = 0.2 + 0.1 * d
        for action in range(2):
            item, offset = f"d{d}a{action}", rng.normal()
            for c in (-c_star, -1.0, 0.0, 1.0, c_star):
                rows.append(
                    dict(
                        item=item,
                        dilemma=f"d{d}",
                        coeff=c,
                        readout=offset + slope * c + 0.01 * rng.normal(),
                        valid=not (item == "d5a1" and c == c_star),
                    )
                )
    return pd.DataFrame(rows)


def test_the_effect_at_the_budget_is_half_the_change_from_minus_to_plus_c_star_per_dilemma():
    c_star = 3.7
    dose = synthetic_dose(c_star)
    got = effect_at(dose, c_star)
    wide = dose.pivot_table(index="item", columns="coeff", values="readout")
    halves = (wide[c_star] - wide[-c_star]) / 2
    # the invalid item drops its whole dilemma (d5), so a Yes-bias of one action cannot leak in
    per_dilemma = halves.groupby(lambda item: item[:2]).mean().drop("d5")
    assert got["effect_at_budget"] == pytest.approx(per_dilemma.mean())
    test = stats.ttest_1samp(per_dilemma, 0.0)
    interval = test.confidence_interval(0.95)
    assert got["p_at_budget"] == pytest.approx(test.pvalue)
    assert (got["effect_at_budget_lo"], got["effect_at_budget_hi"]) == pytest.approx((interval.low, interval.high))


def test_rows_at_the_budget_are_found_after_a_csv_round_trip(tmp_path):
    c_star = 1 / 3
    dose = synthetic_dose(c_star)
    dose.to_csv(tmp_path / "dose.csv", index=False)
    back = pd.read_csv(tmp_path / "dose.csv")
    assert sorted(at_coeff(back, c_star)["coeff"].unique()) == pytest.approx([-c_star, 0.0, c_star])
    assert with_budget_coeffs((-1, 0, 1, 2), 1.0) == [-1.0, 0.0, 1.0, 2.0]
    assert with_budget_coeffs((-1, 0, 1), 2.5) == [-2.5, -1.0, 0.0, 1.0, 2.5]
