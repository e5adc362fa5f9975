"""How well positive and negative states separate, per (layer, kind).

Every number is out-of-fold: folds split by pair (both texts of a pair stay in
the same fold), directions and probes are fitted on the training folds only.

Example:
    from analysis import separation
    table = separation(acts)          # one row per (layer, kind)
    table.sort_values("auroc", ascending=False).head()
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from einops import rearrange
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def cohens_d(a: np.ndarray, b: np.ndarray) -> float:
    """Standardised mean difference with the pooled standard deviation."""
    pooled = np.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)
    return float((a.mean() - b.mean()) / pooled) if pooled > 0 else float("nan")


def pc1_share(diffs: np.ndarray) -> float:
    """The share of the pair differences' variance on their first principal component (PCA's explained
    variance ratio); NaN for one pair or differences that do not vary (a layer that ignores the text)."""
    centred = diffs - diffs.mean(axis=0)
    total = float((centred.astype(np.float64) ** 2).sum())
    if len(diffs) < 2 or total <= 0:
        return float("nan")
    return float(np.linalg.svd(centred.astype(np.float64), compute_uv=False)[0] ** 2 / total)


def pair_metrics(hs: np.ndarray, folds: int = 5, seed: int = 0) -> dict[str, float]:
    """Separation metrics of ``hs [pair, side, d]`` (side 0 positive)."""
    n_pairs = hs.shape[0]
    diffs = hs[:, 0] - hs[:, 1]
    row = {"n_pairs": n_pairs, "pc1_share": pc1_share(diffs)}
    k = min(folds, n_pairs)
    if k < 2:
        return row | {"probe_acc": float("nan"), "auroc": float("nan"), "cohens_d": float("nan")}
    X = rearrange(hs, "pair side d -> (side pair) d")
    y = np.repeat([1, 0], n_pairs)
    groups = np.tile(np.arange(n_pairs), 2)
    projections = np.zeros(len(y))
    correct = 0
    for train, test in GroupKFold(n_splits=k).split(X, y, groups):
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1, random_state=seed))
        correct += (probe.fit(X[train], y[train]).predict(X[test]) == y[test]).sum()
        train_pairs = np.unique(groups[train])
        direction = diffs[train_pairs].mean(0)
        projections[test] = X[test] @ (direction / (np.linalg.norm(direction) + 1e-12))
    return row | {
        "probe_acc": correct / len(y),
        "auroc": float(roc_auc_score(y, projections)),
        "cohens_d": cohens_d(projections[y == 1], projections[y == 0]),
    }


def separation(
    acts: Any, layers: list[int] | None = None, kinds: list[str] | None = None, token: int = -1, folds: int = 5, model: Any = None
) -> pd.DataFrame:
    """A DataFrame with one row per (layer, kind): probe accuracy, AUROC and Cohen's d of the
    mean-difference projection (all cross-validated over pairs), and PC1's share of the
    variance of the pair differences.

    With ``model``, the metrics are computed on coordinates in each sublayer's output
    singular basis (``hs @ U``; ``resid`` uses that layer's ``down`` basis), column ``space``.
    """
    import probes

    rows = []
    for (layer, kind), hs in acts.items():
        if (layers is not None and layer not in layers) or (kinds is not None and kind not in kinds):
            continue
        values = hs[:, :, token].to(torch.float64)
        space = "activation"
        if model is not None:
            basis = probes.weight_svd(model, layer, "down" if kind == "resid" else kind)
            values, space = probes.project(values, basis), "uspace"
        rows.append({"layer": layer, "kind": kind, "space": space} | pair_metrics(values.numpy(), folds))
    return pd.DataFrame(rows)


def with_null(table: pd.DataFrame, null_table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with the null model's metrics as ``*_null`` columns and ``auroc_margin = auroc − auroc_null``.

    Example:
        sep = with_null(separation(acts), separation(probes.collect(null_model, pairs, layers="all")))
    """
    metrics = ["probe_acc", "auroc", "cohens_d", "pc1_share"]
    null = null_table.set_index(["layer", "kind"])[metrics].add_suffix("_null")
    merged = table.join(null, on=["layer", "kind"])
    merged["auroc_margin"] = merged["auroc"] - merged["auroc_null"]
    return merged
