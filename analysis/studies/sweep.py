"""The layer-steerability sweep: which (layer, sublayer, method) steers a concept, and how well?

Choices are made on validation items and results reported on test items
(`analysis.split_items`, recorded in ``split.json``):

1. *Separation* for every requested layer × kind (one `probes.collect` pass over
   the concept's pairs), beside the same numbers for a randomly initialised copy
   of the model (``*_null`` columns): separation that a random network matches is
   not evidence of the concept.
2. *Selection* on validation items: each direction's first-order effect on the
   readout (dR/dc at c = 0, one backward pass for all of them, see
   `analysis.measures.predict`); the ``top_k`` (layer, kind) with the largest effect are
   dosed, plus the first kind at every ``stride``-th layer (a layer profile);
   ``full=True`` doses every one. Raw AUROC is not used to choose.
3. *Dose-response* on test items for every method at the selected (layer, kind),
   and a random direction of the same norm there (the ``null_*`` columns). With
   ``cost_budget`` (off by default: it calibrates every dosed direction), each is also
   judged at a matched cost: its coefficient where the mean KL on neutral text reaches the
   budget and the effect there (`analysis.measures.matched_cost`; ``effect_at_budget`` and
   the other ``MATCHED`` columns, ``null_effect_at_budget`` for the random direction).

Each finished configuration is written to ``results.csv`` at once (with its
dose table in ``doses/`` and direction in ``directions/``; every file atomic),
so an interrupted run keeps its rows and ``resume=True`` continues it. A
configuration that fails is recorded with its error and the sweep goes on; a
resumed run retries it. The options are recorded in ``config.json`` (a resume
must match them) and the environment in ``manifest.json``; one sweep at a time
may write into a folder (see `analysis.studies.run_folder`; the folder's file names
are `analysis.studies.layout`'s).

Example:
    concept = "sentiment"
    pairs = probes.concept_pairs(concept, n=64, tokenizer=model.tokenizer, chat=True)
    result = sweep_steerability(model, pairs, analysis.eval_items(concept), layers="all",
                                kinds=("resid", "o", "down"), out="runs/sentiment")
    result.results.sort_values("item_slope", ascending=False).head()
    analysis.report.write_report(result)            # summary.md, summary.tex, report.html, figures/
"""

from __future__ import annotations

import tempfile
import time
import traceback
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

import probes
import steering
from probes.batching import check_batch_size
from probes.files import write_atomic, write_json
from probes.model_handle import model_handle
from probes.remote import has_weights
from steering import directions as dirs

from ..measures.agreement import compare_directions
from ..measures.dose import check_coeffs, dose_response, unsteered_baseline
from ..measures.matched_cost import MATCHED, effect_at, match_and_cost, with_budget_coeffs
from ..measures.metrics import METRIC_KEYS, dose_metrics
from ..measures.predict import finite_difference_effects, first_order_effects, lens_predictions, summarise_effects
from ..measures.separation import separation, with_null
from ..readouts.items import ReadoutItem, check_items
from ..readouts.split import Split, split_items
from .experiment_checks import whole_number
from .layout import (
    DIRECTIONS,
    DOSES,
    NULL_DIRECTIONS,
    NULLS,
    PREDICTIONS,
    RESULTS,
    SEPARATION,
    SPLIT,
    SweepResult,
    config_name,
    entry_file,
)
from .run_folder import ResultTable, RunFolder

RESULT_COLUMNS = [
    "layer",
    "kind",
    "method",
    *METRIC_KEYS,
    "vote_share",
    "scale",
    "predicted_effect",
    "predicted_t",
    "lens_margin",
    "auroc",
    "auroc_null",
    "null_item_slope",
    "null_p_value",
    "null_effect",
    "null_delta_nll",
    *MATCHED,
    "null_effect_at_budget",
    "seconds",
    "error",
]
NULL_COLUMNS = ["layer", "kind", *METRIC_KEYS, *MATCHED, "seconds", "error"]
SCREEN_FALLBACK = "mean_diff"


@dataclass
class SweepSettings:
    """Everything that decides a sweep's numbers (recorded in ``config.json``)."""

    layers: Any = "all"
    kinds: Sequence[str] = ("resid", "o", "down")
    methods: Sequence[str] = ("mean_diff", "pca_diff")
    modes: Sequence[str] = ("add",)  # how each direction is applied: add, ablate, clamp, conditional (steering.modes)
    coeffs: Sequence[float] = (-1.0, 0.0, 1.0)
    full: bool = False
    top_k: int = 4
    stride: int = 6
    batch_size: int = 16
    min_pmass: float = 0.1
    test_fraction: float = 0.5
    seed: int = 0
    null_model: bool = True  # separation of a random-init copy beside every row
    null_direction: bool = True  # a random direction of the same norm beside every dosed (layer, kind)
    cost_budget: float | None = None  # also judge each dosed direction at this mean KL on neutral text (nats/token)

    def checked(self, model: Any) -> SweepSettings:
        """A normalised copy, or a clear error for anything that would fail later."""
        kinds = [self.kinds] if isinstance(self.kinds, str) else list(self.kinds)
        methods = [self.methods] if isinstance(self.methods, str) else list(self.methods)
        unknown = [m for m in methods if m not in dirs.METHODS]
        if unknown or not methods:
            raise ValueError(f"Unknown method(s) {unknown or methods}; available: {', '.join(dirs.METHODS)}.")
        modes = [self.modes] if isinstance(self.modes, str) else list(self.modes)
        if not modes or any(mode not in steering.modes.APPLY_MODES for mode in modes):
            raise ValueError(f"modes={modes}: choose from {', '.join(steering.modes.APPLY_MODES)}.")
        for kind in kinds:
            probes.sublayers.resolve(model, 0, kind)
        layers = self.layers if isinstance(self.layers, str) else probes.sublayers.resolve_layers(model, self.layers)
        check_batch_size(self.batch_size)
        top_k = whole_number(self.top_k, "top_k", "how many (layer, kind) to dose", 1, 4)
        stride = whole_number(self.stride, "stride", "the layer stride of the profile", 1, 6)
        if self.cost_budget is not None and (
            isinstance(self.cost_budget, bool) or not isinstance(self.cost_budget, (int, float)) or not 0 < self.cost_budget < float("inf")
        ):
            raise ValueError(
                f"cost_budget={self.cost_budget!r}: the mean KL on neutral text (nats per token) every dosed direction is also "
                "judged at, a positive number (e.g. 0.05), or None for per unit c only."
            )
        if not isinstance(self.min_pmass, (int, float)) or not 0 <= self.min_pmass <= 1:
            raise ValueError(
                f"min_pmass={self.min_pmass!r}: the least P(positive)+P(negative) for an item to count, from 0 to 1 (e.g. 0.1)."
            )
        return replace(
            self, layers=layers, kinds=kinds, methods=methods, modes=modes, coeffs=check_coeffs(self.coeffs), top_k=top_k, stride=stride
        )


def job_names(methods: Sequence[str], modes: Sequence[str]) -> list[str]:
    """A row's ``method``: the method for ``add``, ``method+mode`` for the other modes."""
    return [method if mode == "add" else f"{method}+{mode}" for method in methods for mode in modes]


def select_configs(predictions: pd.DataFrame, kinds: Sequence[str], top_k: int, stride: int, full: bool) -> list[tuple[int, str]]:
    """(layer, kind) to dose: the largest first-order effect on validation items first, then the layer profile."""
    best = predictions.groupby(["layer", "kind"])["predicted_effect"].max().sort_values(ascending=False)
    ranked = [(int(layer), kind) for layer, kind in best.index]
    if full:
        return ranked
    layers = sorted({layer for layer, _ in ranked})
    profile = [(layer, kinds[0]) for layer in layers[:: max(1, stride)]]
    return list(dict.fromkeys(ranked[:top_k] + profile))


def sweep_steerability(
    model: Any,
    pairs: Sequence[Any],
    items: Sequence[ReadoutItem],
    settings: SweepSettings | None = None,
    *,
    out: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    **overrides: Any,
) -> SweepResult:
    """Run the sweep into ``out`` and return its result; see the module docstring. ``overrides`` set
    `SweepSettings` fields by name. The report (``summary.md``, ``report.html``, figures) is not written
    here: `analysis.reports.sweep_report.write_report(result)` writes it, as ``steerscope sweep`` does.

    ``out=None`` writes into a fresh temporary folder (``result.out``). Every option is checked
    before any work starts; ``resume=True`` refuses a folder written with other options, and a
    folder another sweep is writing into is refused while that sweep runs.
    """
    unknown = sorted(set(overrides) - {f.name for f in fields(SweepSettings)})
    if unknown:
        raise ValueError(f"Unknown sweep option(s) {unknown}; SweepSettings has: {', '.join(f.name for f in fields(SweepSettings))}.")
    settings = replace(settings or SweepSettings(), **overrides).checked(model)
    pairs = probes.as_pairs(pairs)
    items = check_items(items)
    split = split_items(items, settings.test_fraction, settings.seed)
    options = asdict(settings) | {
        "model": model_handle(model).model_id,
        "pairs": probes.shards.texts_digest(pairs),
        "n_pairs": len(pairs),
        "items": [i.id for i in items],
    }
    folder = RunFolder(out if out is not None else tempfile.mkdtemp(prefix="steerscope-sweep-"))
    with folder.locked():
        folder.record_options(options, resume, defaults=asdict(SweepSettings()))
        folder.record_items(items, resume)
        folder.write_manifest(
            model, options, pairs, items, seeds={"split": settings.seed, "null_model": settings.seed, "null_direction": settings.seed}
        )
        write_json(folder.file(SPLIT), split.record())
        return run_sweep(model, pairs, split, settings, folder, progress)


def screen(model: Any, acts: Any, pairs: list, split: Split, settings: SweepSettings, progress: bool) -> pd.DataFrame:
    """First-order effect on validation items of every cheap method's direction at every (layer, kind)."""
    cheap = [m for m in settings.methods if not dirs.METHODS[m].needs_gradients]
    found, failed = [], set()
    for method in cheap:
        try:
            here = []
            for layer, kind in acts:
                try:
                    here.append(dirs.compute(method, acts, layer, kind, model=model, pairs=pairs))
                except dirs.DegenerateDirection:  # no direction at this place (e.g. q at layer 0): skip it, not the method
                    continue
            found += here
        except Exception as error:  # its dose rows will record the error; screen with the others
            failed.add(method)
            warnings.warn(f"{method} could not be screened ({type(error).__name__}: {error}).", stacklevel=2)
    if not found:  # only gradient methods, or every cheap one failed: screen with the mass-mean difference
        found = [dirs.compute(SCREEN_FALLBACK, acts, layer, kind) for layer, kind in acts]
    if has_weights(model):
        effects = first_order_effects(model, found, split.validation, batch_size=min(settings.batch_size, 8))
    else:  # remote: no backward pass through NDIF; estimate from readouts at ±h
        effects = finite_difference_effects(model, found, split.validation, batch_size=settings.batch_size)
    summary = summarise_effects(effects)
    if has_weights(model):  # the logit lens needs the unembedding here
        summary = summary.merge(lens_predictions(model, found, split.validation), on=["layer", "kind", "method"], how="left")
    return summary


def run_sweep(model: Any, pairs: list, split: Split, settings: SweepSettings, folder: RunFolder, progress: bool) -> SweepResult:
    acts = probes.collect(
        model, pairs, layers=settings.layers, sublayers=settings.kinds, batch_size=max(settings.batch_size, 16), progress=progress
    )
    sep = separation(acts)
    if settings.null_model and has_weights(model):
        null_model = probes.models.random_init_copy(model, settings.seed)
        sep = with_null(
            sep,
            separation(
                probes.collect(
                    null_model,
                    pairs,
                    layers=settings.layers,
                    sublayers=settings.kinds,
                    batch_size=max(settings.batch_size, 16),
                    progress=progress,
                )
            ),
        )
        del null_model
    write_atomic(folder.file(SEPARATION), sep.to_csv(index=False))
    predictions = screen(model, acts, pairs, split, settings, progress)
    aliased = probes.sublayers.aliases(model, settings.kinds)  # e.g. attn = o: the same states, dosed once (as o)
    predictions["alias_of"] = predictions["kind"].map(aliased)
    write_atomic(folder.file(PREDICTIONS), predictions.to_csv(index=False))
    kept = [kind for kind in settings.kinds if kind not in aliased]
    selected = select_configs(predictions[predictions["alias_of"].isna()], kept, settings.top_k, settings.stride, settings.full)

    table = ResultTable(folder.file(RESULTS), RESULT_COLUMNS, key=("layer", "kind", "method"))
    nulls = ResultTable(folder.file(NULLS), NULL_COLUMNS, key=("layer", "kind"))
    baseline = unsteered_baseline(model, split.test, batch_size=settings.batch_size, min_pmass=settings.min_pmass)

    def dose(direction: dirs.Direction, mode: str) -> tuple[pd.DataFrame, dict[str, Any]]:
        """The dose table at the sweep's coefficients (and ±c* with a cost budget) and its metrics."""
        applied = steering.plans.in_mode(direction, mode, acts)
        coeffs, matched = list(settings.coeffs), dict[str, Any]()
        if settings.cost_budget is not None:
            match, matched = match_and_cost(model, applied, settings.cost_budget)
            coeffs = with_budget_coeffs(coeffs, match.coeff)
        df = dose_response(
            model, applied, split.test, coeffs, batch_size=settings.batch_size, baseline=baseline, min_pmass=settings.min_pmass
        )
        metrics = dose_metrics(df[df["coeff"].isin(settings.coeffs)])  # the per-unit-c numbers read the sweep's coefficients only
        return df, metrics | (matched | effect_at(df, matched["coeff_at_budget"]) if matched else {})

    sep_by = sep.set_index(["layer", "kind"])
    pred_by = predictions.set_index(["layer", "kind", "method"])
    doses: dict[str, pd.DataFrame] = {}
    found: list[dirs.Direction] = []
    jobs = [
        (layer, kind, job)
        for layer, kind in selected
        for job in (["null"] if settings.null_direction else []) + job_names(settings.methods, settings.modes)
    ]
    bar = tqdm(jobs, desc="dose-response", unit="config", disable=not progress)
    for layer, kind, job in bar:
        name = config_name(layer, kind, job)
        bar.set_postfix_str(name)
        is_null = job == "null"
        rows, key = (nulls, (str(layer), kind)) if is_null else (table, (str(layer), kind, job))
        if key in rows.finished() and reload(folder, name, None if is_null else found, doses, is_null):
            continue
        started = time.time()
        row: dict[str, Any] = {"layer": layer, "kind": kind, "method": job}
        try:
            # the null is a seeded random direction of the methods' norm (the typical pair difference)
            method, _, mode = job.partition("+")
            direction = dirs.compute("random" if is_null else method, acts, layer, kind, model=model, pairs=pairs)
            df, metrics = dose(direction, mode or "add")
            row |= metrics | {"vote_share": direction.meta["vote_share"], "scale": direction.scale}
            write_atomic(entry_file(folder.path, DOSES, name), df.to_csv(index=False))
            dirs.save_directions([direction], entry_file(folder.path, NULL_DIRECTIONS if is_null else DIRECTIONS, name, ".safetensors"))
            doses[name] = df
            if not is_null:
                found.append(direction)
        except Exception as error:  # one failing configuration must not lose the sweep
            row["error"] = f"{type(error).__name__}: {error}"
            if progress:
                tqdm.write(f"{name} failed: {row['error']}\n{traceback.format_exc(limit=3)}")
        row["seconds"] = round(time.time() - started, 2)
        if not is_null:
            row |= context_columns(layer, kind, job, sep_by, pred_by, nulls)
        rows.record(row)
    bar.close()

    return SweepResult(
        table.frame(), sep, doses, found, compare_directions(found) if found else None, folder.path, predictions, split.record()
    )


def context_columns(layer: int, kind: str, method: str, sep_by: pd.DataFrame, pred_by: pd.DataFrame, nulls: ResultTable) -> dict[str, Any]:
    """What to read a row against: its separation and null, its prediction, and the random direction there."""
    out: dict[str, Any] = {}
    if (layer, kind) in sep_by.index:
        out["auroc"] = float(sep_by.loc[(layer, kind), "auroc"])
        if "auroc_null" in sep_by:
            out["auroc_null"] = float(sep_by.loc[(layer, kind), "auroc_null"])
    if (layer, kind, method) in pred_by.index:
        out["predicted_effect"] = float(pred_by.loc[(layer, kind, method), "predicted_effect"])
        out["predicted_t"] = float(pred_by.loc[(layer, kind, method), "predicted_t"])
        if "lens_margin" in pred_by:
            out["lens_margin"] = float(pred_by.loc[(layer, kind, method), "lens_margin"])
    null = nulls.rows.get((str(layer), kind))
    if null is not None and not null.get("error"):
        out |= {f"null_{k}": null.get(k) for k in ("item_slope", "p_value", "effect", "delta_nll", "effect_at_budget")}
    return out


def reload(folder: RunFolder, name: str, found: list | None, doses: dict, is_null: bool) -> bool:
    """Load a finished configuration's files; False (with a warning) when they are unreadable, to run it again."""
    try:
        found_here = dirs.load_directions(entry_file(folder.path, NULL_DIRECTIONS if is_null else DIRECTIONS, name, ".safetensors"))
        doses[name] = pd.read_csv(entry_file(folder.path, DOSES, name))
        if found is not None:
            found += found_here
        return True
    except Exception as error:  # a finished configuration whose files were lost or damaged
        warnings.warn(f"{name}: its saved files are unreadable ({type(error).__name__}); recomputing it.", stacklevel=2)
        return False
