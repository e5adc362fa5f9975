"""The layer-steerability sweep: which (layer, sublayer, method) steers, and how well?

Two stages, so the default finishes on a laptop CPU:

1. *Separation* for every requested layer × kind (one `probes.collect` pass):
   cheap, cross-validated, written to ``separation.csv``.
2. *Dose-response* on the dilemmas for selected (layer, kind) × every method:
   the first kind at every ``stride``-th layer (a layer profile) plus the
   ``top_k`` most separable (layer, kind); ``full=True`` runs every one.

Each finished configuration is written to ``results.csv`` at once (with its
dose table in ``doses/`` and direction in ``directions/``; every file atomic),
so an interrupted run keeps its rows and ``resume=True`` skips them. A
configuration that fails is recorded with its error and the sweep goes on; a
resumed run retries it. The options are recorded in ``config.json`` and one
sweep at a time may write into a folder (see `analysis.run_folder`).

Example:
    >>> result = sweep_steerability(model, pairs, dilemmas(), layers="all", kinds=("resid", "o", "down"),
    ...                             methods=("mean_diff", "pca_diff"), coeffs=(-1, 0, 1), out="runs/smollm")
    >>> result.results.sort_values("score", ascending=False).head()
"""

from __future__ import annotations

import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
from tqdm.auto import tqdm

import probes
from probes.batching import check_batch_size
from probes.files import write_atomic
from probes.fingerprint import model_fingerprint
from steering import directions as dirs

from . import score as sc
from .agreement import compare_directions
from .dose import check_coeffs, dose_metrics, dose_response, unsteered_baseline
from .run_folder import ResultTable, RunFolder
from .separation import separation

MODEL_METHODS = ("uspace_pca", "uspace_mean")
GRADIENT_METHODS = ("fisher", "fisher_cov", "fisher_dual", "svd_grad")
RESULT_COLUMNS = ["layer", "kind", "method", "score", "slope", "r2", "p_value", "paired_p", "spearman", "effect",
                  "delta_nll", "normalized_gain", "valid_frac", "min", "max", "intercept", "vote_share", "scale",
                  "auroc", "seconds", "error"]


@dataclass
class SweepResult:
    results: pd.DataFrame
    separation: pd.DataFrame
    doses: dict[str, pd.DataFrame] = field(default_factory=dict)
    directions: list[dirs.Direction] = field(default_factory=list)
    cosines: pd.DataFrame | None = None
    out: Path | None = None


def config_name(layer: int, kind: str, method: str) -> str:
    return f"L{layer:02d}_{kind}_{method}"


def select_configs(sep: pd.DataFrame, kinds: Sequence[str], top_k: int, stride: int, full: bool) -> list[tuple[int, str]]:
    """(layer, kind) pairs to run dose-response on, most separable first."""
    ranked = sep.sort_values(["auroc", "cohens_d"], ascending=False)
    if full:
        return [(int(r.layer), r.kind) for r in ranked.itertuples()]
    chosen = [(int(r.layer), r.kind) for r in ranked.head(top_k).itertuples()]
    layers = sorted(sep["layer"].unique())
    profile = [(int(layer), kinds[0]) for layer in layers[:: max(1, stride)]]
    return list(dict.fromkeys(chosen + profile))


def method_options(method: str, model: Any, pairs: list) -> dict[str, Any]:
    if method in MODEL_METHODS:
        return {"model": model}
    if method in GRADIENT_METHODS:
        return {"model": model, "pairs": pairs}
    return {}


def sweep_options(model: Any, pairs: list, items: list, layers: Any, kinds: Sequence[str], methods: Sequence[str],
                  coeffs: list[float], full: bool, top_k: int, stride: int, min_pmass: float) -> dict[str, Any]:
    """Everything that decides a sweep's numbers (recorded in config.json; a resume must match it)."""
    return {
        "model": getattr(probes.sublayers.config_of(model), "name_or_path", None), "weights": model_fingerprint(model),
        "layers": layers if isinstance(layers, str) else [int(layer) for layer in layers], "kinds": list(kinds),
        "methods": list(methods), "coeffs": coeffs, "n_pairs": len(pairs), "pairs": probes.shards.texts_digest(pairs),
        "n_items": len(items), "items": [item.id for item in items], "full": full, "top_k": top_k, "stride": stride,
        "min_pmass": min_pmass,
    }


def sweep_steerability(
    model: Any,
    pairs: Sequence[Any],
    items: Sequence[Any],
    layers: Any = "all",
    kinds: Sequence[str] = ("resid", "o", "down"),
    methods: Sequence[str] = ("mean_diff", "pca_diff"),
    coeffs: Sequence[float] = (-1.0, 0.0, 1.0),
    *,
    out: str | Path | None = None,
    resume: bool = False,
    full: bool = False,
    top_k: int = 4,
    stride: int = 6,
    batch_size: int = 16,
    min_pmass: float = 0.1,
    progress: bool = True,
    figure_formats: Sequence[str] = ("html", "png", "svg"),
) -> SweepResult:
    """Run the two-stage sweep; see the module docstring. Returns a `SweepResult`.

    ``out=None`` writes into a fresh temporary folder (``result.out``). Every option is checked
    before any work starts; ``resume=True`` refuses a folder written with other options, and a
    folder another sweep is writing into is refused while that sweep runs.
    """
    pairs = probes.as_pairs(pairs)
    items = sc.check_items(items)
    coeffs = check_coeffs(coeffs)
    kinds = [kinds] if isinstance(kinds, str) else list(kinds)
    methods = [methods] if isinstance(methods, str) else list(methods)
    unknown = [m for m in methods if m not in dirs.METHODS]
    if unknown or not methods:
        raise ValueError(f"Unknown method(s) {unknown or methods}; available: {', '.join(dirs.METHODS)}.")
    check_batch_size(batch_size)
    for kind in kinds:
        probes.sublayers.resolve(model, 0, kind)
    folder = RunFolder(out if out is not None else tempfile.mkdtemp(prefix="steerscope-sweep-"))
    with folder.locked():
        folder.record_options(sweep_options(model, pairs, items, layers, kinds, methods, coeffs, full, top_k, stride, min_pmass), resume)
        return run_sweep(model, pairs, items, layers, kinds, methods, coeffs, folder, full, top_k, stride, batch_size,
                         min_pmass, progress, figure_formats)


def run_sweep(model: Any, pairs: list, items: list, layers: Any, kinds: list[str], methods: list[str], coeffs: list[float],
              folder: RunFolder, full: bool, top_k: int, stride: int, batch_size: int, min_pmass: float, progress: bool,
              figure_formats: Sequence[str]) -> SweepResult:
    acts = probes.collect(model, pairs, layers=layers, sublayers=kinds, batch_size=max(batch_size, 16), progress=progress)
    sep = separation(acts)
    write_atomic(folder.file("separation.csv"), sep.to_csv(index=False))
    selected = select_configs(sep, list(kinds), top_k, stride, full)
    todo = [(layer, kind, method) for layer, kind in selected for method in methods]
    table = ResultTable(folder.file("results.csv"), RESULT_COLUMNS, key=("layer", "kind", "method"))
    finished = {config_name(int(layer), kind, method) for layer, kind, method in table.finished()}
    baseline = unsteered_baseline(model, items, batch_size=batch_size, min_pmass=min_pmass)
    auroc = {(int(r.layer), r.kind): float(r.auroc) for r in sep.itertuples()}

    doses: dict[str, pd.DataFrame] = {}
    found: list[dirs.Direction] = []
    bar = tqdm(todo, desc="dose-response", unit="config", disable=not progress)
    for layer, kind, method in bar:
        name = config_name(layer, kind, method)
        bar.set_postfix_str(name)
        direction_file = folder.file("directions") / f"{name}.safetensors"
        dose_file = folder.file("doses") / f"{name}.csv"
        if name in finished:
            try:
                found_here, dose_here = dirs.load_directions(direction_file), pd.read_csv(dose_file)
                found += found_here
                doses[name] = dose_here
                continue
            except Exception as error:  # a finished configuration whose files were lost or damaged: run it again
                warnings.warn(f"{name}: its saved files are unreadable ({type(error).__name__}); recomputing it.", stacklevel=2)
        started = time.time()
        row: dict[str, Any] = {"layer": layer, "kind": kind, "method": method, "auroc": auroc.get((layer, kind))}
        try:
            direction = dirs.compute(method, acts, layer, kind, **method_options(method, model, pairs))
            df = dose_response(model, direction, items, coeffs, batch_size=batch_size, baseline=baseline, min_pmass=min_pmass)
            row |= dose_metrics(df) | {"vote_share": direction.meta["vote_share"], "scale": direction.scale}
            write_atomic(dose_file, df.to_csv(index=False))
            dirs.save_directions([direction], direction_file)
            doses[name] = df
            found.append(direction)
        except Exception as error:  # one failing configuration must not lose the sweep
            row["error"] = f"{type(error).__name__}: {error}"
            if progress:
                tqdm.write(f"{name} failed: {row['error']}\n{traceback.format_exc(limit=3)}")
        row["seconds"] = round(time.time() - started, 2)
        table.record(row)
    bar.close()

    cosines = compare_directions(found) if found else None
    result = SweepResult(table.frame(), sep, doses, found, cosines, folder.path)
    from .report import write_report

    write_report(result, figure_formats)
    return result


def load_sweep(out: str | Path) -> SweepResult:
    """Read a finished (or interrupted) sweep folder back into a `SweepResult`."""
    out = Path(out)
    if not (out / "results.csv").exists():
        raise FileNotFoundError(f"{out} holds no results.csv: is it a steerscope sweep folder?")
    results = pd.read_csv(out / "results.csv")
    doses = {path.stem: pd.read_csv(path) for path in sorted((out / "doses").glob("*.csv"))}
    found = [d for path in sorted((out / "directions").glob("*.safetensors")) for d in dirs.load_directions(path)]
    return SweepResult(results, pd.read_csv(out / "separation.csv"), doses, found,
                       compare_directions(found) if found else None, out)
