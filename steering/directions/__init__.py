"""Directions: from captured activations to a calibrated `Direction` at one (layer, kind).

`direction` holds the `Direction` type and its safetensors files; `methods` the
registry (`register`) and the activation-space methods (mean difference, PCA,
logistic, random, U-space variants); `fisher` the gradient methods (Fisher natural
gradient, registered on import); `compute` runs a registered method, calibrates its sign
by majority vote and sets its scale to the typical pair gap. What this stage hands on is
a `Direction`: `steering.plans` and `steering.intervene` apply it, `steering.formats`
writes it for other tools.

Example:
    >>> import torch
    >>> from steering.directions import METHODS, Direction
    >>> {"mean_diff", "pca_diff", "fisher_cov_reg3"} <= set(METHODS)
    True
    >>> d = Direction(vector=torch.tensor([0.6, 0.8]), scale=2.0, layer=2, kind="resid", method="doc")
    >>> d.name, d.step.tolist()
    ('doc@L2.resid', [1.2000000476837158, 1.600000023841858])
"""

from . import fisher  # noqa: F401  (registers the gradient methods)
from .compute import compute, compute_many, sign_vote, state_set
from .direction import Direction, Vector, load_directions, save_directions
from .methods import (
    METHODS,
    NEEDS,
    DegenerateDirection,
    Method,
    MethodFn,
    MethodResult,
    StateSet,
    first_component,
    first_components,
    mean_diff,
    pca_diff,
    register,
    unit,
)

__all__ = [
    "METHODS",
    "NEEDS",
    "DegenerateDirection",
    "Direction",
    "Method",
    "MethodFn",
    "MethodResult",
    "StateSet",
    "Vector",
    "compute",
    "compute_many",
    "first_component",
    "first_components",
    "load_directions",
    "mean_diff",
    "pca_diff",
    "register",
    "save_directions",
    "sign_vote",
    "state_set",
    "unit",
]
