"""The layer-steerability sweep: which (layer, sublayer, method) steers, and how well?

Two stages, so the default finishes on a laptop CPU:

1. *Separation* for every requested layer × kind (one `probes.collect` pass):
   cheap, cross-validated, written to ``separation.csv``.
2. *Dose-response* on the dilemmas for selected (layer, kind) × every method:
   the first kind at every ``stride``-th layer (a layer profile) plus the
   ``top_k`` most separable (layer, kind); ``full=True`` runs every one.

Each finished configuration is appended to ``results.csv`` at once (with its
dose table in ``doses/`` and direction in ``directions/``), so an interrupted
run keeps its rows and ``resume=True`` skips them. A configuration that fails
is recorded with its error and the sweep goes on.

Example:
    >>> result = sweep_steerability(model, pairs, dilemmas(), layers="all", kinds=("resid", "o", "down"),
    ...                             methods=("mean_diff", "pca_diff"), coeffs=(-1, 0, 1), out="runs/smollm")
    >>> result.results.sort_values("score", ascending=False).head()
"""

from __future__ import annotations

import csv
import json
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
from tqdm.auto import tqdm

import probes
from steering import directions as dirs

from .agreement import compare_directions
from .dose import dose_metrics, dose_response, unsteered_baseline
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


def done_configs(results_file: Path) -> set[str]:
    if not results_file.exists():
        return set()
    frame = pd.read_csv(results_file)
    finished = frame[frame["error"].isna()] if "error" in frame else frame
    return {config_name(int(r.layer), r.kind, r.method) for r in finished.itertuples()}


def append_row(results_file: Path, row: dict[str, Any]) -> None:
    new = not results_file.exists()
    with results_file.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=RESULT_COLUMNS, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow(row)


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
    """Run the two-stage sweep; see the module docstring. Returns a `SweepResult`."""
    pairs = probes.as_pairs(pairs)
    unknown = [m for m in methods if m not in dirs.METHODS]
    if unknown:
        raise ValueError(f"Unknown method(s) {unknown}; available: {', '.join(dirs.METHODS)}.")
    out_dir = Path(out) if out is not None else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        results_file = out_dir / "results.csv"
        if results_file.exists() and not resume:
            raise FileExistsError(f"{results_file} exists: pass resume=True (--resume) to continue it, or choose another out folder.")
        (out_dir / "config.json").write_text(json.dumps({
            "model": getattr(probes.sublayers.config_of(model), "name_or_path", None), "layers": layers if isinstance(layers, str) else list(layers),
            "kinds": list(kinds), "methods": list(methods), "coeffs": list(coeffs), "n_pairs": len(pairs), "n_items": len(items),
            "full": full, "top_k": top_k, "stride": stride, "min_pmass": min_pmass}, indent=1))

    acts = probes.collect(model, pairs, layers=layers, sublayers=kinds, batch_size=max(batch_size, 16), progress=progress)
    sep = separation(acts)
    if out_dir is not None:
        sep.to_csv(out_dir / "separation.csv", index=False)
    selected = select_configs(sep, list(kinds), top_k, stride, full)
    todo = [(layer, kind, method) for layer, kind in selected for method in methods]
    finished = done_configs(results_file) if out_dir is not None else set()
    baseline = unsteered_baseline(model, items, batch_size=batch_size, min_pmass=min_pmass)
    auroc = {(int(r.layer), r.kind): float(r.auroc) for r in sep.itertuples()}

    doses: dict[str, pd.DataFrame] = {}
    found: list[dirs.Direction] = []
    rows: list[dict[str, Any]] = []
    bar = tqdm(todo, desc="dose-response", unit="config", disable=not progress)
    for layer, kind, method in bar:
        name = config_name(layer, kind, method)
        bar.set_postfix_str(name)
        direction_file = out_dir / "directions" / f"{name}.safetensors" if out_dir is not None else None
        if name in finished:
            found += dirs.load_directions(direction_file) if direction_file.exists() else []
            doses[name] = pd.read_csv(out_dir / "doses" / f"{name}.csv")
            continue
        started = time.time()
        row: dict[str, Any] = {"layer": layer, "kind": kind, "method": method, "auroc": auroc.get((layer, kind))}
        try:
            direction = dirs.compute(method, acts, layer, kind, **method_options(method, model, pairs))
            df = dose_response(model, direction, items, coeffs, batch_size=batch_size, baseline=baseline, min_pmass=min_pmass)
            row |= dose_metrics(df) | {"vote_share": direction.meta["vote_share"], "scale": direction.scale}
            doses[name] = df
            found.append(direction)
            if out_dir is not None:
                (out_dir / "doses").mkdir(exist_ok=True)
                df.to_csv(out_dir / "doses" / f"{name}.csv", index=False)
                dirs.save_directions([direction], direction_file)
        except Exception as error:  # one failing configuration must not lose the sweep
            row["error"] = f"{type(error).__name__}: {error}"
            if progress:
                tqdm.write(f"{name} failed: {row['error']}\n{traceback.format_exc(limit=3)}")
        row["seconds"] = round(time.time() - started, 2)
        rows.append(row)
        if out_dir is not None:
            append_row(results_file, row)
    bar.close()

    # the file holds resumed rows too
    results = pd.read_csv(results_file) if out_dir is not None else pd.DataFrame(rows, columns=RESULT_COLUMNS)
    cosines = compare_directions(found) if found else None
    result = SweepResult(results, sep, doses, found, cosines, out_dir)
    if out_dir is not None:
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
