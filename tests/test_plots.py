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
                rows.append({"layer": layer, "kind": kind, "method": method, "score": layer * 0.1 + (kind == "down"),
                             "normalized_gain": layer - 1.5})
    return pd.DataFrame(rows)


def fake_dose() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame([{"item": f"i{i}", "coeff": c, "honesty": c + rng.normal(0, 0.3), "valid": True}
                         for i in range(12) for c in (-1.0, 0.0, 1.0)])


def test_figures_have_titled_axes_and_one_panel_per_method():
    fig = plots.steerability_heatmap(fake_results())
    assert len(fig.data) == 2 and fig.layout.xaxis.title.text == "layer" and fig.layout.yaxis.title.text == "sublayer"
    assert list(fig.data[0].y) == ["resid", "down"]
    diverging = plots.steerability_heatmap(fake_results(), "normalized_gain")
    assert diverging.data[0].zmid == 0
    curves = plots.dose_curves({"a": fake_dose(), "b": fake_dose().assign(honesty=lambda d: -d["honesty"])})
    assert "coefficient" in curves.layout.xaxis.title.text and "nats" in curves.layout.yaxis.title.text
    mean_line = curves.data[1]
    assert list(mean_line.x) == [-1.0, 0.0, 1.0] and mean_line.y[0] < mean_line.y[2]


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
