"""Figures that compare the methods of an experiment: effect against coherence cost (`pareto_figure`, from
`analysis.measures.evaluate.methods_table` or the paper's Table 1) and the effect on every value
(`transfer_figure`, from `analysis.measures.values.transfer_table`).

Example:
    pareto_figure(methods_table(runs))
    transfer_figure(transfer_table({"InnerPiSSA": profile, "PCA": pca_profile}))
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from .style import PALETTE, style

SYMBOLS = ("circle", "diamond", "square", "triangle-up")


def pareto_figure(table: pd.DataFrame) -> go.Figure:
    """Effect on the target value per unit c vs its cost at c = ±1, one marker per method, seed spread as error bars.

    The cost is ``kl_at_1`` (mean KL on neutral text, a prompt's persona placed on the text; the paper's Table 1)
    where the table has it, else ``delta_nll`` (`methods_table`); the spread ``seed_sd`` or ``effect_sd``."""
    kl = "kl_at_1" in table and table["kl_at_1"].notna().any()
    cost, cost_sd = ("kl_at_1", None) if kl else ("delta_nll", "delta_nll_sd")
    spread = "seed_sd" if "seed_sd" in table else "effect_sd"
    fig = go.Figure()
    for index, row in enumerate(table.itertuples()):
        marker = dict(
            size=13,
            color=PALETTE[index % len(PALETTE)],
            symbol=SYMBOLS[index // len(PALETTE) % len(SYMBOLS)],
            line=dict(width=1, color="white"),
        )
        several = bool(getattr(row, "seeds", 1) > 1)
        error_y = dict(type="data", array=[getattr(row, spread, 0.0)], visible=several)
        error_x = dict(type="data", array=[getattr(row, cost_sd, 0.0) if cost_sd else 0.0], visible=several and cost_sd is not None)
        fig.add_trace(
            go.Scatter(
                x=[getattr(row, cost)],
                y=[row.effect],
                mode="markers",
                marker=marker,
                name=row.method,
                error_y=error_y,
                error_x=error_x,
                hovertemplate=f"{row.method}<br>{'KL' if kl else 'ΔNLL'} %{{x:.3g}}<br>effect %{{y:.3g}}<extra></extra>",
            )
        )
    fig.add_hline(y=0, line=dict(color="grey", dash="dot", width=1))
    fig.update_xaxes(
        title_text="KL on neutral text at c = ±1 (nats/token; a prompt's persona on the text)"
        if kl
        else "ΔNLL on neutral text at c = ±1 (nats/token; lower is more coherent)"
    )
    fig.update_yaxes(title_text="effect on the target value (nats of log-ratio per unit c)")
    return style(fig, "Effect vs coherence cost (error bars: SD over seeds)", height=480, width=780)


def transfer_figure(
    table: pd.DataFrame, title: str = "Transfer: effect on every value (nats of log-ratio per unit c)", beats: pd.DataFrame | None = None
) -> go.Figure:
    """A values × methods heatmap of a `transfer_table`, numbers in the cells; with ``beats``
    (`values.transfer_beats_null`), a ``*`` marks the cells that beat their label-permutation null."""
    values = table.drop(columns=["n_items"])
    text = np.vectorize(lambda v: "" if not np.isfinite(v) else f"{v:.3g}")(values.to_numpy(dtype=float))
    if beats is not None:
        marks = beats.reindex(index=values.index, columns=values.columns).fillna(False).to_numpy(dtype=bool)
        text = np.where(marks, np.char.add(text.astype(str), "*"), text)
        title += " · * beats its null"
    bound = float(np.nanmax(np.abs(values.to_numpy()))) if values.notna().any().any() else 1.0
    fig = go.Figure(
        go.Heatmap(
            z=values.to_numpy(),
            x=list(values.columns),
            y=[f"{v} ({n})" for v, n in zip(values.index, table["n_items"])],
            colorscale="RdBu",
            zmid=0,
            zmin=-bound,
            zmax=bound,
            text=text,
            texttemplate="%{text}",
            colorbar=dict(title="effect"),
        )
    )
    fig.update_yaxes(autorange="reversed", title_text="value (items)")
    fig.update_xaxes(title_text="method")
    return style(fig, title, height=max(380, 34 * len(values) + 140), width=max(560, 130 * len(values.columns) + 260))
