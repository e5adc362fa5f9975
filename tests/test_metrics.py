"""Every key of `dose_metrics` recomputed by hand on small synthetic tables."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.measures.metrics import dose_metrics, paired_changes


def table(values: dict[str, dict[float, float]], invalid: set[tuple[str, float]] = frozenset(), nll=None) -> pd.DataFrame:
    rows = [
        {"item": item, "coeff": c, "readout": v, "valid": (item, c) not in invalid}
        for item, by_c in values.items()
        for c, v in by_c.items()
    ]
    df = pd.DataFrame(rows)
    if nll is not None:
        df["nll"] = df["coeff"].map(nll)
    return df


# Three items over c = -1, 0, 1, 2; item "c" is invalid at c = 2, so it leaves the balanced set.
VALUES = {
    "a": {-1.0: -1.0, 0.0: 0.0, 1.0: 1.5, 2.0: 2.0},
    "b": {-1.0: 0.5, 0.0: 1.0, 1.0: 1.0, 2.0: 3.0},
    "c": {-1.0: 9.0, 0.0: 9.0, 1.0: 9.0, 2.0: -9.0},
}
NLL = {-1.0: 2.2, 0.0: 2.0, 1.0: 2.5, 2.0: 3.0}


def test_every_key_by_hand_on_a_small_table():
    m = dose_metrics(table(VALUES, invalid={("c", 2.0)}, nll=NLL))
    coeffs = [-1.0, 0.0, 1.0, 2.0]
    means = [(VALUES["a"][c] + VALUES["b"][c]) / 2 for c in coeffs]  # items a and b only
    assert means == [-0.25, 0.5, 1.25, 2.5]
    c_bar, m_bar = sum(coeffs) / 4, sum(means) / 4
    sxx = sum((c - c_bar) ** 2 for c in coeffs)
    slope = sum((c - c_bar) * (y - m_bar) for c, y in zip(coeffs, means)) / sxx
    intercept = m_bar - slope * c_bar
    residual = sum((y - intercept - slope * c) ** 2 for c, y in zip(coeffs, means))
    r2 = 1 - residual / sum((y - m_bar) ** 2 for y in means)
    assert m["n_items"] == 2 and m["valid_frac"] == pytest.approx(11 / 12)
    assert m["slope"] == pytest.approx(slope) and m["intercept"] == pytest.approx(intercept) and m["r2"] == pytest.approx(r2)
    assert m["score"] == pytest.approx(abs(slope) * r2 * (11 / 12) ** 2)
    assert m["spearman"] == pytest.approx(1.0)  # the means rise over -1, 0, 1
    assert m["effect"] == pytest.approx((1.25 - (-0.25)) / 2)
    assert m["delta_nll"] == pytest.approx(0.5)  # worst of c = -1 (+0.2) and c = +1 (+0.5)
    assert m["normalized_gain"] == pytest.approx(100 * 0.75 * 1.0 / 1.5)
    slopes = [np.polyfit(coeffs, [VALUES[i][c] for c in coeffs], 1)[0] for i in ("a", "b")]
    mean, sd = np.mean(slopes), np.std(slopes, ddof=1)
    half = stats.t.ppf(0.975, 1) * sd / math.sqrt(2)
    t = mean / (sd / math.sqrt(2))
    assert m["item_slope"] == pytest.approx(mean)
    assert (m["item_slope_lo"], m["item_slope_hi"]) == pytest.approx((mean - half, mean + half))
    assert m["p_value"] == pytest.approx(2 * stats.t.sf(abs(t), 1))
    diffs = [VALUES[i][2.0] - VALUES[i][-1.0] for i in ("a", "b")]
    t_paired = np.mean(diffs) / (np.std(diffs, ddof=1) / math.sqrt(2))
    assert m["paired_p"] == pytest.approx(2 * stats.t.sf(abs(t_paired), 1))
    assert (m["min"], m["max"]) == (-0.25, 2.5)


def test_the_issue_table_gives_rho_one_score_one_gain_one_hundred():
    rng = np.random.default_rng(0)
    offsets = rng.normal(0, 3, 64)  # items differ a lot ...
    coeffs = (-1.0, 0.0, 1.0)
    rows = [
        {"item": f"i{i}", "coeff": c, "readout": offsets[i] + c + rng.normal(0, 0.3), "valid": True, "nll": 2.0}
        for i in range(64)
        for c in coeffs
    ]  # ... but every one moves by exactly +1 per unit c
    m = dose_metrics(pd.DataFrame(rows))
    assert m["spearman"] == 1.0
    assert abs(m["score"] - 1) < 0.05
    assert abs(m["normalized_gain"] - 100) < 5
    assert m["item_slope"] == pytest.approx(1.0, abs=0.1) and m["p_value"] < 1e-30
    pooled = stats.linregress([r["coeff"] for r in rows], [r["readout"] for r in rows])
    assert pooled.rvalue**2 < 0.2  # what the (item, c)-pooled fit said: a measure of item spread, not of steering


@pytest.mark.filterwarnings("ignore:Precision loss")  # every item has the same slope here
def test_gain_never_rewards_a_lower_nll_and_survives_minus_one():
    values = {f"i{k}": {-1.0: -1.0 + 0.1 * k, 0.0: 0.1 * k, 1.0: 1.0 + 0.1 * k} for k in range(4)}
    for drop in (-0.5, -1.0, -3.0):
        m = dose_metrics(table(values, nll={-1.0: 2.0 + drop, 0.0: 2.0, 1.0: 2.0 + drop}))
        assert m["delta_nll"] == pytest.approx(drop)
        assert m["normalized_gain"] == pytest.approx(100.0)  # effect 1, rho 1, 1 + max(0, dNLL) = 1


def test_reversed_steering_earns_no_gain_and_a_negative_item_slope():
    values = {f"i{k}": {-1.0: 1.0 + k, 0.0: float(k), 1.0: -1.0 + k + 0.01 * k} for k in range(5)}
    m = dose_metrics(table(values, nll={-1.0: 2.0, 0.0: 2.0, 1.0: 2.0}))
    assert m["spearman"] == -1.0 and m["normalized_gain"] == 0.0 and m["item_slope"] < 0


def test_an_item_invalid_anywhere_leaves_every_mean():
    values = {"a": {-1.0: 0.0, 1.0: 2.0}, "b": {-1.0: 10.0, 1.0: 0.0}}
    m = dose_metrics(table(values, invalid={("b", -1.0)}))
    assert m["n_items"] == 1 and m["effect"] == pytest.approx(1.0) and math.isnan(m["p_value"])


def test_the_legacy_honesty_column_is_accepted():
    df = table(VALUES, invalid={("c", 2.0)}, nll=NLL)
    assert dose_metrics(df.rename(columns={"readout": "honesty"})) == pytest.approx(dose_metrics(df), nan_ok=True)


def test_paired_changes_are_each_items_difference_from_zero():
    df = table(VALUES, invalid={("c", 2.0)}, nll=NLL)
    change = paired_changes(df).set_index("coeff")
    for c in (-1.0, 1.0, 2.0):
        diffs = [VALUES[i][c] - VALUES[i][0.0] for i in ("a", "b")]
        half = stats.t.ppf(0.975, 1) * np.std(diffs, ddof=1) / math.sqrt(2)
        assert change.loc[c, "mean"] == pytest.approx(np.mean(diffs))
        assert (change.loc[c, "lo"], change.loc[c, "hi"]) == pytest.approx((np.mean(diffs) - half, np.mean(diffs) + half))
        assert change.loc[c, "delta_nll"] == pytest.approx(NLL[c] - NLL[0.0])
    assert change.loc[0.0, "mean"] == 0.0
