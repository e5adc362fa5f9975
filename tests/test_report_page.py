"""The sweep's summary and page lead with the answer, in numbers; p-values are adjusted for the comparisons made."""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from analysis import plots
from analysis.reports.sweep_answer import holm, with_inference
from analysis.reports.sweep_report import summary_markdown, write_report

ITEMS = [f"i{i}" for i in range(12)]


def dose(slope: float, seed: int, noise: float = 0.2) -> pd.DataFrame:
    """Items whose readout moves by ``slope`` per unit c, plus noise."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        [
            {"item": item, "coeff": c, "readout": slope * c + rng.normal(0, noise), "valid": True, "nll": 2 + 0.05 * abs(c)}
            for item in ITEMS
            for c in (-1.0, 0.0, 1.0)
        ]
    )


def sweep_result(out) -> SimpleNamespace:
    """Ten configurations: L3 resid steers clearly (p = 0.001), L5 resid weakly (p = 0.02), the rest not."""
    rows = []
    for layer in range(10):
        p = {3: 0.001, 5: 0.02}.get(layer, 0.3 + 0.05 * layer)
        slope = {3: 0.8, 5: 0.3}.get(layer, 0.01 * layer)
        rows.append(
            {
                "layer": layer,
                "kind": "resid",
                "method": "mean_diff",
                "item_slope": slope,
                "item_slope_lo": slope - 0.2,
                "item_slope_hi": slope + 0.2,
                "p_value": p,
                "null_item_slope": 0.0,
                "null_p_value": 0.9,
                "effect": slope,
                "delta_nll": 0.05,
                "normalized_gain": 100 * slope,
                "score": slope,
                "n_items": 12,
                "predicted_effect": slope,
                "auroc": 0.8,
                "auroc_null": 0.7,
                "error": None,
            }
        )
    doses = {f"L{layer:02d}_resid_mean_diff": dose({3: 0.8, 5: 0.3}.get(layer, 0.0), layer) for layer in range(10)}
    doses |= {f"L{layer:02d}_resid_null": dose(0.0, 100 + layer) for layer in range(10)}
    separation = pd.DataFrame({"layer": range(10), "kind": "resid", "auroc": np.linspace(0.6, 0.9, 10), "auroc_null": 0.7})
    return SimpleNamespace(results=pd.DataFrame(rows), separation=separation, doses=doses, cosines=None, out=out)


def test_holm_multiplies_each_p_by_the_comparisons_left_and_keeps_the_order():
    adjusted = holm([0.01, 0.04, 0.03, 0.5, np.nan])
    # sorted 0.01, 0.03, 0.04, 0.5 (m = 4): 4·0.01, 3·0.03, max(2·0.04, 0.09), max(1·0.5, 0.09)
    assert np.allclose(adjusted[:4], [0.04, 0.09, 0.09, 0.5]) and np.isnan(adjusted[4])
    assert holm([0.9, 0.8])[0] == 1.0  # capped at 1


def test_a_configuration_beats_its_null_when_its_items_move_more_than_the_random_directions():
    rows = pd.DataFrame([{"layer": 3, "kind": "resid", "method": "a"}, {"layer": 4, "kind": "resid", "method": "a"}])
    doses = {
        "L03_resid_a": dose(1.0, 0),
        "L03_resid_null": dose(0.0, 1),
        "L04_resid_a": dose(0.0, 2),
        "L04_resid_null": dose(0.0, 3),
    }
    out = with_inference(rows, doses).set_index("layer")
    assert out.loc[3, "vs_null"] == pytest.approx(1.0, abs=0.15) and out.loc[3, "vs_null_p"] < 1e-6
    assert abs(out.loc[4, "vs_null"]) < 0.2 and out.loc[4, "vs_null_p"] > 0.05
    assert out.loc[3, "vs_null_p_holm"] == pytest.approx(min(1.0, 2 * out.loc[3, "vs_null_p"]))


def test_the_summary_opens_with_the_best_configuration_and_counts_after_holm(tmp_path):
    summary = summary_markdown(sweep_result(tmp_path))
    first = summary.splitlines()[2]
    assert first.startswith("- Best of 10: L3 resid mean_diff: 0.8 nats per unit c [95 % CI 0.6, 1]")
    assert "p = 0.001 (Holm 0.01)" in first and "cost ΔNLL 0.05" in first
    # 0.02 survives alone (2 of 10 raw) but not 9 · 0.02 = 0.18 after Holm; L3 and L5 beat their random direction
    assert "2 of 10 configurations move the readout towards the concept at p < 0.05; 1 after Holm's correction" in summary
    assert "2 beat their random direction" in summary
    assert "| configuration | slope | 95 % CI | p | p (Holm) | null slope | vs null p | ΔNLL | predicted |" in summary
    assert "predicted_effect ρ = 1.00" in summary
    assert "predicted_effect ranks them better than chance (interval above 0)." in summary  # it ranks them like the slopes
    assert (
        "| null_item_slope | null_p_value | p_holm |" in summary
    )  # the full table keeps it too  # the predictor ranks them exactly like the slopes


def test_the_report_page_leads_with_the_answer_and_loads_plotly_from_one_file(tmp_path):
    page = write_report(sweep_result(tmp_path), formats=("html",))
    text = page.read_text()
    assert len(text.encode()) < 150_000  # plotly.js (4.8 MB) is not inside
    scripts = re.findall(r"<script[^>]*src=\"([^\"]+)\"", text)
    assert scripts == ["figures/plotly.min.js"] and (tmp_path / "figures" / "plotly.min.js").stat().st_size > 1_000_000
    order = [text.index(marker) for marker in ("<h2>Answer</h2>", "Best of 10: L3 resid mean_diff", "<table>", "Figure 1.", "<figcaption>")]
    assert order == sorted(order)
    assert "<details><summary>All " in text and 'href="results.csv"' in text
    # every figure has a caption quoting this run's numbers
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", text)
    assert len(captions) == text.count('class="plotly-graph-div"') >= 4
    assert any("Largest: L3 resid mean_diff, 0.8" in c for c in captions)


def test_long_titles_wrap_to_the_figures_width():
    from analysis.reports import style as house

    fig = house.style(plots.go.Figure(), "A title much longer than a narrow figure can hold on one single line", width=400)
    lines = fig.layout.title.text.split("<br>")
    assert len(lines) >= 2 and all(len(line) * house.CHAR_WIDTH * house.TITLE_SIZE <= 400 - 60 for line in lines)
    assert fig.layout.margin.t == 30 + house.LINE_HEIGHT * len(lines)


def test_the_paper_page_opens_with_the_methods_effects_then_tables_1_2_and_transfer(tmp_path):
    from analysis.reports.paper_page import write_paper_page

    (tmp_path / "config.json").write_text('{"target": "honesty", "seeds": [0, 1], "model": "/models/smollm2", "cost_budget": 0.05}')
    budget = {"coeff_at_budget": 2.0, "budget_reached": True, "kl_at_budget": 0.05, "paired_at": "budget"}
    pd.DataFrame(
        [
            budget
            | {"method": "InnerPiSSA", "seeds": 2, "effect_at_budget": 0.4, "effect_at_budget_lo": 0.2, "effect_at_budget_hi": 0.6}
            | {"p_at_budget": 0.001, "vs_prompting": 0.3, "vs_prompting_p": 0.01, "effect": 0.2, "side_effects": 0.01},
            budget
            | {"method": "PCA (L5)", "seeds": 1, "effect_at_budget": 0.1, "effect_at_budget_lo": -0.1, "effect_at_budget_hi": 0.3}
            | {"p_at_budget": 0.3, "effect": 0.1},
            budget
            | {"method": "random (L5)", "seeds": 1, "effect_at_budget": 0.3, "effect_at_budget_lo": -0.1, "effect_at_budget_hi": 0.7}
            | {"p_at_budget": 0.2, "effect": 0.3},
        ]
    ).to_csv(tmp_path / "table1.csv", index=False)
    pd.DataFrame([{"method": "no SVD", "seeds": 2, "effect": 0.2, "drop_vs_full": 0.5, "p_value": 0.04}]).to_csv(
        tmp_path / "table2.csv", index=False
    )
    (tmp_path / "table2.md").write_text(
        "# Ablations\n\n| method |\n|---|\n| no SVD |\n\ndrop_vs_full = 1 − effect / effect of the full InnerPiSSA.\n"
    )
    pd.DataFrame({"value": ["honesty", "care"], "n_items": [10, 4], "InnerPiSSA": [0.4, -0.3], "PCA (L5)": [0.1, 0.0]}).to_csv(
        tmp_path / "transfer.csv", index=False
    )
    (tmp_path / "table1.md").write_text("# Main\n\n| method |\n|---|\n| PCA (L5) |\n\n1 run(s) failed (main / LoRA (seed 0): OOM).\n")
    figure = plots.style(plots.go.Figure(plots.go.Bar(x=["a"], y=[1])), "Effect vs coherence cost", width=600)
    text = write_paper_page(tmp_path, tmp_path, {tmp_path / "pareto": figure}).read_text()
    answer = re.search(r"<h2>Answer</h2><ul>(.*?)</ul>", text).group(1)
    assert "InnerPiSSA: at c* = 2, KL 0.05, honesty moves 0.4 nats [0.2, 0.6], p 0.001; vs prompting 0.3 (p 0.01)" in answer
    assert "1 of 3 methods move honesty towards the positive side at the matched cost at dilemma-level p &lt; 0.05 (InnerPiSSA)" in answer
    assert "PCA (L5): at c* = 2, KL 0.05, honesty moves 0.1 nats [-0.1, 0.3], p 0.3" in answer and "care, -0.3" in answer
    assert "Null control, random (L5): at c* = 2, KL 0.05, honesty moves 0.3 nats [-0.1, 0.7], p 0.2" in answer
    assert "drop_vs_full = 1 − effect / effect of the full InnerPiSSA." in answer
    assert "Missing: 1 run(s) failed (main / LoRA (seed 0): OOM)." in answer
    assert "reaches 0.05 nats/token" in text  # the budget is in Table 1's caption
    order = [text.index(m) for m in ("<h2>Answer</h2>", "Table 1.", "Table 2.", "Transfer:", "Pareto. Effect vs coherence cost")]
    assert order == sorted(order) and 'href="table1.csv"' in text and "smollm2" in text
