"""The monitor's figure: a concept's projection token by token (`analysis.measures.monitor` gives the table).

Example:
    table = analysis.monitor(model, [d12, d20], ["Should I tell my boss?"], generate=24, reference=acts)
    monitor_figure(table).show()                 # one line per direction; outliers drawn at the axis edge
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from .style import PALETTE, style


def robust_range(values: pd.Series, fence: float = 3.0, pad: float = 0.08) -> tuple[float, float] | None:
    """The y range that keeps outlier tokens from flattening the rest: the values inside Tukey's far-out
    fences (quartiles ∓ ``fence`` × IQR; about ±4.7 SD for normal data, so only true outliers fall
    outside), padded by ``pad`` of their span; None when no value lies outside the fences."""
    finite = values[np.isfinite(values)]
    if finite.empty:
        return None
    q1, q3 = (float(q) for q in finite.quantile([0.25, 0.75]))
    inside = finite[(finite >= q1 - fence * (q3 - q1)) & (finite <= q3 + fence * (q3 - q1))]
    if len(inside) == len(finite) or inside.empty:
        return None
    lo, hi = float(inside.min()), float(inside.max())
    margin = pad * (hi - lo) if hi > lo else max(abs(hi), 1.0) * pad
    return lo - margin, hi + margin


def monitor_figure(table: pd.DataFrame, prompt: int = 0, value: str = "z") -> go.Figure:
    """Projection (``value``: "z" or "projection") over the tokens of one prompt, one line per direction,
    the tokens' strings on the x axis and a dotted line where generation starts.

    A few outlier tokens (a first token's state is often hundreds of standard deviations out) would
    flatten every other token, so the y axis is cut at Tukey's far-out fences (`robust_range`); tokens
    beyond them are drawn on its edge as triangles, keep their value on hover, and the title says how many."""
    if value not in ("z", "projection"):
        raise ValueError(f"value={value!r}: choose 'z' or 'projection'.")
    rows = table[table["prompt"] == prompt]
    if rows.empty:
        raise ValueError(f"No rows for prompt {prompt}; the table has prompts {sorted(table['prompt'].unique())}.")
    if value == "z" and rows["z"].isna().all():
        value = "projection"  # monitor() was given no reference
    bounds = robust_range(rows[value].astype(float))
    fig = go.Figure()
    for colour, (name, group) in zip(PALETTE * 8, rows.groupby("direction", sort=False)):
        y = group[value].astype(float)
        shown, symbols = y, "circle"
        if bounds is not None:
            shown = y.clip(*bounds)
            symbols = np.where(y > bounds[1], "triangle-up", np.where(y < bounds[0], "triangle-down", "circle")).tolist()
        fig.add_trace(
            go.Scatter(
                x=group["position"],
                y=shown,
                mode="lines+markers",
                name=name,
                line={"color": colour},
                marker={"symbol": symbols},
                text=group["token"],
                customdata=y,
                hovertemplate="%{text}<br>" + value + " %{customdata:.2f}<extra>" + name + "</extra>",
            )
        )
    generated = rows[rows["phase"] == "generated"]
    if not generated.empty:
        fig.add_vline(x=generated["position"].min() - 0.5, line_dash="dot", line_color="grey")
    tokens = rows.drop_duplicates("position").sort_values("position")
    fig.update_xaxes(
        title_text="token",
        tickmode="array",
        tickvals=tokens["position"].tolist(),
        ticktext=[repr(t)[1:-1][:12] for t in tokens["token"]],
        tickangle=-60,
        tickfont={"size": 9},
    )
    fig.update_yaxes(title_text="z-score vs the pairs" if value == "z" else "projection ⟨h, v⟩")
    title = f"Concept along each direction, token by token (prompt {prompt})"
    if bounds is not None:
        y = rows[value].astype(float)
        beyond = int(((y < bounds[0]) | (y > bounds[1])).sum())
        fig.update_yaxes(range=list(bounds))
        title += f"; {beyond} outlier reading(s) (max |{value}| {y.abs().max():.3g}) drawn as triangles at the axis edge"
    return style(fig, title, height=420, width=max(760, min(1400, 14 * len(tokens) + 200)))
