"""Figures: plotly objects with titled axes, exported to HTML and (with Chromium) PNG/SVG/PDF."""

from __future__ import annotations

import struct

import numpy as np
import pandas as pd
import pytest

from analysis import plots


def fake_results() -> pd.DataFrame:
    rows = []
    for method in ("mean_diff", "pca_diff"):
        for layer in range(4):
            for kind in ("resid", "down"):
                rows.append(
                    {
                        "layer": layer,
                        "kind": kind,
                        "method": method,
                        "score": layer * 0.1 + (kind == "down"),
                        "item_slope": layer * 0.1 + (kind == "down"),
                        "p_value": 0.2 if layer == 0 else 1e-4,
                        "normalized_gain": layer - 1.5,
                    }
                )
    return pd.DataFrame(rows)


def fake_dose() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        [
            {"item": f"i{i}", "coeff": c, "readout": c + rng.normal(0, 0.3), "valid": True, "nll": 2 + 0.1 * abs(c)}
            for i in range(12)
            for c in (-1.0, 0.0, 1.0)
        ]
    )


def test_figures_have_titled_axes_and_one_panel_per_method():
    fig = plots.steerability_heatmap(fake_results())
    # per method: the coloured cells, then the grey n.s. ones
    assert len(fig.data) == 4 and fig.layout.xaxis.title.text == "layer" and fig.layout.yaxis.title.text == "sublayer"
    assert list(fig.data[0].y) == ["resid", "down"]
    assert [list(row) for row in fig.data[1].text] == [["n.s.", "", "", ""]] * 2  # layer 0: p = 0.2, the rest p < 0.05
    diverging = plots.steerability_heatmap(fake_results(), "normalized_gain")
    assert diverging.data[0].zmid == 0


def scale_ends(trace) -> set[str]:
    return {trace.colorscale[0][1].lower(), trace.colorscale[-1][1].lower()}


@pytest.mark.parametrize("metric", ["item_slope", "normalized_gain"])
@pytest.mark.parametrize("p_column", ["p_value", "p_holm"])
def test_a_non_significant_cell_never_takes_the_strongest_colour(metric, p_column):
    results = fake_results()
    loud = (results["layer"] == 0) & (results["kind"] == "down")
    results.loc[loud, metric] = 50.0  # the largest effect of all, but p = 0.2
    if p_column == "p_holm":  # the adjusted p decides where the table has it
        results["p_holm"] = np.where(results["layer"] == 1, 0.3, results["p_value"])
    fig = plots.steerability_heatmap(results, metric)
    coloured = [t for t in fig.data if t.showscale is not None and t.colorscale[0][1] != plots.NOT_SIGNIFICANT]
    grey = [t for t in fig.data if t.colorscale[0][1] == plots.NOT_SIGNIFICANT]
    assert len(coloured) == len(grey) == 2
    adjusted = results[p_column] >= 0.05
    for trace, method in zip(coloured, ("mean_diff", "pca_diff")):
        z = np.array(trace.z, dtype=float)
        part = results[results["method"] == method].pivot_table(index="kind", columns="layer", values=p_column).loc[list(trace.y)]
        # a cell whose p is not below 0.05 has no value on the colour scale: it is drawn grey, not coloured
        assert np.isnan(z[(part >= 0.05).to_numpy()]).all() and np.isfinite(z[(part < 0.05).to_numpy()]).all()
        # the scale spans the significant cells only: the n.s. outlier does not stretch it
        assert trace.zmax == pytest.approx(results.loc[~adjusted, metric].abs().max())
    for trace in grey:
        assert set(np.array(trace.z, dtype=float)[np.isfinite(np.array(trace.z, dtype=float))]) == {0.0}
        assert plots.NOT_SIGNIFICANT.lower() not in scale_ends(coloured[0]) and scale_ends(trace) == {plots.NOT_SIGNIFICANT}
    assert ("Holm" in fig.layout.title.text) == (p_column == "p_holm")


def test_a_sweep_whose_every_configuration_has_no_effect_still_draws_its_heatmap():
    """Every item invalid (no slope, no p): the heatmap is drawn, nothing coloured, nothing raises."""
    results = pd.DataFrame(
        {"layer": [0, 2], "kind": ["resid", "resid"], "method": ["mean_diff"] * 2, "item_slope": [np.nan] * 2, "p_holm": [np.nan] * 2}
    )
    fig = plots.steerability_heatmap(results, "item_slope")
    assert all(np.isnan(np.asarray(trace.z, dtype=float)).all() for trace in fig.data if trace.z is not None)


def test_the_dose_figure_shows_each_items_change_from_zero_and_the_nll_cost():
    dose = fake_dose()
    curves = plots.dose_curves({"a": dose, "b": dose.assign(readout=lambda d: -d["readout"])})
    assert "coefficient" in curves.layout.xaxis.title.text and "from c = 0" in curves.layout.yaxis.title.text
    assert "NLL" in curves.layout.yaxis2.title.text
    mean_line, nll_line = curves.data[1], curves.data[2]
    wide = dose.pivot(index="item", columns="coeff", values="readout")
    expected = [(wide[c] - wide[0.0]).mean() for c in (-1.0, 0.0, 1.0)]
    assert list(mean_line.x) == [-1.0, 0.0, 1.0] and np.allclose(mean_line.y, expected) and mean_line.y[1] == 0
    assert nll_line.yaxis == "y2" and np.allclose(nll_line.y, [0.1, 0.0, 0.1])


def png_size(path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


@pytest.mark.slow
@pytest.mark.skipif(not plots.static_export_available(), reason="needs kaleido and a Chromium (scripts/setup.sh installs both)")
def test_save_figure_writes_html_png_svg_pdf(tmp_path):
    fig = plots.dose_curves({"pca_diff": fake_dose()})
    written = plots.save_figure(fig, tmp_path / "dose")
    assert {p.suffix for p in written} == {".html", ".png", ".svg", ".pdf"}
    assert png_size(tmp_path / "dose.png") == (2 * fig.layout.width, 2 * fig.layout.height)
    assert (tmp_path / "dose.svg").read_text().lstrip().startswith("<svg")
    assert (tmp_path / "dose.pdf").read_bytes()[:4] == b"%PDF"


def every_figure() -> dict[str, object]:
    """One of each figure the library draws, from small fake tables (titles as long as real runs make them)."""
    from analysis.reports.experiment_plots import pareto_figure, transfer_figure
    from analysis.reports.monitor_plots import monitor_figure

    results = fake_results()
    separation = pd.DataFrame(
        [{"layer": layer, "kind": k, "auroc": 0.6, "auroc_null": 0.7} for layer in range(4) for k in ("resid", "down")]
    )
    cosines = pd.DataFrame(
        [{"layer": 0, "kind": "resid", "method_a": a, "method_b": b, "cosine": 0.5} for a in ("x", "y") for b in ("x", "y")]
    )
    history = pd.DataFrame({c: np.arange(5.0) for c in ("step", "loss", "projection", "coherence", "monotonic", "gain_pos", "gain_neg")})
    methods = pd.DataFrame({"method": ["InnerPiSSA", "PCA (L5)"], "effect": [0.3, 0.1], "delta_nll": [0.02, 0.1], "seeds": [2, 1]})
    transfer = pd.DataFrame({"n_items": [10, 8], "InnerPiSSA": [0.3, -0.1], "PCA": [0.1, 0.0]}, index=["honesty", "care"])
    tokens = pd.DataFrame(
        [{"prompt": 0, "direction": "L12 resid", "position": i, "token": f"t{i}", "z": 800.0 if i == 0 else np.sin(i), "projection": 1.0,
          "phase": "prompt" if i < 20 else "generated"} for i in range(30)]
    )  # fmt: skip
    return {
        "heatmap (one method)": plots.steerability_heatmap(results[results["method"] == "mean_diff"]),
        "heatmap": plots.steerability_heatmap(results, "normalized_gain"),
        "dose": plots.dose_curves({"L3 resid mean_diff": fake_dose(), "L3 resid random (null)": fake_dose()}),
        "separation": plots.separation_by_layer(separation),
        "cosines": plots.cosine_heatmap(cosines),
        "training": plots.training_curves(history),
        "pareto": pareto_figure(methods),
        "transfer": transfer_figure(transfer),
        "monitor": monitor_figure(tokens),
    }


def test_every_figures_title_fits_its_width_and_its_top_margin():
    from analysis.reports import style as house

    for name, fig in every_figure().items():
        lines = fig.layout.title.text.split("<br>")
        width = fig.layout.width
        assert all(len(line) * house.CHAR_WIDTH * house.TITLE_SIZE <= width - 60 for line in lines), (name, lines)
        # the title hangs from the image's top edge inside a margin tall enough for all its lines
        assert fig.layout.title.yref == "container" and fig.layout.title.yanchor == "top" and fig.layout.title.pad.t >= 16, name
        assert fig.layout.margin.t >= 30 + house.LINE_HEIGHT * len(lines), (name, fig.layout.margin.t, len(lines))
