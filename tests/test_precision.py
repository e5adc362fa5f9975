"""Honest precision, each against an independent computation: the dilemma as the unit (scipy on
per-dilemma means), invalid actions dropping their dilemma (the issue's 0.50-read-as-1.17 case),
paired between-method tests (scipy's ttest_rel), the seed spread apart from the pooled interval, a
type-I simulation, and the side effects' label-permutation null (enumerated by hand)."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.measures.metrics import balanced, dilemma_slopes, dose_metrics, paired_changes, with_dilemmas
from analysis.measures.precision import best_of, paired_difference, paired_tests, pooled_slopes, seed_summary, signed_for
from analysis.measures.values import (
    side_effect_null,
    side_effects,
    side_effects_ratio,
    transfer_beats_null,
    transfer_table,
    value_profile,
)
from analysis.readouts.items import ReadoutItem

COEFFS = (-1.0, 0.0, 1.0)


def dose(slopes: dict[str, float], labels: dict[str, int], groups: dict[str, str] | None, invalid=frozenset()) -> pd.DataFrame:
    """A dose table whose item i has logratio = slopes[i] · c and readout = labels[i] · logratio."""
    rows = [
        {"item": i, "coeff": c, "logratio": s * c, "readout": labels[i] * s * c, "valid": (i, c) not in invalid}
        for i, s in slopes.items()
        for c in COEFFS
    ]
    frame = pd.DataFrame(rows)
    if groups is not None:
        frame["dilemma"] = frame["item"].map(groups)
    return frame


def random_dose(rng: np.random.Generator, n_dilemmas: int, effect: float = 0.3, yes: float = 1.0, noise: float = 0.5) -> pd.DataFrame:
    """Dilemmas of two actions (labels +1, −1): logratio = (label · effect + Yes shift of the dilemma) · c + noise."""
    rows = []
    for d in range(n_dilemmas):
        shift = rng.normal(0, yes)
        for action, label in (("a", 1), ("b", -1)):
            for c in COEFFS:
                logratio = (label * effect + shift) * c + rng.normal(0, noise)
                rows.append(
                    {
                        "item": f"d{d}{action}",
                        "dilemma": f"d{d}",
                        "coeff": c,
                        "logratio": logratio,
                        "readout": label * logratio,
                        "valid": True,
                    }
                )
    return pd.DataFrame(rows)


def by_hand_dilemma_means(frame: pd.DataFrame) -> pd.Series:
    """Per dilemma kept (every item valid at every c), the mean of np.polyfit item slopes."""
    ok = frame.groupby("dilemma")["valid"].all()
    kept = frame[frame["dilemma"].isin(ok[ok].index)]
    slopes = kept.groupby("item").apply(lambda g: np.polyfit(g["coeff"], g["readout"], 1)[0], include_groups=False)
    return slopes.groupby(kept.drop_duplicates("item").set_index("item")["dilemma"]).mean()


# The synthetic case: a value effect of 0.50 per c and a Yes-bias of 2 per c; in dilemma d2
# the action labelled −1 is invalid at c = +1. Dropped one item at a time, the Yes-bias of d2's other
# action leaks in: (2.5 − 1.5 + 2.5) / 3 = 1.17.
LEAK_SLOPES = {"d1a": 0.5 + 2, "d1b": -0.5 + 2, "d2a": 0.5 + 2, "d2b": -0.5 + 2}
LEAK_LABELS = {"d1a": 1, "d1b": -1, "d2a": 1, "d2b": -1}
LEAK_GROUPS = {"d1a": "d1", "d1b": "d1", "d2a": "d2", "d2b": "d2"}


def test_an_invalid_action_drops_its_dilemma_so_no_yes_bias_leaks():
    one_by_one = dose_metrics(dose(LEAK_SLOPES, LEAK_LABELS, None, {("d2b", 1.0)}))
    assert one_by_one["item_slope"] == pytest.approx(3.5 / 3)  # the 1.17 of the issue
    assert one_by_one["effect"] == pytest.approx(3.5 / 3)
    by_dilemma = dose_metrics(dose(LEAK_SLOPES, LEAK_LABELS, LEAK_GROUPS, {("d2b", 1.0)}))
    assert by_dilemma["item_slope"] == pytest.approx(0.5)
    assert by_dilemma["effect"] == pytest.approx(0.5)
    assert by_dilemma["n_items"] == 2 and by_dilemma["n_dilemmas"] == 1
    assert by_dilemma["kept_frac"] == pytest.approx(2 / 4)
    assert by_dilemma["valid_frac"] == pytest.approx(11 / 12)
    assert list(balanced(dose(LEAK_SLOPES, LEAK_LABELS, LEAK_GROUPS, {("d2b", 1.0)})).index) == ["d1a", "d1b"]


def test_with_dilemmas_uses_the_items_group_or_the_item_itself():
    items = [
        ReadoutItem("x1", "p", "a", ("yes",), ("no",), group="g1"),
        ReadoutItem("x2", "p", "a", ("yes",), ("no",), group="g1"),
        ReadoutItem("s1", "p", "a", ("good",), ("bad",)),
    ]
    frame = with_dilemmas(pd.DataFrame({"item": ["x1", "x2", "s1"], "coeff": 0.0}), items)
    assert list(frame["dilemma"]) == ["g1", "g1", "s1"]


def test_dilemma_level_statistics_equal_scipy_on_the_per_dilemma_means():
    rng = np.random.default_rng(3)
    frame = random_dose(rng, 12)
    frame.loc[(frame["item"] == "d4b") & (frame["coeff"] == -1.0), "valid"] = False  # drops d4
    means = by_hand_dilemma_means(frame)
    assert len(means) == 11 and "d4" not in means.index
    m = dose_metrics(frame)
    assert m["n_dilemmas"] == 11 and m["n_items"] == 22
    assert m["dilemma_slope"] == pytest.approx(means.mean())
    assert m["dilemma_p"] == pytest.approx(stats.ttest_1samp(means, 0.0).pvalue)
    lo, hi = stats.t.interval(0.95, len(means) - 1, loc=means.mean(), scale=stats.sem(means))
    assert (m["dilemma_slope_lo"], m["dilemma_slope_hi"]) == pytest.approx((lo, hi))
    boot = stats.bootstrap((means.to_numpy(),), np.mean, confidence_level=0.95, random_state=0).confidence_interval
    assert abs(boot.low - lo) < 0.5 * (hi - lo) and abs(boot.high - hi) < 0.5 * (hi - lo)  # the same interval, roughly
    assert dilemma_slopes(frame).sort_index().to_numpy() == pytest.approx(means.sort_index().to_numpy())


def test_items_without_a_dilemma_are_their_own_unit():
    frame = random_dose(np.random.default_rng(4), 8).drop(columns="dilemma")
    m = dose_metrics(frame)
    assert m["n_dilemmas"] == m["n_items"] == 16
    assert m["dilemma_slope"] == pytest.approx(m["item_slope"])
    assert m["dilemma_p"] == pytest.approx(m["p_value"])
    assert (m["dilemma_slope_lo"], m["dilemma_slope_hi"]) == pytest.approx((m["item_slope_lo"], m["item_slope_hi"]))
    with_empty = random_dose(np.random.default_rng(4), 8).assign(dilemma=None)  # an empty cell: the item again
    assert dose_metrics(with_empty)["dilemma_p"] == pytest.approx(m["p_value"])


def test_paired_changes_average_each_dilemma_first():
    frame = random_dose(np.random.default_rng(5), 6)
    change = paired_changes(frame).set_index("coeff")
    wide = frame.pivot_table(index="item", columns="coeff", values="readout")
    per_dilemma = (wide[1.0] - wide[0.0]).groupby(lambda item: item[:-1]).mean()
    lo, hi = stats.t.interval(0.95, 5, loc=per_dilemma.mean(), scale=stats.sem(per_dilemma))
    assert change.loc[1.0, "mean"] == pytest.approx(per_dilemma.mean())
    assert (change.loc[1.0, "lo"], change.loc[1.0, "hi"]) == pytest.approx((lo, hi))
    assert change.loc[1.0, "n_items"] == 12 and change.loc[1.0, "n_dilemmas"] == 6


def test_paired_difference_is_scipys_ttest_rel_over_common_dilemmas_with_seeds_averaged():
    rng = np.random.default_rng(6)
    a_seeds = [random_dose(rng, 10, effect=0.6), random_dose(rng, 10, effect=0.6)]
    b = random_dose(rng, 10, effect=0.2)
    b.loc[(b["item"] == "d7a") & (b["coeff"] == 1.0), "valid"] = False  # B loses d7: not compared
    a_means = (by_hand_dilemma_means(a_seeds[0]) + by_hand_dilemma_means(a_seeds[1])) / 2
    b_means = by_hand_dilemma_means(b)
    common = a_means.index.intersection(b_means.index)
    assert len(common) == 9
    result = paired_difference(a_seeds, b)
    assert result["n_dilemmas"] == 9
    assert result["difference"] == pytest.approx((a_means[common] - b_means[common]).mean())
    assert result["p"] == pytest.approx(stats.ttest_rel(a_means[common], b_means[common]).pvalue)
    diff = a_means[common] - b_means[common]
    lo, hi = stats.t.interval(0.95, 8, loc=diff.mean(), scale=stats.sem(diff))
    assert (result["difference_lo"], result["difference_hi"]) == pytest.approx((lo, hi))
    table = paired_tests({"A": a_seeds, "B": b, "prompting": b}, ["prompting", best_of({"A": a_seeds, "B": b}, ["A", "B"])])
    assert best_of({"A": a_seeds, "B": b}, ["A", "B", "missing"]) == "A"
    assert set(zip(table["method"], table["baseline"])) == {("A", "prompting"), ("B", "prompting"), ("B", "A"), ("prompting", "A")}
    row = table[(table["method"] == "A") & (table["baseline"] == "prompting")].iloc[0]
    assert row["p"] == pytest.approx(result["p"])


def test_seed_summary_keeps_the_seed_sd_apart_from_the_pooled_dilemma_interval():
    rng = np.random.default_rng(7)
    seeds = [random_dose(rng, 10, effect=0.4 + 0.05 * k) for k in range(3)]
    seeds[2].loc[(seeds[2]["item"] == "d3a") & (seeds[2]["coeff"] == 0.0), "valid"] = False  # d3 out in one seed: out everywhere
    table = pd.concat([by_hand_dilemma_means(s) for s in seeds], axis=1, join="inner")
    pooled = table.mean(axis=1)
    out = seed_summary(seeds)
    assert out["seeds"] == 3 and out["n_dilemmas"] == 9
    assert out["effect"] == pytest.approx(pooled.mean())
    assert out["effect"] == pytest.approx(table.mean(axis=0).mean())  # = the mean of the seeds' effects there
    assert out["seed_sd"] == pytest.approx(np.std(table.mean(axis=0), ddof=1))
    assert out["dilemma_p"] == pytest.approx(stats.ttest_1samp(pooled, 0.0).pvalue)
    lo, hi = stats.t.interval(0.95, 8, loc=pooled.mean(), scale=stats.sem(pooled))
    assert (out["dilemma_slope_lo"], out["dilemma_slope_hi"]) == pytest.approx((lo, hi))
    assert pooled_slopes(seeds).sort_index().to_numpy() == pytest.approx(pooled.sort_index().to_numpy())
    assert np.isnan(seed_summary(seeds[0])["seed_sd"])
    signed = signed_for(seeds[0].drop(columns="readout"), {"d0a": 1, "d0b": -1})
    assert list(signed["readout"]) == pytest.approx(list(seeds[0][seeds[0]["dilemma"] == "d0"]["readout"]))


def test_under_dilemma_yes_shifts_the_dilemma_test_holds_its_level_and_the_item_test_does_not():
    """200 draws of 30 dilemmas with no value effect but a Yes shift per dilemma (SD 1 per c) and item
    noise (SD 0.3): the dilemma-level test rejects near 5 % of the time, the item-level one far less
    (its variance counts the shifts that cancel within each dilemma)."""
    rng = np.random.default_rng(0)
    item_p, dilemma_p = [], []
    for _ in range(200):
        m = dose_metrics(random_dose(rng, 30, effect=0.0, yes=1.0, noise=0.3))
        item_p.append(m["p_value"])
        dilemma_p.append(m["dilemma_p"])
    item_rate, dilemma_rate = np.mean(np.array(item_p) < 0.05), np.mean(np.array(dilemma_p) < 0.05)
    assert 0.015 <= dilemma_rate <= 0.10
    assert item_rate < 0.01


ITEMS_SPEC = {  # dilemma: (target label of action a, other values of action a (labelled −1 on b))
    "h1": (1, ["care"]),
    "h2": (1, ["care", "fairness"]),
    "h3": (1, ["fairness"]),
    "h4": (1, []),
    "n1": (0, ["care"]),
    "n2": (0, ["fairness"]),
    "n3": (0, ["care", "fairness"]),
    "n4": (0, []),
}


def labelled_items(copies: int = 1) -> list[ReadoutItem]:
    """Both actions of each dilemma of ``ITEMS_SPEC`` (``copies`` times, ids suffixed by the copy after the first)."""
    items = []
    for copy in range(copies):
        for spec, (target, others) in ITEMS_SPEC.items():
            d = spec + (f"_{copy}" if copy else "")
            for action, sign in (("a", 1), ("b", -1)):
                labels = tuple((v, sign) for v in others) + ((("honesty", sign * target),) if target else ())
                items.append(ReadoutItem(f"{d}{action}", "p", "a", ("yes",), ("no",), float(sign * target), labels, group=d))
    return items


def exact_null(effects: dict[str, float], min_items: int = 2) -> np.ndarray:
    """Every relabelling the null allows, enumerated: within each stratum (h: honesty dilemmas oriented
    by honesty; n: the others, each in either orientation) every assignment of label sets to dilemmas."""
    strata = {"h": [d for d in ITEMS_SPEC if d[0] == "h"], "n": [d for d in ITEMS_SPEC if d[0] == "n"]}
    values = ["care", "fairness"]
    out = []
    for h_order in itertools.permutations(strata["h"]):
        for n_order in itertools.permutations(strata["n"]):
            for flips in itertools.product((1, -1), repeat=len(strata["n"])):
                sums = dict.fromkeys(values, 0.0)
                counts = dict.fromkeys(values, 0)
                assignment = list(zip(strata["h"], h_order, (1,) * 4)) + list(zip(strata["n"], n_order, flips))
                for dest, source, flip in assignment:
                    for v in ITEMS_SPEC[source][1]:  # source's action a labels v +1, b −1; the flip swaps them
                        sums[v] += flip * (effects[f"{dest}a"] - effects[f"{dest}b"])
                        counts[v] += 2
                moved = [abs(sums[v] / counts[v]) for v in values if counts[v] >= min_items]
                out.append(np.mean(moved))
    return np.array(out)


def test_side_effect_null_matches_the_enumerated_permutation_distribution():
    rng = np.random.default_rng(1)
    effects = {f"{d}{a}": float(rng.normal(0, 1)) for d in ITEMS_SPEC for a in "ab"}
    items = labelled_items()
    frame = dose(effects, {i: 1 for i in effects}, {f"{d}{a}": d for d in ITEMS_SPEC for a in "ab"})
    null = side_effect_null(frame, items, "honesty", permutations=4000, seed=0, min_items=2)
    exact = exact_null(effects)
    assert null.observed == pytest.approx(side_effects(value_profile(frame, items, "honesty"), min_items=2))
    assert null.null_mean == pytest.approx(exact.mean(), abs=4 * exact.std() / np.sqrt(4000))
    assert np.quantile(exact, 0.93) <= null.q95 <= np.quantile(exact, 0.97)


def test_a_perfectly_targeted_push_does_not_beat_its_null_and_a_push_on_care_does():
    items = labelled_items()
    groups = {i.id: i.group for i in items}
    honesty = {i.id: i.value_labels.get("honesty", 0) * 1.0 for i in items}
    targeted = dose(honesty, {i: 1 for i in honesty}, groups)
    null = side_effect_null(targeted, items, "honesty", permutations=200, min_items=2)
    assert null.observed > 0.2  # co-labelled values move with honesty ...
    assert np.allclose(null.null, null.observed)  # ... exactly as much under every relabelling: no side effect
    assert not null.beats
    assert null.metrics()["side_effects_ratio"] == pytest.approx(null.observed / 1.0)
    items = labelled_items(copies=4)  # 32 dilemmas: enough relabellings for a 5 % test
    groups = {i.id: i.group for i in items}
    care = {i.id: i.value_labels.get("honesty", 0) + 3.0 * i.value_labels.get("care", 0) for i in items}
    pushed = side_effect_null(dose(care, {i: 1 for i in care}, groups), items, "honesty", permutations=200, min_items=2)
    assert pushed.beats and pushed.p < 0.05
    per_value = pushed.per_value.set_index("value")
    assert bool(per_value.loc["care", "beats_null"])


def test_profiles_carry_their_null_and_the_transfer_table_marks_what_beats_it():
    items = labelled_items(copies=4)
    groups = {i.id: i.group for i in items}
    care = {i.id: i.value_labels.get("honesty", 0) + 3.0 * i.value_labels.get("care", 0) for i in items}
    frame = dose(care, {i: 1 for i in care}, groups)
    profile = value_profile(frame, items, "honesty", permutations=200)
    assert {"null_mean", "null_q95", "beats_null", "n_dilemmas", "dilemma_p"} <= set(profile.columns)
    quiet = value_profile(dose({i: 0.0 * v for i, v in care.items()}, {i: 1 for i in care}, groups), items, "honesty", permutations=200)
    marks = transfer_beats_null({"push": profile, "quiet": quiet}, ["honesty", "care", "fairness"])
    assert bool(marks.loc["care", "push"]) and not bool(marks.loc["care", "quiet"])
    assert list(transfer_table({"push": profile, "quiet": quiet}, min_items=2).index[:2]) == ["honesty", "care"]
    assert side_effects_ratio(profile, min_items=2) == pytest.approx(
        side_effects(profile, min_items=2) / abs(profile.set_index("value").loc["honesty", "effect"])
    )


def test_evaluate_adds_the_precision_columns_pooled_seeds_and_paired_tests():
    from analysis.measures.evaluate import PRECISION, MethodRun, methods_table, paired_table, target_metrics, target_part

    items = labelled_items(copies=4)
    rng = np.random.default_rng(8)

    def run(name: str, seed: int, effect: float) -> MethodRun:
        slopes = {i.id: effect * i.value_labels.get("honesty", 0) + rng.normal(0, 0.3) for i in items}
        frame = dose(slopes, {i: 1 for i in slopes}, None).drop(columns="readout")
        frame.loc[(frame["item"] == "h1_2b") & (frame["coeff"] == 1.0), "valid"] = False  # drops dilemma h1_2
        profile, metrics = target_metrics(frame, items, "honesty", permutations=50)
        part = target_part(with_dilemmas(frame, items), items, "honesty")
        assert metrics["n_dilemmas"] == 15 and metrics["kept_frac"] == pytest.approx(30 / 32)
        assert metrics["dilemma_p"] == pytest.approx(stats.ttest_1samp(by_hand_dilemma_means(part), 0.0).pvalue)
        assert set(PRECISION) <= set(metrics) and "beats_null" in profile
        return MethodRun(name, frame, profile, metrics, seed, target_dose=part)

    runs = [
        run("InnerPiSSA", 0, 1.0),
        run("InnerPiSSA", 1, 1.0),
        run("prompting", None, 0.2),
        run("PCA", None, 0.5),
        run("mean_diff", None, 0.8),
    ]
    row = methods_table(runs).set_index("method").loc["InnerPiSSA"]
    pooled = seed_summary([runs[0].target_dose, runs[1].target_dose])
    assert row["pooled_effect"] == pytest.approx(pooled["effect"]) and row["seed_sd"] == pytest.approx(pooled["seed_sd"])
    assert row["pooled_p"] == pytest.approx(pooled["dilemma_p"]) and row["pooled_dilemmas"] == 15
    tests = paired_table(runs, ["prompting"], ["PCA", "mean_diff"])
    assert set(tests["baseline"]) == {"prompting", "mean_diff"}
    versus = tests[(tests["method"] == "InnerPiSSA") & (tests["baseline"] == "prompting")].iloc[0]
    a = pooled_slopes([runs[0].target_dose, runs[1].target_dose])
    b = pooled_slopes(runs[2].target_dose)
    assert versus["p"] == pytest.approx(stats.ttest_rel(a, b.reindex(a.index)).pvalue)
