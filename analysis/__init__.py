"""analysis: judging and showing (separation, Yes/No scoring, dose-response, sweeps, figures).

Example:
    >>> import analysis
    >>> df = analysis.dose_response(model, direction, analysis.dilemmas(), coeffs=(-1, 0, 1))
    >>> analysis.dose_metrics(df)
    >>> analysis.save_figure(analysis.plots.dose_curves({"pca_diff": df}), "figures/dose")
"""

from . import compare, figures, plots, report
from .agreement import compare_directions
from .dose import dose_metrics, dose_response, unsteered_baseline
from .plots import save_figure
from .score import controls, dilemmas, load_daily_dilemmas, load_dilemmas, score_items, text_nll
from .separation import separation
from .sweep import sweep_steerability

__all__ = [
    "compare", "compare_directions", "figures", "report", "controls", "dilemmas", "dose_metrics", "dose_response", "load_daily_dilemmas",
    "load_dilemmas", "plots", "save_figure", "score_items", "separation", "sweep_steerability", "text_nll",
    "unsteered_baseline",
]
