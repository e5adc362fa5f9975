"""A run folder's layout: the name of every file a study writes there, the job key, and the readers.

A sweep's folder (`analysis.studies.sweep`)::

    config.json manifest.json items.json split.json    options, environment, items, split (RunFolder)
    separation.csv predictions.csv                      separation and first-order effects, every (layer, kind)
    results.csv nulls.csv                               one row per dosed configuration / random direction
    doses/<config>.csv                                  <config> = config_name(layer, kind, method),
    directions/<config>.safetensors                     e.g. L12_o_mean_diff; the random direction at a
    nulls/<config>.safetensors                          (layer, kind) is L12_o_null

An experiment's folder (`analysis.studies.experiment`)::

    config.json manifest.json items.json split.json labels.json choices.json
    runs.csv                                            one row per (study, method, seed)
    doses/<job>.csv profiles/<job>.csv histories/<job>.csv generations/<job>.json adapters/<job>/
    generations.md                                      <job> = job_key(study, method, seed)

Studies write these names and nothing else; reports read a folder only through the readers here
(`load_sweep`, `read_runs`, `job_file`, `target_labels`, `read_config`, `check_run`) and write their own
files beside them (``summary.md``, ``report.html``, ``figures/``; ``table1.md``, ``paper.html`` ...).

Example:
    job_key("ablation", "coherence ×100", 0), job_key("main", "prompting", None)
    # ('ablation__coherence-100-0f92ccd5__s0', 'main__prompting__s-')
    config_name(12, "o", "mean_diff")
    # 'L12_o_mean_diff'
    job_file(Path("runs/paper"), PROFILES, "main", "InnerPiSSA", 0)    # or the legacy key's file, if only it exists
    # PosixPath('runs/paper/profiles/main__innerpissa-ae120717__s0.csv')
    result = load_sweep("runs/sweep")                                   # a SweepResult, as the sweep returned it
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

import probes
import steering

from ..measures.agreement import compare_directions

# every run folder (`run_folder.RunFolder`)
CONFIG = "config.json"
MANIFEST = "manifest.json"
ITEMS = "items.json"
LOCK = ".lock"
SPLIT = "split.json"
DOSES = "doses"
# a sweep's
SEPARATION = "separation.csv"
PREDICTIONS = "predictions.csv"
RESULTS = "results.csv"
NULLS = "nulls.csv"
DIRECTIONS = "directions"
NULL_DIRECTIONS = "nulls"
# an experiment's
RUNS = "runs.csv"
LABELS = "labels.json"
CHOICES = "choices.json"
PROFILES = "profiles"
HISTORIES = "histories"
GENERATIONS = "generations"
GENERATIONS_MD = "generations.md"
ADAPTERS = "adapters"


def is_missing(value: Any) -> bool:
    """None, an empty string or NaN: how a missing cell looks in memory and after a CSV round trip."""
    return value is None or value == "" or (isinstance(value, float) and math.isnan(value))


def readable(name: str) -> str:
    """``name`` in lowercase letters, digits and hyphens (not injective: see `slug`)."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def slug(name: str) -> str:
    """A file-name part for ``name``: lowercase letters, digits and hyphens, injective (names that are
    not already such a slug get 8 hex digits of their hash, so ``coherence ×100`` and ``coherence ÷100``,
    or ``LoRA`` and ``lora``, stay apart, also on case-insensitive disks)."""
    plain = readable(name)
    if plain == name and plain and not re.search(r"(^|-)[0-9a-f]{8}$", plain):  # cannot look hashed
        return plain
    return "-".join(filter(None, [plain, hashlib.sha256(name.encode()).hexdigest()[:8]]))


def job_key(study: str, method: str, seed: Any, *, legacy: bool = False) -> str:
    """The file name of one run of an experiment (its dose table, profile, history, adapter, samples):
    injective in (study, method, seed); a missing seed (None, NaN, empty) is ``s-``.

    ``legacy=True``: the key folders written before job keys were injective use (the study as it is,
    the method `readable`); only `job_file` reads it, as a fallback."""
    names = (str(study), readable(str(method))) if legacy else (slug(str(study)), slug(str(method)))
    return f"{names[0]}__{names[1]}__s{'-' if is_missing(seed) else int(float(seed))}"


def config_name(layer: Any, kind: str, method: str) -> str:
    """The file name of one dosed configuration of a sweep (its dose table and direction), e.g. ``L03_resid_pca_diff``;
    ``method`` "null" names the random direction at that (layer, kind)."""
    return f"L{int(layer):02d}_{kind}_{method}"


def entry_file(run: str | Path, kind: str, name: str, suffix: str = ".csv") -> Path:
    """The file of one configuration or job in one of the folder's subfolders (``doses/<name>.csv`` ...)."""
    return Path(run) / kind / f"{name}{suffix}"


def job_file(run: Path, kind: str, study: str, method: str, seed: Any, suffix: str = ".csv") -> Path:
    """The file of one experiment run in ``run/kind`` (``doses``, ``profiles``, ``histories``, ``adapters``): named by
    its injective `job_key`, or by the older key in folders written before (when only that file exists)."""
    path = entry_file(run, kind, job_key(study, method, seed), suffix)
    legacy = entry_file(run, kind, job_key(study, method, seed, legacy=True), suffix)
    return legacy if not path.exists() and legacy.exists() else path


def read_config(run: str | Path, missing_ok: bool = False) -> dict[str, Any]:
    """The run's options (``config.json``); ``{}`` when the file is missing and ``missing_ok``."""
    path = Path(run) / CONFIG
    if missing_ok and not path.exists():
        return {}
    return json.loads(path.read_text())


def holds_sweep(run: str | Path) -> bool:
    return (Path(run) / RESULTS).exists()


def holds_experiment(run: str | Path) -> bool:
    return (Path(run) / RUNS).exists()


def check_run(run: Path) -> None:
    """Refuse a folder that holds neither a sweep nor an experiment."""
    if not (holds_sweep(run) or holds_experiment(run)):
        raise FileNotFoundError(f"{run} holds neither {RESULTS} (a sweep) nor {RUNS} (a train or paper run).")


def read_runs(run: Path) -> pd.DataFrame:
    """The rows of an experiment's ``runs.csv`` that finished without an error, one per (study, method, seed)."""
    if not holds_experiment(run):
        raise FileNotFoundError(f"{run} holds no {RUNS}: is it a folder written by steerscope train / paper?")
    rows = pd.read_csv(run / RUNS)
    rows = rows[rows["error"].isna()] if "error" in rows else rows
    # one row per (study, method, seed): folders resumed before 9557670 repeat their seedless baselines
    return rows.drop_duplicates(["study", "method", "seed"], keep="last")


def target_labels(run: Path, target: str) -> dict[str, int]:
    """Each item's label for the target value (``labels.json``, written by the experiment)."""
    labels_file = run / LABELS
    if not labels_file.exists():
        raise FileNotFoundError(f"{labels_file} is missing: the experiment stores every item's value labels there.")
    labels = json.loads(labels_file.read_text())
    return {item: values[target] for item, values in labels.items() if target in values}


@dataclass
class SweepResult:
    """What a sweep returns, and what `load_sweep` reads back from its folder ``out``."""

    results: pd.DataFrame
    separation: pd.DataFrame
    doses: dict[str, pd.DataFrame] = field(default_factory=dict)
    directions: list[steering.Direction] = field(default_factory=list)
    cosines: pd.DataFrame | None = None
    out: Path | None = None
    predictions: pd.DataFrame | None = None
    split: dict[str, Any] | None = None


def load_sweep(out: str | Path) -> SweepResult:
    """Read a finished (or interrupted) sweep folder back into a `SweepResult`."""
    out = Path(out)
    if not holds_sweep(out):
        raise FileNotFoundError(f"{out} holds no {RESULTS}: is it a steerscope sweep folder?")
    results = pd.read_csv(out / RESULTS)
    doses = {path.stem: pd.read_csv(path) for path in sorted((out / DOSES).glob("*.csv"))}
    found = [d for path in sorted((out / DIRECTIONS).glob("*.safetensors")) for d in steering.load_directions(path)]
    predictions = pd.read_csv(out / PREDICTIONS) if (out / PREDICTIONS).exists() else None
    split = probes.files.read_json(out / SPLIT, "the sweep's item split") if (out / SPLIT).exists() else None
    return SweepResult(
        results, pd.read_csv(out / SEPARATION), doses, found, compare_directions(found) if found else None, out, predictions, split
    )
