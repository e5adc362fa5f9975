"""Plotly figures for notebooks and papers, in one consistent style.

Every function returns a ``plotly.graph_objects.Figure`` in the house style (`analysis.reports.style`);
`save_figure` (from `analysis.reports.figure_files`) writes HTML and, when kaleido can find a Chromium,
PNG/SVG/PDF.

Example:
    from analysis import plots
    fig = plots.steerability_heatmap(results)
    plots.save_figure(fig, "figures/steerability")   # .html (+ .png/.svg/.pdf)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..measures.metrics import paired_changes
from .figure_files import save_figure, save_figures, static_export_available  # noqa: F401  (re-exported)
from .style import PALETTE, style

KIND_ORDER = ["resid", "attn", "mlp", "q", "k", "v", "o", "gate", "up", "down"]
METRIC_TITLES = {
    "item_slope": "readout change per unit c (mean item slope)",
    "predicted_effect": "first-order effect dR/dc at c = 0",
    "score": "composite score |slope|·R²·valid²",
    "normalized_gain": "normalized gain (%)",
    "slope": "slope of the mean readout (nats per unit c)",
    "auroc": "AUROC (cross-validated)",
    "probe_acc": "probe accuracy (cross-validated)",
    "cohens_d": "Cohen's d",
    "pc1_share": "PC1 share of pair differences",
}
# colour-bar titles stand beside the bar (side="right"), so they are short
COLORBAR_TITLES = {"item_slope": "nats per unit c", "normalized_gain": "gain (%)", "score": "score", "predicted_effect": "dR/dc"}


def ordered_kinds(kinds: Sequence[str]) -> list[str]:
    return sorted(set(kinds), key=lambda k: (KIND_ORDER.index(k) if k in KIND_ORDER else len(KIND_ORDER), k))


NOT_SIGNIFICANT = "#d9d9d9"  # the grey of a cell whose effect is not distinguishable from zero: no colour of either scale


def steerability_heatmap(results: pd.DataFrame, metric: str = "item_slope", alpha: float = 0.05) -> go.Figure:
    """Layer × sublayer-kind heatmap of a dose-response metric, one panel per method.

    Colour is for effects distinguishable from zero: a cell whose p (``p_holm``, adjusted for the
    configurations compared, where the table has it; else the item-level ``p_value``) is not below
    ``alpha`` is drawn plain grey and marked "n.s." (its value on hover), so a large but noisy effect
    never takes the scale's strongest colour. The colour scale spans the significant cells.
    """
    methods = list(dict.fromkeys(results["method"]))
    fig = make_subplots(rows=1, cols=len(methods), subplot_titles=methods, shared_yaxes=True, horizontal_spacing=0.04)
    p_column = "p_holm" if "p_holm" in results else "p_value" if "p_value" in results else None
    values = results[metric].astype(float)
    p_values = pd.to_numeric(results[p_column], errors="coerce") if p_column else None  # a missing p is not significant
    significant = values.where(p_values < alpha) if p_values is not None else values
    scaled = significant if significant.notna().any() else values
    bound = float(np.nanmax(np.abs(scaled))) if scaled.notna().any() else 1.0
    diverging = bool((values < 0).any())
    for column, method in enumerate(methods, 1):
        part = results[results["method"] == method]
        grid = part.pivot_table(index="kind", columns="layer", values=metric, aggfunc="mean")
        grid = grid.reindex(ordered_kinds(grid.index))
        x, y = [str(c) for c in grid.columns], list(grid.index)
        faded = np.zeros(grid.shape, dtype=bool)
        if p_column:
            p = part.assign(**{p_column: pd.to_numeric(part[p_column], errors="coerce")})
            p = p.pivot_table(index="kind", columns="layer", values=p_column, aggfunc="mean").reindex_like(grid).astype(float)
            faded = grid.notna().to_numpy(dtype=bool) & ~(p.to_numpy(dtype=float) < alpha)  # dtypes fixed: a grid may be empty
        fig.add_trace(
            go.Heatmap(
                z=np.where(faded, np.nan, grid.values),
                x=x,
                y=y,
                colorscale="RdBu" if diverging else "Viridis",
                zmid=0 if diverging else None,
                zmin=-bound if diverging else 0,
                zmax=bound,
                showscale=column == len(methods),
                colorbar=dict(title=dict(text=COLORBAR_TITLES.get(metric, metric), side="right")),
                hovertemplate="layer %{x}, %{y}: %{z:.3g}<extra>" + method + "</extra>",
            ),
            row=1,
            col=column,
        )
        if faded.any():
            fig.add_trace(
                go.Heatmap(
                    z=np.where(faded, 0.0, np.nan),
                    x=x,
                    y=y,
                    customdata=grid.values,
                    text=np.where(faded, "n.s.", ""),
                    texttemplate="%{text}",
                    textfont=dict(size=11, color="#404040"),
                    colorscale=[[0, NOT_SIGNIFICANT], [1, NOT_SIGNIFICANT]],
                    showscale=False,
                    hovertemplate="layer %{x}, %{y}: %{customdata:.3g} (n.s.)<extra>" + method + "</extra>",
                ),
                row=1,
                col=column,
            )
        fig.update_xaxes(title_text="layer", type="category", row=1, col=column)
    fig.update_yaxes(title_text="sublayer", row=1, col=1)
    name = METRIC_TITLES.get(metric, metric)
    which = {"p_holm": "Holm-adjusted p", "p_value": "item-level p"}.get(p_column or "", "")
    note = f"; grey, n.s.: {which}\u00a0≥\u00a0{alpha:g}" if p_column else ""  # kept on one line when wrapped
    return style(fig, f"{name[0].upper()}{name[1:]}{note}", height=420, width=max(520, 380 * len(methods)))


def dose_curves(curves: Mapping[str, pd.DataFrame], confidence: float = 0.95, readout_label: str = "readout") -> go.Figure:
    """Paired change of the readout from c = 0 against c (mean and t-interval over items of each item's
    difference), one line per configuration, with each one's ΔNLL on neutral text on a secondary axis."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    for index, (name, df) in enumerate(curves.items()):
        colour = PALETTE[index % len(PALETTE)]
        change = paired_changes(df, confidence)
        x = list(change["coeff"])
        fig.add_trace(
            go.Scatter(
                x=x + x[::-1],
                y=list(change["hi"]) + list(change["lo"][::-1]),
                fill="toself",
                mode="lines",
                fillcolor=colour,
                opacity=0.18,
                line=dict(width=0),
                hoverinfo="skip",
                showlegend=False,
            ),
            secondary_y=False,
        )
        fig.add_trace(
            go.Scatter(x=x, y=list(change["mean"]), name=name, mode="lines+markers", line=dict(color=colour, width=2.5), legendgroup=name),
            secondary_y=False,
        )
        if "delta_nll" in change:
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=list(change["delta_nll"]),
                    name=f"{name}: ΔNLL",
                    mode="lines",
                    line=dict(color=colour, width=1.5, dash="dot"),
                    legendgroup=name,
                    showlegend=False,
                    hovertemplate="ΔNLL %{y:.3g}<extra>" + name + "</extra>",
                ),
                secondary_y=True,
            )
    fig.add_hline(y=0, line=dict(color="grey", dash="dot", width=1))
    fig.update_xaxes(title_text="steering coefficient c (units of the typical pair difference)")
    fig.update_yaxes(title_text=f"change of the {readout_label} from c = 0 (nats)", secondary_y=False)
    # its own round ticks from 0 (an overlaying axis syncs to the left axis's ticks by default)
    fig.update_yaxes(
        title_text="ΔNLL on neutral text (dotted; nats/token)", secondary_y=True, showgrid=False, tickmode="auto", rangemode="tozero"
    )
    fig = style(fig, f"Dose-response: paired change from c = 0, {confidence:.0%} CI over items", height=500, width=820)
    # the legend goes under the plot, clear of the right axis's title
    return fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.18, xanchor="center", x=0.5), margin=dict(b=110))


def separation_by_layer(table: pd.DataFrame, metric: str = "auroc") -> go.Figure:
    """A separation metric per layer, one line per sublayer kind; dotted, the same for the
    random-init null model (``{metric}_null``) when the table has it."""
    fig = go.Figure()
    null = f"{metric}_null"
    for index, kind in enumerate(ordered_kinds(table["kind"])):
        part = table[table["kind"] == kind].sort_values("layer")
        colour = PALETTE[index % len(PALETTE)]
        fig.add_trace(
            go.Scatter(x=part["layer"], y=part[metric], name=kind, mode="lines+markers", legendgroup=kind, line=dict(color=colour, width=2))
        )
        if null in part:
            fig.add_trace(
                go.Scatter(
                    x=part["layer"],
                    y=part[null],
                    name=f"{kind} (random-init null)",
                    mode="lines",
                    legendgroup=kind,
                    line=dict(color=colour, width=1.5, dash="dot"),
                )
            )
    if metric in ("auroc", "probe_acc"):
        fig.add_hline(y=0.5, line=dict(color="grey", dash="dot", width=1), annotation_text="chance")
    fig.update_xaxes(title_text="layer")
    fig.update_yaxes(title_text=METRIC_TITLES.get(metric, metric))
    title = "Positive vs negative separation per layer" + (" (dotted: random-init model)" if null in table else "")
    return style(fig, title, height=420, width=820)


def cosine_heatmap(cosines: pd.DataFrame, layer: int | None = None, kind: str | None = None) -> go.Figure:
    """Cosine similarity between direction methods (for one (layer, kind), or averaged over all)."""
    table = cosines
    if layer is not None:
        table = table[table["layer"] == layer]
    if kind is not None:
        table = table[table["kind"] == kind]
    grid = table.pivot_table(index="method_a", columns="method_b", values="cosine", aggfunc="mean")
    where = f" at layer {layer} {kind}" if layer is not None and kind is not None else " (mean over layers and kinds)"
    fig = go.Figure(
        go.Heatmap(
            z=grid.values,
            x=list(grid.columns),
            y=list(grid.index),
            zmin=-1,
            zmax=1,
            zmid=0,
            colorscale="RdBu",
            colorbar=dict(title="cosine"),
            text=np.round(grid.values, 2),
            texttemplate="%{text}",
        )
    )
    fig.update_yaxes(autorange="reversed")
    return style(fig, "Direction agreement between methods" + where, height=480, width=560)


def training_curves(history: pd.DataFrame) -> go.Figure:
    """ReprPO training: the loss and its parts per step, and what moved along the frozen direction at c = ±1
    relative to c = 0, in units of the typical pair gap: the gap (solid) and, where the history has it, each pair's
    midpoint (dotted; what the default shift objective pushes)."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss parts", "moved along the direction vs c = 0"))
    for index, column in enumerate(["loss", "projection", "coherence", "monotonic"]):
        fig.add_trace(go.Scatter(x=history["step"], y=history[column], name=column, line=dict(color=PALETTE[index])), row=1, col=1)
    for prefix, name, dashes in (("gain", "gap", ("solid", "dash")), ("shift", "midpoint", ("dot", "dashdot"))):
        for side, (suffix, c) in enumerate((("pos", "+1"), ("neg", "−1"))):
            column = f"{prefix}_{suffix}"
            if column in history:  # histories saved before the midpoint was recorded have the gap only
                line = dict(color=PALETTE[4 + side], dash=dashes[side])
                fig.add_trace(go.Scatter(x=history["step"], y=history[column], name=f"{name}, c = {c}", line=line), row=1, col=2)
    fig.update_xaxes(title_text="training step")
    fig.update_yaxes(title_text="loss (dimensionless)", row=1, col=1)
    fig.update_yaxes(title_text="Δ / typical gap at c = 0", row=1, col=2)
    return style(fig, "ReprPO training", height=420, width=980)


def projection_histograms(acts, directions, layer: int, kind: str) -> go.Figure:
    """Histograms of positive and negative states projected on each direction (one panel per method)."""
    fig = make_subplots(rows=1, cols=len(directions), subplot_titles=[d.method for d in directions], horizontal_spacing=0.05)
    hs = acts[layer, kind][:, :, -1].float()
    for column, direction in enumerate(directions, 1):
        for side, (name, colour) in enumerate((("positive", PALETTE[0]), ("negative", PALETTE[3]))):
            fig.add_trace(
                go.Histogram(
                    x=(hs[:, side] @ direction.vector.float()).numpy(),
                    name=name,
                    marker_color=colour,
                    opacity=0.6,
                    showlegend=column == 1,
                    nbinsx=20,
                ),
                row=1,
                col=column,
            )
        fig.update_xaxes(title_text="projection", row=1, col=column)
    fig.update_layout(barmode="overlay")
    fig.update_yaxes(title_text="count", row=1, col=1)
    return style(
        fig, f"Positive vs negative states on each direction (layer {layer} {kind})", height=380, width=max(520, 300 * len(directions))
    )


def adapter_changes(adapter) -> go.Figure:
    """Per adapted target: the rotation angle of V at c = 1 (largest principal angle, degrees)
    and the mean relative change of the singular values, S(1)/S − 1."""
    import torch

    names, angles, s_changes = [], [], []
    for target in adapter.targets:
        layer = adapter.layer(target)
        names.append(target.name)
        with torch.no_grad():
            # the adapter's own rotation (its angle bound, as saved), not a re-derivation here
            angles.append(layer.largest_angles(adapter.config.sign).get("v", 0.0) * 180 / np.pi)
            s_changes.append(float((layer.singular_values(torch.tensor(adapter.config.sign)) / layer.S - 1).mean()) * 100)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("V rotation at c = +1", "singular values at c = +1"))
    fig.add_trace(go.Bar(x=names, y=angles, marker_color=PALETTE[0], showlegend=False), row=1, col=1)
    fig.add_trace(go.Bar(x=names, y=s_changes, marker_color=PALETTE[1], showlegend=False), row=1, col=2)
    fig.update_xaxes(title_text="target (layer.kind)")
    fig.update_yaxes(title_text="largest principal angle (degrees)", row=1, col=1)
    fig.update_yaxes(title_text="mean S change (%)", row=1, col=2)
    return style(fig, "What the adapter learned", height=420, width=980)


def predictor_scatter(results: pd.DataFrame, validation: pd.DataFrame, measured: str = "item_slope") -> go.Figure:
    """One panel per predictor (rows of `analysis.measures.predict.validate_predictors`): the predictor against the
    measured effect, one point per configuration (hover: layer, kind, method), Spearman ρ and its CI in the title."""
    shown = validation.dropna(subset=["spearman"])
    titles = [f"{r.predictor}<br>ρ = {r.spearman:.2f} [{r.ci_lo:.2f}, {r.ci_hi:.2f}], n = {r.n_configs}" for r in shown.itertuples()]
    fig = make_subplots(rows=1, cols=max(1, len(shown)), subplot_titles=titles, horizontal_spacing=0.06)
    for column, predictor in enumerate(shown["predictor"], 1):
        rows = results.dropna(subset=[predictor, measured])
        fig.add_trace(
            go.Scatter(
                x=rows[predictor],
                y=rows[measured],
                mode="markers",
                marker={"color": PALETTE[column % len(PALETTE)], "size": 7, "opacity": 0.75},
                text=[f"L{r.layer} {r.kind} {r.method}" for r in rows.itertuples()],
                hovertemplate="%{text}<br>predicted %{x:.3g}<br>measured %{y:.3g}<extra></extra>",
                showlegend=False,
            ),
            row=1,
            col=column,
        )
        fig.update_xaxes(title_text=predictor, row=1, col=column)
    fig.update_yaxes(title_text=f"measured {measured} (test items)", row=1, col=1)
    fig = style(fig, "Do the predictors rank configurations like the dose-response does?", height=400, width=max(520, 340 * len(shown)))
    return fig.update_layout(margin_t=fig.layout.margin.t + 20)  # two-line panel titles
