"""Library defects the notebooks exposed: aliased kinds, degenerate directions, the predictor check's
minimum, the monitor plot's outliers and token labels, and figures that show outside a live kernel."""

from __future__ import annotations

import base64
import re
import struct

import numpy as np
import pandas as pd
import pytest
import torch

import analysis
import probes
from analysis.studies.sweep import SweepSettings, screen, sweep_steerability
from steering import directions as dirs
from tests.tiny import FAMILIES, tiny_model


@pytest.mark.parametrize("family", FAMILIES)
def test_aliases_name_exactly_the_kinds_that_capture_identical_states(family):
    model = tiny_model(family)
    kinds = probes.sublayers.available_kinds(model)
    pairs = probes.honesty_pairs(n=3, tokenizer=model.tokenizer, chat=True)
    acts = probes.collect(model, pairs, layers=[0, 1], sublayers=kinds, progress=False)
    identical = {
        (a, b)
        for a in kinds
        for b in kinds
        if a != b and acts[1, a].shape == acts[1, b].shape and all(torch.equal(acts[layer, a], acts[layer, b]) for layer in (0, 1))
    }
    found = probes.sublayers.aliases(model, kinds)
    assert {frozenset(pair) for pair in found.items()} == {frozenset(pair) for pair in identical}
    assert set(found.values()) <= {"o", "down"}  # the projection, which has a weight basis, is kept
    assert probes.sublayers.aliases(model, ("resid", "attn")) == {}  # only an alias of a kind also asked for


def test_a_sweep_doses_an_aliased_place_once_and_records_the_alias(tmp_path):
    model = tiny_model("llama")
    pairs = probes.honesty_pairs(n=10, tokenizer=model.tokenizer, chat=True)
    sweep_steerability(
        model,
        pairs,
        analysis.dilemmas()[:4],
        layers=[1, 2],
        kinds=("attn", "o", "mlp", "down"),
        methods=("mean_diff",),
        coeffs=(-1, 0, 1),
        out=tmp_path,
        top_k=4,
        stride=1,
        full=True,
        progress=False,
        min_pmass=0.0,
        null_direction=False,
    )
    results = pd.read_csv(tmp_path / "results.csv")
    assert sorted(zip(results["layer"], results["kind"])) == [(1, "down"), (1, "o"), (2, "down"), (2, "o")]
    predictions = pd.read_csv(tmp_path / "predictions.csv").set_index(["layer", "kind"])
    assert predictions.loc[(1, "attn"), "alias_of"] == "o" and predictions.loc[(2, "mlp"), "alias_of"] == "down"
    assert predictions.loc[(1, "o"), "alias_of"] != predictions.loc[(1, "o"), "alias_of"]  # NaN: not an alias


def test_a_place_without_a_direction_is_skipped_and_the_others_keep_their_predictions():
    model = tiny_model("llama")
    # every pair ends with the same token, so q at layer 0 (a function of that token alone) is identical
    pairs = [(f"I am honest {i} ok", f"I lie {i} ok") for i in range(8)]
    acts = probes.collect(model, pairs, layers=[0, 1], sublayers=("resid", "q"), progress=False)
    assert torch.equal(acts[0, "q"][:, 0], acts[0, "q"][:, 1])  # the premise: no direction exists there
    with pytest.raises(dirs.DegenerateDirection, match="do not differ"):
        dirs.compute("pca_diff", acts, 0, "q")  # PCA of zero differences would be an arbitrary axis
    split = analysis.split_items(analysis.dilemmas()[:8], 0.5, 0)
    settings = SweepSettings(methods=("mean_diff", "pca_diff")).checked(model)
    table = screen(model, acts, pairs, split, settings, progress=False)
    expected = {(layer, kind) for layer, kind in acts if (layer, kind) != (0, "q")}
    for method in ("mean_diff", "pca_diff"):
        rows = table[table["method"] == method]
        assert set(zip(rows["layer"], rows["kind"])) == expected, method
        assert rows["predicted_effect"].notna().all()


def test_predictor_check_refuses_fewer_configurations_than_its_minimum():
    generator = np.random.default_rng(0)
    few = pd.DataFrame({"item_slope": [0.1, 0.5, 0.3], "predicted_effect": [0.2, 0.6, 0.4]})  # ρ = 1 by chance
    with pytest.raises(ValueError, match="at least 8 configurations"):
        analysis.measures.predict.validate_predictors(few)
    enough = pd.DataFrame({"item_slope": generator.normal(size=8), "predicted_effect": generator.normal(size=8)})
    enough["auroc"] = [0.6, np.nan, np.nan, 0.7, 0.8, 0.5, 0.9, 0.55]  # known for only 6 of them
    table = analysis.measures.predict.validate_predictors(enough, n_boot=50).set_index("predictor")
    assert np.isfinite(table.loc["predicted_effect", "spearman"])
    assert table.loc["auroc", "n_configs"] == 6 and np.isnan(table.loc["auroc", "spearman"])


def monitor_table(values: list[float]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "prompt": 0,
            "position": range(len(values)),
            "token": [f"t{i}" for i in range(len(values))],
            "phase": "prompt",
            "direction": "d",
            "layer": 1,
            "kind": "resid",
            "projection": values,
            "z": values,
        }
    )


def test_monitor_figure_is_not_flattened_by_an_outlier_token_and_labels_tokens():
    values = list(np.random.default_rng(0).normal(size=30))
    values[0] = 750.0  # the first token, hundreds of SDs out
    fig = analysis.monitor_figure(monitor_table(values))
    lo, hi = fig.layout.yaxis.range
    rest = values[1:]
    assert lo <= min(rest) and max(rest) <= hi < 50  # every ordinary token in view, the outlier not
    trace = fig.data[0]
    assert trace.y[0] == hi and trace.customdata[0] == 750.0 and trace.marker.symbol[0] == "triangle-up"
    assert list(trace.y[1:]) == pytest.approx(rest)
    assert "1 outlier" in fig.layout.title.text
    assert list(fig.layout.xaxis.ticktext) == [f"t{i}" for i in range(30)]
    plain = analysis.monitor_figure(monitor_table(list(np.linspace(-1, 1, 30))))
    assert plain.layout.yaxis.range is None and "outlier" not in plain.layout.title.text


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


@pytest.mark.slow  # starts a Chromium
def test_notebook_figures_carry_a_png_beside_the_interactive_json():
    import plotly.graph_objects as go
    import plotly.io as pio

    from analysis.reports import figure_files, notebook

    if not figure_files.static_export_available():
        pytest.skip("no Chromium here")
    before = pio.renderers.default
    try:
        assert notebook.show_figures_everywhere() == notebook.STATIC
        fig = go.Figure(go.Scatter(y=[1, 3, 2])).update_layout(width=420, height=260)
        bundle = pio.renderers._build_mime_bundle(fig.to_dict())  # what a kernel sends for `fig`
        assert bundle["application/vnd.plotly.v1+json"]["data"][0]["y"] == [1, 3, 2]
        assert png_size(base64.b64decode(bundle["image/png"])) == (420, 260)
    finally:
        pio.renderers.default = before
        notebook.chosen = None


@pytest.mark.slow  # a kernel and a Chromium
def test_without_chromium_notebook_figures_draw_offline_in_the_exported_html(tmp_path):
    import os
    import sys
    from pathlib import Path

    import nbformat
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter

    from tests.browser import no_browser_reason, open_page

    if no_browser_reason():
        pytest.skip(no_browser_reason())
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell("from analysis.reports.notebook import show_figures_everywhere\nshow_figures_everywhere()"),
        nbformat.v4.new_code_cell("import plotly.graph_objects as go\ngo.Figure(go.Scatter(y=[1, 3, 2]))"),
        nbformat.v4.new_code_cell("go.Figure(go.Bar(y=[1, 3, 2]))"),
    ]
    env = dict(os.environ, PATH=str(Path(sys.executable).parent))  # the kernel finds no Chromium
    env.pop("BROWSER_PATH", None)
    NotebookClient(notebook, timeout=600, kernel_name="python3").execute(env=env)
    shown = [output for cell in notebook.cells for output in cell.outputs]
    assert sum("No Chromium for static figures" in output.get("text", "") for output in shown) == 1  # said once
    assert not any("image/png" in output.get("data", {}) for output in shown)
    html, _ = HTMLExporter().from_notebook_node(notebook)
    assert not re.search(r'<script[^>]+src="https?://[^"]*plotly', html) and html.count("plotly-graph-div") >= 2  # no CDN
    (tmp_path / "fallback.html").write_text(html)
    seen = open_page(tmp_path / "fallback.html", timeout=30)  # no network here: plotly.js must be in the page
    assert seen.figures == 2 and seen.drawn == 2
