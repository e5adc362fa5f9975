"""The paper's experiment: InnerPiSSA against its baselines and ablations on held-out value-labelled dilemmas.

Studies (each trainable method with every seed in ``seeds``):

- ``main`` (Table 1, Figure 1, the transfer table): InnerPiSSA trained with ReprPO;
  prompting (an honest / dishonest persona); PCA (``pca_diff``) and mean-difference
  (``mean_diff``) steering of the residual stream; S-space steering (``uspace_pca`` in ``down``'s output singular
  basis); a random direction at PCA's norm; LoRA trained with the same loss.
- ``ablation`` (Table 2): no SVD (random orthonormal bases), no coherence term,
  coherence weight ×100 and ÷100, no monotonic term, no V rotation, U rotation on,
  S scaling ``tanh``, ``mult`` and ``none`` (no gradient = the main PCA row).
- ``depth`` (Figure 2): InnerPiSSA at one layer at about 0.25, 0.5 and 0.75 of the
  depth and at the last-but-three layer.

Every choice uses validation items only (the layer of the PCA, S-space and random
baselines: the largest first-order effect on the target among the adapter's layers;
recorded in ``choices.json``); every reported number uses test items (``split.json``).
Each main method is also judged at a shared cost (``cost_budget``, mean KL on neutral
text; `analysis.measures.matched_cost`): its coefficient there is found on half the
neutral paragraphs, its cost reported on the other half.
Each finished run is a row of ``runs.csv`` with its dose table, value profile,
training history and greedy samples (``generations/``, gathered into ``generations.md``
after every run), so a killed run resumes where it stopped and loses none of them.
Every option is checked before any work starts (`analysis.studies.experiment_checks`).

Example:
    settings = ExperimentSettings(seeds=(0, 1, 2), ablations=True, depths=True)
    run_experiment(model, pairs, analysis.moral_dilemmas(), settings, out="runs/paper")
    analysis.paper.write_paper("runs/paper")
"""

from __future__ import annotations

import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

import probes
import steering
from probes import sublayers as sl
from probes.files import read_json, write_atomic, write_json
from probes.model_handle import model_handle
from steering import directions as dirs
from steering.adapters.lora import attach_lora
from steering.adapters.reprpo import default_loss_layer

from ..measures.evaluate import PRECISION, SUMMARY, MethodRun, evaluate, generations_markdown
from ..measures.matched_cost import MATCHED
from ..measures.predict import first_order_effects
from ..readouts.daily_dilemmas import for_value
from ..readouts.items import ReadoutItem, check_items
from ..readouts.split import split_items
from .experiment_checks import checked_settings
from .experiment_settings import UNRECORDED_MEANT, ExperimentSettings
from .layout import (
    ADAPTERS,
    CHOICES,
    DOSES,
    GENERATIONS,
    GENERATIONS_MD,
    HISTORIES,
    LABELS,
    PROFILES,
    RUNS,
    SPLIT,
    entry_file,
    job_key,
)
from .run_folder import ResultTable, RunFolder

TRAINING_COLUMNS = [  # from steering's TrainResult.summary(), for trained methods (see held_out_pairs)
    "steps_run",
    "best_step",
    "train_loss",
    "val_loss",
    "weight_change",
    "direction_vote",
    "direction_mean_diff_cos",
]
RUN_COLUMNS = [
    "study",
    "method",
    "seed",
    *SUMMARY,
    "n_items",
    "item_slope_lo",
    "item_slope_hi",
    *PRECISION,  # dilemma-level effect, CI and p; kept/valid share; side effects against their label-permutation null
    *MATCHED,  # main study: the coefficient at the KL budget, the KL it costs, the effect there with its CI and p
    "parameters",
    "train_s",
    *TRAINING_COLUMNS,
    "layers",
    "seconds",
    "error",
]
ABLATIONS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {  # name: (adapter options, training overrides)
    "no SVD (random bases)": ({"basis": "random"}, {}),
    "gap objective": ({}, {"objective": "gap"}),
    "no coherence term": ({}, {"coherence_weight": 0.0}),
    "coherence ×100": ({}, {"coherence_weight": 1000.0}),
    "coherence ÷100": ({}, {"coherence_weight": 0.1}),
    "no monotonic term": ({}, {"monotonic_weight": 0.0}),
    "no V rotation": ({"rotate_v": False}, {}),
    "U rotation on": ({"rotate_u": True}, {}),
    "S tanh": ({"scale_mode": "tanh"}, {}),
    "S mult": ({"scale_mode": "mult"}, {}),
    "S none": ({"scale_mode": "none"}, {}),
}


@dataclass
class Job:
    study: str
    method: str
    seed: int | None
    build: Callable[[], tuple[Any, float, pd.DataFrame | None, dict[str, Any]]]  # -> (intervention, train s, history, training)
    layers: list[int] = field(default_factory=list)

    @property
    def key(self) -> str:
        """The name of this run's files; injective in (study, method, seed) (see `layout.job_key`)."""
        return job_key(self.study, self.method, self.seed)


def default_adapter_layers(total: int) -> list[int]:
    """Every other layer of the middle half (SmolLM2's 30 layers: 8, 10, ..., 20)."""
    return list(range(total // 4 + 1, (3 * total) // 4 - 1, 2))


def depth_layers(total: int) -> dict[str, int]:
    return {
        f"depth 0.25 (L{round(0.25 * (total - 1))})": round(0.25 * (total - 1)),
        f"depth 0.5 (L{round(0.5 * (total - 1))})": round(0.5 * (total - 1)),
        f"depth 0.75 (L{round(0.75 * (total - 1))})": round(0.75 * (total - 1)),
        f"last-but-three (L{max(0, total - 4)})": max(0, total - 4),
    }


def choose_layer(model: Any, pairs: list, validation: list[ReadoutItem], layers: list[int], target: str) -> dict[str, Any]:
    """The layer (of ``layers``) whose ``pca_diff`` resid direction has the largest first-order effect on the
    target over validation items."""
    acts = probes.collect(model, pairs, layers=layers, sublayers="resid", progress=False)
    candidates = [dirs.compute("pca_diff", acts, layer, "resid") for layer in layers]
    effects = first_order_effects(model, candidates, for_value(validation, target)).groupby("layer")["effect"].mean()
    return {
        "baseline_layer": int(effects.idxmax()),
        "rule": "largest first-order effect of pca_diff (resid) on the target over validation items",
        "effects": {str(k): float(v) for k, v in effects.items()},
    }


def held_out_pairs(pairs: list, fraction: float, seed: int) -> tuple[list, list]:
    """``(training, validation)`` pairs: a seeded ``fraction`` of the pairs (at least 2, leaving at least 2) held out
    so the training budget is chosen on pairs the adapter never trained on; none when too few pairs or fraction 0."""
    n_val = round(len(pairs) * fraction)
    if fraction <= 0 or n_val < 2 or len(pairs) - n_val < 2:
        return list(pairs), []
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(seed)).tolist()
    held = set(order[:n_val])
    return [p for i, p in enumerate(pairs) if i not in held], [p for i, p in enumerate(pairs) if i in held]


def training_row(summary: dict[str, Any]) -> dict[str, Any]:
    """The `TRAINING_COLUMNS` of a `TrainResult.summary()` (its one loss layer's direction checks unprefixed)."""
    row = {key: summary.get(key) for key in TRAINING_COLUMNS}
    for key, value in summary.items():
        for name in ("direction_vote", "direction_mean_diff_cos"):
            if key.startswith(f"{name}_L"):
                row[name] = value
    return row


def plan(model: Any, pairs: list, settings: ExperimentSettings, layers: list[int], choice: dict[str, Any]) -> list[Job]:
    """Every (study, method, seed) to run, in order."""
    train_pairs, val_pairs = held_out_pairs(pairs, settings.val_fraction, settings.split_seed)
    train = {
        "steps": settings.steps,
        "lr": settings.lr,
        "objective": settings.objective,
        "batch_pairs": settings.batch_pairs,
        "progress": False,
        "val_pairs": val_pairs or None,
        "patience": settings.patience,
    }

    def adapter(attach_layers: list[int], options: dict, overrides: dict, seed: int, lora: bool = False):
        def build():
            handle = (
                attach_lora(model, attach_layers, settings.kinds, settings.rank, seed=seed)
                if lora
                else steering.attach_innerpissa(model, attach_layers, settings.kinds, settings.rank, seed=seed, **options)
            )
            # the loss reads the default layer, or the deepest adapted one when that is deeper (steering.adapters.reprpo refuses otherwise)
            loss_layer = max(default_loss_layer(sl.n_layers(model)), *attach_layers)
            try:
                result = steering.train_reprpo(
                    model, handle, train_pairs, **(train | {"loss_layers": [loss_layer]} | overrides | {"seed": seed})
                )
            except BaseException:
                handle.detach()
                raise
            return handle, result.seconds, result.history, training_row(result.summary())

        return build

    layer = choice["baseline_layer"]
    acts = probes.collect(model, pairs, layers=[layer], sublayers=("resid", "down"), progress=False)
    pca = dirs.compute("pca_diff", acts, layer, "resid")
    random = replace(dirs.compute("random", acts, layer, "resid"), scale=pca.scale)  # matched norm

    def static(value: Any) -> Callable[[], tuple[Any, float, None, dict[str, Any]]]:
        return lambda: (value, 0.0, None, {})

    jobs = [Job("main", "InnerPiSSA", seed, adapter(layers, {}, {}, seed), layers) for seed in settings.seeds]
    jobs += [
        Job("main", "prompting", None, static(steering.Prompting(*probes.pairs.prompting_personas(settings.concept)))),
        Job("main", f"PCA (L{layer})", None, static(pca), [layer]),
        Job("main", f"mean_diff (L{layer})", None, static(dirs.compute("mean_diff", acts, layer, "resid")), [layer]),
        Job(
            "main",
            f"S-space (L{layer} down)",
            None,
            lambda: (dirs.compute("uspace_pca", acts, layer, "down", model=model), 0.0, None, {}),
            [layer],
        ),
        Job("main", f"random (L{layer})", None, static(random), [layer]),
    ]
    if settings.lora:
        jobs += [Job("main", "LoRA", seed, adapter(layers, {}, {}, seed, lora=True), layers) for seed in settings.seeds]
    if settings.ablations:
        jobs += [
            Job("ablation", name, seed, adapter(layers, options, overrides, seed), layers)
            for name, (options, overrides) in ABLATIONS.items()
            for seed in settings.seeds
        ]
    if settings.depths:
        jobs += [
            Job("depth", name, seed, adapter([depth], {}, {}, seed), [depth])
            for name, depth in depth_layers(sl.n_layers(model)).items()
            for seed in settings.seeds
        ]
    return jobs


def run_experiment(
    model: Any,
    pairs: Sequence[Any],
    items: Sequence[ReadoutItem],
    settings: ExperimentSettings | None = None,
    *,
    out: str | Path,
    resume: bool = False,
    progress: bool = True,
    **overrides: Any,
) -> Path:
    """Run every planned job into ``out`` (resumable); see the module docstring. Returns the folder."""
    unknown = sorted(set(overrides) - {f.name for f in fields(ExperimentSettings)})
    if unknown:
        raise ValueError(f"Unknown option(s) {unknown}; ExperimentSettings has: {', '.join(f.name for f in fields(ExperimentSettings))}.")
    settings = replace(settings or ExperimentSettings(), **overrides)
    pairs, items = probes.as_pairs(pairs), check_items(items)
    layers = sl.resolve_layers(model, settings.layers) if settings.layers is not None else default_adapter_layers(sl.n_layers(model))
    split = split_items(items, settings.test_fraction, settings.split_seed)
    settings = checked_settings(settings, model, layers, split)  # before any work: the baselines take minutes
    options = asdict(settings) | {
        "layers": layers,
        "model": model_handle(model).model_id,
        "pairs": probes.shards.texts_digest(pairs),
        "items": [i.id for i in items],
    }
    folder = RunFolder(out)
    with folder.locked():
        folder.record_options(options, resume, results=RUNS, defaults=asdict(ExperimentSettings()) | UNRECORDED_MEANT)
        folder.record_items(items, resume)
        folder.write_manifest(model, options, pairs, items, seeds={"split": settings.split_seed, "training": list(settings.seeds)})
        write_json(folder.file(SPLIT), split.record())
        write_json(folder.file(LABELS), {item.id: item.value_labels for item in items})
        choice = choose_layer(model, pairs, split.validation, layers, settings.target)
        write_json(folder.file(CHOICES), choice)
        table = ResultTable(folder.file(RUNS), RUN_COLUMNS, key=("study", "method", "seed"))
        jobs = plan(model, pairs, settings, layers, choice)
        write_generations(folder, jobs)  # brings generations.md up to date after a kill right after a row
        for job in tqdm(jobs, desc="experiment", unit="run", disable=not progress):
            if table.is_finished(study=job.study, method=job.method, seed=job.seed):
                continue
            started = time.time()
            row: dict[str, Any] = {"study": job.study, "method": job.method, "seed": job.seed, "layers": str(job.layers)}
            try:
                run, training = run_job(model, job, split.test, settings, folder)
                row |= (
                    training
                    | {k: run.metrics.get(k) for k in RUN_COLUMNS if k in run.metrics}
                    | {
                        "parameters": run.parameters,
                        "train_s": round(run.train_seconds, 1),
                    }
                )
                if not run.metrics.get("n_items"):
                    warn_no_valid_items(job, settings, progress)
            except Exception as error:  # one failing run must not lose the others
                row["error"] = f"{type(error).__name__}: {error}"
                if progress:
                    tqdm.write(f"{job.key} failed: {row['error']}\n{traceback.format_exc(limit=3)}")
            row["seconds"] = round(time.time() - started, 1)
            table.record(row)
            write_generations(folder, jobs)
    return folder.path


def warn_no_valid_items(job: Job, settings: ExperimentSettings, progress: bool) -> None:
    message = (
        f"{job.study} / {job.method}" + (f" (seed {job.seed})" if job.seed is not None else "") + f": no test item labelled "
        f"{settings.target!r} kept P(yes)+P(no) ≥ min_pmass={settings.min_pmass} at every coefficient, so its effect is "
        "missing. Lower min_pmass (--min-pmass), or check that the model answers the items with their answer words."
    )
    warnings.warn(message, stacklevel=3)
    if progress:
        tqdm.write(message)


def write_generations(folder: RunFolder, jobs: list[Job]) -> None:
    """``generations.md`` from every run's saved samples (``generations/<key>.json``), in job order; rewritten
    atomically after each run, so a killed and resumed experiment keeps the samples of its finished runs."""
    runs = []
    for job in jobs:
        path = entry_file(folder.path, GENERATIONS, job.key, ".json")
        if path.exists():
            saved = read_json(path, "a run's greedy samples")
            generations = {float(c): texts for c, texts in saved["generations"].items()}
            runs.append(MethodRun(saved["method"], pd.DataFrame(), pd.DataFrame(), {}, saved["seed"], generations=generations))
    if runs:
        write_atomic(folder.file(GENERATIONS_MD), generations_markdown(runs))


def run_job(
    model: Any, job: Job, test: list[ReadoutItem], settings: ExperimentSettings, folder: RunFolder
) -> tuple[MethodRun, dict[str, Any]]:
    """Build (train) one job's intervention, judge it on the test items, save what it produced, detach it; returns
    the judged run and its training record (`TRAINING_COLUMNS`; empty for what is not trained)."""
    intervention, seconds, history, training = job.build()
    try:
        main = job.study == "main"
        samples = main and job.method.split(" ")[0] in ("InnerPiSSA", "prompting", "PCA") and job.seed in (None, settings.seeds[0])
        run = evaluate(
            model,
            job.method,
            intervention,
            test,
            target=settings.target,
            coeffs=settings.coeffs if main else (-1.0, 0.0, 1.0),
            seed=job.seed,
            train_seconds=seconds,
            batch_size=settings.batch_size,
            min_pmass=settings.min_pmass,
            capability=main and settings.capability,
            generation_tokens=settings.generation_tokens if samples else 0,
            cost_budget=settings.cost_budget if main else None,
            max_coeff=settings.cost_max_coeff,
        )
        write_atomic(entry_file(folder.path, DOSES, job.key), run.dose.to_csv(index=False))
        write_atomic(entry_file(folder.path, PROFILES, job.key), run.profile.to_csv(index=False))
        if history is not None:
            write_atomic(entry_file(folder.path, HISTORIES, job.key), history.to_csv(index=False))
        if run.generations:
            saved = {"method": job.method, "seed": job.seed, "generations": {str(c): t for c, t in run.generations.items()}}
            write_json(entry_file(folder.path, GENERATIONS, job.key, ".json"), saved)
        if main and job.seed == settings.seeds[0] and hasattr(intervention, "save"):
            intervention.save(entry_file(folder.path, ADAPTERS, job.key, ""))
        return run, training
    finally:
        if hasattr(intervention, "detach"):
            intervention.detach()
