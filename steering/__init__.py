"""steering: finding and applying steering directions.

Example:
    >>> from steering import directions, steer
    >>> d = directions.compute("pca_diff", acts, 12, "resid")
    >>> with steer(model, d, 1.5):
    ...     ids = model._module.generate(**inputs, max_new_tokens=20)
"""

from . import directions, fisher  # noqa: F401  (fisher registers the gradient methods)
from .adapter import InnerPiSSA, attach_innerpissa, load_innerpissa
from .calibrate import calibrate
from .directions import METHODS, Direction, compute, load_directions, save_directions
from .export import export_gguf, import_gguf
from .intervene import steer
from .train import ReprPOConfig, TrainResult, train_reprpo

__all__ = ["METHODS", "Direction", "InnerPiSSA", "ReprPOConfig", "TrainResult", "attach_innerpissa", "calibrate",
           "compute", "directions", "export_gguf", "import_gguf", "load_directions", "load_innerpissa", "save_directions", "steer", "train_reprpo"]
