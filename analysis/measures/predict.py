"""Predicting steerability without a dose sweep: the first-order effect of each direction.

For a direction applied as ``h + c·s·v`` at every position, the derivative of an
item's readout R at c = 0 is

    dR/dc = s · Σ_positions ⟨∂R/∂h_pos, v⟩

(for a U-space direction, ``h + c·s·U diag(δs) Vᵀ x``: ``s · Σ_pos ⟨Uᵀ ∂R/∂h_pos ⊙ Vᵀ x_pos, δs⟩``).
`first_order_effects` gets it for every direction at once: one forward pass with a
zero shift, requiring gradients, added at each steered module (one per module,
whatever the number of directions there), and one backward pass per batch of
items. `finite_difference_effects` estimates the same number from readouts at
±h (it also runs remotely); the tests check the two agree.

Example:
    table = first_order_effects(model, directions, split.validation)   # item, direction, effect
    table.groupby("direction")["effect"].mean().sort_values()
    analysis.predict_steerability(model, directions, split.validation, separation=sep)  # + logit lens, null margin
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

import probes
from probes import sublayers as sl
from probes.module_output import edit_hidden, module_hidden
from probes.remote import require_weights
from steering.directions import Direction
from steering.intervene import SteeringEdit, check_fits, steer

from ..readouts import score as sc
from ..readouts.items import ReadoutItem, check_items


def readouts(model: Any, logits: Tensor, batch: Any, items: Sequence[ReadoutItem]) -> Tensor:
    """The signed readout of each row from the logits at its last real position (differentiable)."""
    rows = torch.arange(len(items), device=logits.device)
    logp = F.log_softmax(logits[rows, batch.last_positions[:, 0].to(logits.device)].float(), -1)
    return sc.signed_readouts(logp, items, model.tokenizer).readout


class ShiftSite:
    """A zero shift (one per batch row) added at one module, whose gradient is Σ_pos ∂R/∂(shift)."""

    def __init__(self, model: Any, sublayer: sl.Sublayer, basis: probes.WeightSVD | None):
        self.sublayer = sublayer
        self.basis = basis
        self.shift: Tensor | None = None

    def hook(self, module: Any, args: tuple, output: Any) -> Any:
        hidden = module_hidden(output)
        if self.basis is None:
            shift = torch.zeros(hidden.shape[0], 1, hidden.shape[-1], dtype=hidden.dtype, device=hidden.device, requires_grad=True)
            self.shift = shift
            return edit_hidden(output, lambda hs: hs + shift)
        self.shift = torch.zeros(hidden.shape[0], 1, self.basis.V.shape[1], dtype=hidden.dtype, device=hidden.device, requires_grad=True)
        # the factored U-space step of steering (one formula): ((x @ V) ⊙ shift) @ U_out
        edit = SteeringEdit(self.sublayer.path, V=self.basis.V, coords=self.shift, U_out=self.sublayer.place(self.basis.U.T))
        return edit_hidden(output, lambda hs: hs + edit.delta(hs, args[0]))


def check_directions(directions: Sequence[Direction]) -> list[Direction]:
    directions = [directions] if isinstance(directions, Direction) else list(directions)
    if not directions:
        raise ValueError("There are no directions to predict for: pass a list of steering.Direction.")
    return directions


def site_key(model: Any, direction: Direction) -> tuple[str, str | None]:
    if direction.space == "uspace":  # applied in weight space, in its kind's basis
        return sl.weight_path_of(sl.resolve(model, direction.layer, direction.kind)), direction.kind
    return sl.resolve(model, direction.layer, direction.kind).path, None


def first_order_effects(
    model: Any, directions: Sequence[Direction], items: Sequence[ReadoutItem], *, batch_size: int = 8, persona: str | None = None
) -> pd.DataFrame:
    """dR/dc at c = 0 for each item and direction (one forward and backward per batch); see the module docstring.

    Returns a tidy DataFrame: ``item``, ``direction`` (its name), ``layer``, ``kind``, ``method``, ``effect``.
    """
    require_weights(model, "first_order_effects (it back-propagates through the model here; use finite_difference_effects remotely)")
    items = check_items(items)
    directions = check_directions(directions)
    for direction in directions:
        check_fits(model, direction)
    sites: dict[tuple[str, str | None], ShiftSite] = {}
    for direction in directions:
        key = site_key(model, direction)
        if key not in sites:
            basis = probes.weight_svd(model, direction.layer, key[1]) if key[1] else None
            sublayer = sl.resolve(model, direction.layer, key[1] or direction.kind)
            sites[key] = ShiftSite(model, sublayer, basis)
    texts = [sc.render_item(model.tokenizer, item, persona) for item in items]
    torch_model = sl.unwrap(model)
    rows = []
    for index, batch in sc.padded_batches(model, texts, batch_size):
        handles = [sl.get_module(model, path).register_forward_hook(site.hook) for (path, _), site in sites.items()]
        try:
            device = next(torch_model.parameters()).device
            with torch.enable_grad():
                logits = torch_model(**batch.model_inputs(device)).logits
                values = readouts(model, logits, batch, [items[i] for i in index])
                shifts = [site.shift for site in sites.values() if site.shift is not None]
                grads = torch.autograd.grad(values.sum(), shifts)
        finally:
            for handle in handles:
                handle.remove()
        by_site = {key: grad[:, 0].float().cpu() for key, grad in zip(sites, grads)}
        for position, direction in enumerate(directions):
            key = site_key(model, direction)
            grad = by_site[key]
            if direction.space == "uspace" and direction.coords is not None:
                per_item = direction.scale * (grad @ direction.coords.float())
            else:
                features = sites[key].sublayer.split(grad)
                per_item = direction.scale * (features @ direction.vector.float())
            for row, value in zip(index, per_item.tolist()):
                rows.append(
                    {
                        "item": items[row].id,
                        "direction": direction.name,
                        "direction_index": position,
                        "layer": direction.layer,
                        "kind": direction.kind,
                        "method": direction.method,
                        "effect": value,
                    }
                )
    return pd.DataFrame(rows)


def finite_difference_effects(
    model: Any,
    directions: Sequence[Direction],
    items: Sequence[ReadoutItem],
    *,
    step: float = 0.05,
    batch_size: int = 16,
    persona: str | None = None,
) -> pd.DataFrame:
    """(R(+h) − R(−h)) / 2h for each item and direction, from two steered scoring passes (works remotely)."""
    items = check_items(items)
    directions = check_directions(directions)
    if isinstance(step, bool) or not isinstance(step, (int, float)) or not math.isfinite(step) or step <= 0:
        raise ValueError(f"step={step!r}: give a small finite coefficient > 0 (the readouts are taken at ±step), e.g. 0.05.")
    rows = []
    for position, direction in enumerate(directions):
        scores = {}
        for c in (step, -step):
            with steer(model, direction, c):
                scores[c] = sc.score_items(model, items, persona=persona, min_pmass=0.0, batch_size=batch_size)["readout"].to_numpy()
        effect = (scores[step] - scores[-step]) / (2 * step)
        rows += [
            {
                "item": item.id,
                "direction": direction.name,
                "direction_index": position,
                "layer": direction.layer,
                "kind": direction.kind,
                "method": direction.method,
                "effect": float(value),
            }
            for item, value in zip(items, effect)
        ]
    return pd.DataFrame(rows)


def summarise_effects(table: pd.DataFrame) -> pd.DataFrame:
    """Per direction, in the order they were given: ``layer``, ``kind``, ``method``, the mean effect over items,
    its standard error and t statistic. Directions that share (layer, kind, method), such as several random
    nulls, each keep their own row (grouped by ``direction_index``)."""
    if "direction_index" not in table.columns:  # a table from before direction_index: one direction per place
        table = table.assign(direction_index=table.groupby(["layer", "kind", "method"], sort=False).ngroup())
    grouped = table.groupby("direction_index", sort=True)
    summary = grouped[["layer", "kind", "method"]].first()
    summary = summary.join(grouped["effect"].agg(predicted_effect="mean", predicted_sem="sem", n_items="count")).reset_index(drop=True)
    summary["predicted_t"] = summary["predicted_effect"] / summary["predicted_sem"].where(summary["predicted_sem"] > 0)
    return summary


RESIDUAL_KINDS = ("resid", "attn", "mlp", "o", "down")  # kinds whose states are residual-stream vectors (q, k, v, gate, up are not)
FINAL_NORMS = ("model.norm", "transformer.ln_f", "gpt_neox.final_layer_norm", "model.final_norm")


@torch.no_grad()
def lens_direction(model: Any, vector: Float[Tensor, " d"]) -> Tensor | None:
    """The logits a residual-stream direction writes directly (logit lens: the final norm's gain, then the
    unembedding), or None where the direction does not live in the residual stream."""
    torch_model = sl.unwrap(model)
    unembedding = torch_model.get_output_embeddings().weight  # [vocab, d_model]
    if vector.shape[-1] != unembedding.shape[1]:
        return None
    gain = next((getattr(sl.get_module(model, path), "weight", None) for path in FINAL_NORMS if sl.has_module(model, path)), None)
    v = vector.to(unembedding.device, unembedding.dtype)
    if gain is not None and gain.shape == v.shape:
        v = v * (1 + gain if getattr(torch_model.config, "model_type", "").startswith("gemma") else gain)
    return (unembedding @ v).float().cpu()


def lens_predictions(model: Any, directions: Sequence[Direction], items: Sequence[ReadoutItem], top_tokens: int = 5) -> pd.DataFrame:
    """Per direction: ``lens_margin`` (mean over items of the signed positive-minus-negative answer logit that
    ``s·v`` writes directly, logit lens) and ``lens_promotes`` (the tokens it raises most); see `predict_steerability`.
    NaN (and no tokens) for kinds off the residual stream (``q``, ``k``, ``v``, ``gate``, ``up``), whatever their width."""
    items = check_items(items)
    if isinstance(top_tokens, bool) or not isinstance(top_tokens, int) or top_tokens < 0:
        raise ValueError(f"top_tokens={top_tokens!r}: give how many promoted tokens to list, a whole number ≥ 0.")
    rows = []
    for direction in directions:
        in_stream = direction.kind in RESIDUAL_KINDS  # a q or v vector may have the model's width, but is not read out
        logits = lens_direction(model, direction.vector.float() * direction.scale) if in_stream else None
        margin, promotes = float("nan"), ""
        if logits is not None:
            # each item's signed readout of the logits the direction writes (the same logits for every item)
            margin = sum(sc.signed_readouts(logits.expand(len(items), -1), items, model.tokenizer).readout.tolist()) / len(items)
            top = logits.topk(min(top_tokens, logits.shape[0])).indices.tolist()
            promotes = " | ".join(model.tokenizer.decode([t]) for t in top)
        rows.append(
            {"layer": direction.layer, "kind": direction.kind, "method": direction.method, "lens_margin": margin, "lens_promotes": promotes}
        )
    return pd.DataFrame(rows)


def predict_steerability(
    model: Any,
    directions: Sequence[Direction],
    items: Sequence[ReadoutItem],
    *,
    separation: pd.DataFrame | None = None,
    top_tokens: int = 5,
    batch_size: int = 8,
) -> pd.DataFrame:
    """Predictors of how well each direction steers, without generation or a dose sweep.

    One row per direction: ``predicted_effect`` (mean dR/dc at c = 0 over ``items``, with
    ``predicted_sem``, ``predicted_t``), ``lens_margin`` (the readout's positive-minus-negative
    answer-token logit written directly by ``s·v``, logit lens; NaN off the residual stream, and 0
    for every direction on a balanced Yes/No set, where the signs cancel),
    ``lens_promotes`` (the tokens it raises most) and, with a ``separation`` table (from
    `analysis.separation` with a null model), ``separation_margin`` = AUROC − the random-init
    model's AUROC at the same (layer, kind).

    Example:
        table = predict_steerability(model, directions, split.validation, separation=sep)
        table.sort_values("predicted_effect", ascending=False).head()
    """
    directions = check_directions(directions)
    if separation is not None and not {"layer", "kind", "auroc", "auroc_null"} <= set(separation.columns):
        raise ValueError(
            "separation needs layer, kind, auroc and auroc_null columns (the null model's AUROC): pass "
            "with_null(separation(acts), separation(null_acts)) from analysis.separation, or leave separation out."
        )
    effects = summarise_effects(first_order_effects(model, directions, items, batch_size=batch_size))
    lens = lens_predictions(model, directions, items, top_tokens)  # one row per direction, in order, like effects
    table = pd.concat([effects, lens[["lens_margin", "lens_promotes"]]], axis=1)
    table.insert(0, "direction", [direction.name for direction in directions])
    if separation is not None:
        activation = separation[separation["space"] == "activation"] if "space" in separation.columns else separation
        margins = activation.assign(separation_margin=activation["auroc"] - activation["auroc_null"])[
            ["layer", "kind", "separation_margin"]
        ]
        table = table.merge(margins, on=["layer", "kind"], how="left")
    return table


PREDICTORS = ("predicted_effect", "lens_margin", "separation_margin", "auroc")
MIN_CONFIGS = 8  # fewer configurations give a ρ and bootstrap interval that mean nothing (3 give ρ = 1 one time in six by chance)


def validate_predictors(
    results: pd.DataFrame,
    predictors: Sequence[str] = PREDICTORS,
    measured: str = "item_slope",
    *,
    n_boot: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """How well each predictor ranks configurations by their measured effect: Spearman's ρ between the
    predictor and ``measured`` across the configurations (rows) of a sweep, with a percentile bootstrap
    95 % interval over configurations.

    A table of fewer than `MIN_CONFIGS` configurations is refused; a predictor known (with a measured
    value) for fewer of them gets NaN.

    Example:
        validate_predictors(pd.read_csv("runs/sentiment-full/results.csv"))
    """
    from scipy.stats import spearmanr

    if measured not in results.columns:
        raise ValueError(
            f"results has no {measured!r} column (the measured effect to rank against); it has {', '.join(map(str, results.columns))}."
        )
    if len(results) < MIN_CONFIGS:
        raise ValueError(
            f"validate_predictors needs at least {MIN_CONFIGS} configurations (rows) to rank; this table has "
            f"{len(results)}. A rank correlation over so few is noise (3 configurations give "
            "rho = 1 one time in six by chance): dose more configurations (sweep with a larger top_k, a "
            "smaller stride, or full=True) before judging the predictors."
        )
    rows = []
    generator = np.random.default_rng(seed)
    for predictor in predictors:
        if predictor not in results.columns:
            continue
        rows_here = results
        if predictor == "lens_margin" and "kind" in results.columns:  # tables written before it was NaN off the stream
            rows_here = results[results["kind"].isin(RESIDUAL_KINDS)]
        both = rows_here[[predictor, measured]].apply(pd.to_numeric, errors="coerce").dropna()
        x, y = both[predictor].to_numpy(), both[measured].to_numpy()
        # too few, or constant (e.g. the logit lens on a balanced Yes/No set is 0 for every direction)
        if len(both) < MIN_CONFIGS or np.ptp(x) == 0 or np.ptp(y) == 0:
            rows.append({"predictor": predictor, "n_configs": len(both), "spearman": np.nan, "ci_lo": np.nan, "ci_hi": np.nan})
            continue
        rho = float(spearmanr(x, y).statistic)
        draws = generator.integers(0, len(x), size=(n_boot, len(x)))
        with warnings.catch_warnings():  # a resample of few distinct configurations can be constant: dropped below
            warnings.simplefilter("ignore")
            boots = np.array([spearmanr(x[d], y[d]).statistic for d in draws], dtype=float)
        boots = boots[np.isfinite(boots)]
        lo, hi = np.percentile(boots, [2.5, 97.5]) if len(boots) else (np.nan, np.nan)
        rows.append({"predictor": predictor, "n_configs": len(x), "spearman": rho, "ci_lo": float(lo), "ci_hi": float(hi)})
    return pd.DataFrame(rows, columns=["predictor", "n_configs", "spearman", "ci_lo", "ci_hi"])
