"""How much do direction methods agree? Cosine similarity per (layer, kind).

Example:
    dirs = [directions.compute(m, acts, 12, "resid") for m in ("mean_diff", "pca_diff", "logistic")]
    cos = compare_directions(dirs)             # long table: layer, kind, method_a, method_b, cosine
    plots.cosine_heatmap(cos, layer=12, kind="resid")
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch

from steering.directions import Direction


def compare_directions(directions: Sequence[Direction]) -> pd.DataFrame:
    """Cosine similarity between every two directions at the same (layer, kind), as a long DataFrame
    (``layer, kind, method_a, method_b, cosine``; diagonal included). Signs are the calibrated ones,
    so −1 means two methods point in opposite senses."""
    groups: dict[tuple[int, str], list[Direction]] = {}
    for direction in directions:
        groups.setdefault((direction.layer, direction.kind), []).append(direction)
    rows = []
    for (layer, kind), group in groups.items():
        vectors = torch.stack([d.vector.double() for d in group])
        cosines = vectors @ vectors.T / (vectors.norm(dim=-1)[:, None] * vectors.norm(dim=-1)[None, :])
        for i, a in enumerate(group):
            for j, b in enumerate(group):
                rows.append({"layer": layer, "kind": kind, "method_a": a.method, "method_b": b.method, "cosine": float(cosines[i, j])})
    return pd.DataFrame(rows, columns=["layer", "kind", "method_a", "method_b", "cosine"])
