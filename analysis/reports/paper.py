"""The paper's tables and figures from an experiment folder (`analysis.studies.experiment`), all on test items.

- **Table 1** (``table1``; `analysis.reports.paper_table1`): each main method at a matched
  cost (the coefficient where its KL on neutral text reaches the run's budget), its effect
  there and per unit c with dilemma-level 95 % intervals and p, the seed spread apart, paired
  tests against prompting and the best direction, ``valid_frac``, side effects beside their
  null, ΔNLL, KL and parameters;
- **Table 2** (``table2``): each ablation's effect and its drop vs the full InnerPiSSA,
  ``1 − effect / effect_full`` (not interpretable when the full effect is not
  significant: the table says so);
- **Figure 1** (``figure1_dose``): paired change of the target readout from c = 0 over
  every coefficient, with ΔNLL on a secondary axis (first seed of trainable methods);
- **Figure 2** (``figure2_depth``): the effect of InnerPiSSA at one layer by depth, with
  SD over seeds;
- **transfer** (``transfer``): values × methods of the effect on every value, ``*`` where it
  beats its label-permutation null in every seed.

Each table is written as Markdown, LaTeX and CSV; each figure as PNG, SVG and HTML
(HTML only without Chromium).

Example:
    write_paper("runs/paper")                 # also: steerscope paper --run runs/paper
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from ..measures.evaluate import SUMMARY
from ..measures.metrics import readout_column
from ..measures.values import mean_profile, transfer_beats_null, transfer_table
from ..studies.experiment_settings import UNRECORDED_MEANT
from ..studies.layout import ADAPTERS, DOSES, HISTORIES, PROFILES, RUNS, job_file, read_config, read_runs, target_labels
from . import plots
from .experiment_plots import pareto_figure, transfer_figure
from .paper_page import compact_methods, write_paper_page
from .paper_table1 import TABLE1_COLUMNS, shown_table1, table1, table1_caption
from .style import PALETTE, style
from .tables import write_table

TABLE2_COLUMNS = ["method", "seeds", "effect", "effect_sd", "drop_vs_full", "p_value", "side_effects", "delta_nll"]


def aggregate(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per method of ``runs.csv`` rows: mean and SD over seeds, the median and largest p."""
    out = []
    for method, group in rows.groupby("method", sort=False):
        row: dict[str, Any] = {"method": method, "seeds": len(group)}
        for key in SUMMARY:
            values = group[key].astype(float) if key in group else pd.Series(dtype=float)
            if values.notna().sum() == 0:
                continue
            if key == "p_value":
                row["p_value"], row["p_value_max"] = float(values.median()), float(values.max())
            else:
                row[key] = float(values.mean())
                row[f"{key}_sd"] = float(values.std(ddof=1)) if values.notna().sum() > 1 else float("nan")
        row["parameters"] = int(group["parameters"].iloc[0]) if "parameters" in group and group["parameters"].notna().any() else 0
        row["train_s"] = float(group["train_s"].mean()) if "train_s" in group else 0.0
        out.append(row)
    summary = [c for key in SUMMARY for c in ((key, "p_value_max") if key == "p_value" else (key, f"{key}_sd"))]
    return pd.DataFrame(out).reindex(columns=["method", "seeds", *summary, "parameters", "train_s"])  # NaN where missing


def missing_runs(run: Path) -> list[str]:
    """What the tables lack, in words: the runs that failed (with their error) and the runs without an
    effect (no test item valid at every coefficient). Empty when nothing is missing."""
    rows = pd.read_csv(run / RUNS) if (run / RUNS).exists() else pd.DataFrame()
    if rows.empty:
        return [f"No run finished: {RUNS} holds no row yet."]
    rows = rows.drop_duplicates(["study", "method", "seed"], keep="last")
    errors = rows["error"].notna() if "error" in rows else pd.Series(False, index=rows.index)
    named = lambda row: f"{row['study']} / {row['method']}" + ("" if pd.isna(row["seed"]) else f" (seed {int(row['seed'])})")  # noqa: E731
    lines = []
    if errors.any():
        failed = rows[errors]
        listed = "; ".join(f"{named(row)}: {row['error']}" for _, row in failed.head(6).iterrows())
        start = "No run finished: " if errors.all() else ""
        lines.append(
            f"{start}{len(failed)} run(s) failed ({listed}{'; ...' if len(failed) > 6 else ''}); rerun with --resume to retry them."
        )
    no_effect = rows[~errors & (rows["effect"].isna() if "effect" in rows else True)]
    if len(no_effect):
        config = read_config(run, missing_ok=True)
        listed = "; ".join(named(row) for _, row in no_effect.head(6).iterrows())
        lines.append(
            f"{len(no_effect)} run(s) have no effect: no valid test item (min_pmass={config.get('min_pmass')}) "
            f"at every coefficient ({listed}{'; ...' if len(no_effect) > 6 else ''}). Lower --min-pmass, or check "
            "that the model answers the items with their answer words."
        )
    return lines


def table2(rows: pd.DataFrame, full_settings: str | None = None) -> tuple[pd.DataFrame, str]:
    """Ablations with their drop vs the full method, and a note on how to read it (naming
    ``full_settings``, the full method's settings, when given)."""
    main = aggregate(rows[rows["study"] == "main"]).set_index("method")
    ablations = aggregate(rows[rows["study"] == "ablation"])
    if "InnerPiSSA" not in main.index or ablations.empty:
        return pd.DataFrame(columns=TABLE2_COLUMNS), "No ablations in this run (steerscope paper, or train --ablations)."
    full = main.loc["InnerPiSSA"]
    if pd.isna(full["effect"]):
        return pd.DataFrame(columns=TABLE2_COLUMNS), "The full InnerPiSSA has no effect (no valid test item), so no drop can be computed."
    pca = [m for m in main.index if m.startswith("PCA")]
    reference = pd.DataFrame(
        [full.to_dict() | {"method": "full InnerPiSSA"}]
        + ([main.loc[pca[0]].to_dict() | {"method": f"no gradient ({pca[0]})"}] if pca else [])
    )
    table = pd.concat([reference, ablations], ignore_index=True)
    table["drop_vs_full"] = 1 - table["effect"] / full["effect"]
    significant = full.get("p_value_max", 1.0) < 0.05 and full["effect"] > 0
    note = (
        "drop_vs_full = 1 − effect / effect of the full InnerPiSSA"
        + (f" ({full_settings})." if full_settings else ".")
        + (
            ""
            if significant
            else f" The full method's effect ({full['effect']:.3g}, p up to {full.get('p_value_max', float('nan')):.2g}) "
            "is not significantly positive in every seed, so these drops compare noise with noise and should not be read "
            "as evidence for or against a component."
        )
    )
    return table, note


def full_settings(run: Path, seeds: Sequence[int], objective: str) -> str | None:
    """The full InnerPiSSA's settings as the run saved them with its first seed's adapter, and the ReprPO
    ``objective`` it trained with (each ablation changes one of them), or None when that adapter is not in the folder."""
    from steering.adapters.innerpissa_files import read_adapter_config

    folder = job_file(run, ADAPTERS, "main", "InnerPiSSA", seeds[0], "") if seeds else None
    if folder is None or not (folder / "adapter.json").exists():
        return None
    config = read_adapter_config(folder)
    return (
        f"{'with' if config.rotate_v else 'no'} V rotation, {'with' if config.rotate_u else 'no'} U rotation, "
        f"S scaling '{config.scale_mode}', '{config.basis}' bases, ReprPO objective '{objective}'"
    )


def seed_mean_profiles(run: Path, rows: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per main method: its value profile over seeds (`values.mean_profile`: the mean effect, and ``beats_null``
    where every seed's effect beats its label-permutation null)."""
    profiles: dict[str, pd.DataFrame] = {}
    for method, group in rows[rows["study"] == "main"].groupby("method", sort=False):
        paths = [job_file(run, PROFILES, "main", method, seed) for seed in group["seed"]]
        frames = [pd.read_csv(path) for path in paths if path.exists()]
        if frames:
            profiles[method] = mean_profile(frames)
    return profiles


def marked_transfer(transfer: pd.DataFrame, profiles: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The transfer table as written: each cell's effect, with ``*`` where it beats its null in every seed."""
    beats = transfer_beats_null(profiles, transfer.index)
    shown = transfer.copy().astype(object)
    for method in transfer.columns.drop("n_items"):
        marks = beats[method] if method in beats else pd.Series(pd.NA, index=transfer.index)
        shown[method] = [
            "–" if pd.isna(v) else f"{v:.3g}" + ("*" if not pd.isna(m) and bool(m) else "") for v, m in zip(transfer[method], marks)
        ]
    return shown


def figure1(run: Path, rows: pd.DataFrame, target: str) -> go.Figure | None:
    """Dose-response of the main methods on the target's items (first seed of the trainable ones)."""
    curves = {}
    labels = target_labels(run, target)
    for method, group in rows[rows["study"] == "main"].groupby("method", sort=False):
        path = job_file(run, DOSES, "main", method, group["seed"].iloc[0])
        if path.exists() and method != "prompting":
            dose = pd.read_csv(path)
            dose = dose[dose["item"].isin(labels)].copy()
            dose[readout_column(dose)] = dose["logratio"] * dose["item"].map(labels)
            curves[method] = dose
    return plots.dose_curves(curves, readout_label=f"{target} readout") if curves else None


def figure2(rows: pd.DataFrame) -> go.Figure | None:
    depth = aggregate(rows[rows["study"] == "depth"])
    if depth.empty:
        return None
    fig = go.Figure(
        go.Bar(
            x=depth["method"],
            y=depth["effect"],
            marker_color=PALETTE[0],
            error_y=dict(type="data", array=depth.get("effect_sd", pd.Series(0, index=depth.index)).fillna(0)),
        )
    )
    fig.add_hline(y=0, line=dict(color="grey", dash="dot", width=1))
    fig.update_xaxes(title_text="InnerPiSSA at one layer (depth fraction and index)")
    fig.update_yaxes(title_text="effect on the target value (nats per unit c)")
    return style(fig, "Effect by layer depth (error bars: SD over seeds)", height=440, width=760)


def write_paper(run: str | Path, out: str | Path | None = None, formats: Sequence[str] = ("html", "png", "svg")) -> list[Path]:
    """Write every table and figure of an experiment folder into ``out`` (default: the folder itself), with
    what exists: ``table1.md`` ends with what is missing (`missing_runs`: failed runs, runs without an effect)."""
    run = Path(run)
    out = Path(out) if out is not None else run
    rows = read_runs(run)
    config = read_config(run)
    target = config.get("target", "honesty")
    main = table1(run, rows, target)
    written = write_table(
        out / "table1",
        main,
        TABLE1_COLUMNS,
        table1_caption(target, config.get("cost_budget"), main),
        note="\n\n".join(missing_runs(run)),
        shown=shown_table1(main),
    )
    objective = config.get("objective", UNRECORDED_MEANT["objective"])  # a run recorded before the option trained the gap
    t2, note = table2(rows, full_settings(run, config.get("seeds") or [], objective))
    written += write_table(
        out / "table2", t2, TABLE2_COLUMNS, "Ablations of InnerPiSSA (test items)", note=note, shown=compact_methods(t2, ("drop_vs_full",))
    )
    profiles = seed_mean_profiles(run, rows)
    figures: dict[Path, go.Figure] = {}
    transfer = transfer_table(profiles) if profiles else pd.DataFrame()
    if len(transfer):
        written += write_table(
            out / "transfer",
            transfer.reset_index().rename(columns={"index": "value"}),
            None,
            f"Transfer: effect of {target} steering on every value (nats per unit c; * beats its label-permutation null in every seed)",
            shown=marked_transfer(transfer, profiles).reset_index().rename(columns={"index": "value"}),
        )
        figures[out / "transfer"] = transfer_figure(transfer, beats=transfer_beats_null(profiles, transfer.index))
    costs = main.dropna(subset=["effect"])
    if len(costs):
        figures[out / "pareto"] = pareto_figure(costs)
    for name, figure in (("figure1_dose", figure1(run, rows, target)), ("figure2_depth", figure2(rows))):
        if figure is not None:
            figures[out / name] = figure
    history = job_file(run, HISTORIES, "main", "InnerPiSSA", config["seeds"][0]) if config.get("seeds") else None
    if history is not None and history.exists():
        figures[out / "training_curves"] = plots.training_curves(pd.read_csv(history))
    return written + plots.save_figures(figures, formats) + [write_paper_page(run, out, figures)]  # paper.html
