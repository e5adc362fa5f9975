"""analysis: judging and showing, in four stages that follow the data (each imports only those before it).

`readouts` (items, the shipped sets, splits, the signed readout) → `measures` (dose-response, metrics,
value profiles, predictions, separation, monitoring; they draw nothing) → `studies` (the sweep and the
experiment, in run folders whose layout `studies.layout` owns) → `reports` (tables, figures, pages).
This face keeps the public names, and the module attributes notebooks used before the stages
(`analysis.items`, `analysis.score`, `analysis.dose`, `analysis.metrics`, `analysis.sweep`, ...);
`analysis.compare`, `analysis.figures`, `analysis.report` name the modules now called
`measures.evaluate`, `reports.regenerate` and `reports.sweep_report`.

Example:
    import analysis
    split = analysis.split_items(analysis.eval_items("honesty"), test_fraction=0.5, seed=0)
    df = analysis.dose_response(model, direction, split.test, coeffs=(-1, 0, 1))
    analysis.dose_metrics(df)["item_slope"]
    analysis.save_figure(analysis.plots.dose_curves({"pca_diff": df}), "figures/dose")
"""

from .measures import agreement, dose, metrics, predict, values
from .measures import evaluate as compare
from .measures.agreement import compare_directions
from .measures.dose import dose_response, unsteered_baseline
from .measures.metrics import dose_metrics, paired_changes
from .measures.monitor import monitor
from .measures.predict import predict_steerability
from .measures.separation import separation
from .readouts import daily_dilemmas, items, score
from .readouts.daily_dilemmas import for_value, load_daily_dilemmas, value_counts
from .readouts.items import ReadoutItem, dilemma, labelled_for, load_dilemmas, load_items
from .readouts.score import score_items, text_nll
from .readouts.sets import concept_items, controls, dilemmas, eval_items, moral_dilemmas, neutral_texts, sentiment_readouts
from .readouts.split import Split, split_items
from .reports import paper, plots
from .reports import regenerate as figures
from .reports import sweep_report as report
from .reports.monitor_plots import monitor_figure
from .reports.plots import save_figure
from .studies import experiment, run_folder, sweep
from .studies.sweep import sweep_steerability

__all__ = [
    "ReadoutItem",
    "Split",
    "agreement",
    "compare",
    "compare_directions",
    "concept_items",
    "controls",
    "daily_dilemmas",
    "dilemma",
    "dilemmas",
    "dose",
    "dose_metrics",
    "dose_response",
    "eval_items",
    "experiment",
    "figures",
    "for_value",
    "items",
    "labelled_for",
    "load_daily_dilemmas",
    "load_dilemmas",
    "load_items",
    "metrics",
    "monitor",
    "monitor_figure",
    "moral_dilemmas",
    "neutral_texts",
    "paired_changes",
    "paper",
    "plots",
    "predict",
    "predict_steerability",
    "report",
    "run_folder",
    "save_figure",
    "score",
    "score_items",
    "sentiment_readouts",
    "separation",
    "split_items",
    "sweep",
    "sweep_steerability",
    "text_nll",
    "unsteered_baseline",
    "value_counts",
    "values",
]
