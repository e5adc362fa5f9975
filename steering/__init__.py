"""steering: finding and applying steering directions, and adapters that steer.

Example:
    >>> import steering
    >>> d = steering.compute("pca_diff", acts, 12, "resid")
    >>> with steering.applied(model, d, 1.5):           # any Steerable: Direction, InnerPiSSA, LoRA, Prompting
    ...     ids = probes.torch_module(model).generate(**inputs, max_new_tokens=20)
"""

from . import directions, fisher  # noqa: F401  (fisher registers the gradient methods)
from .adapter import InnerPiSSA, attach_innerpissa
from .adapter_files import load_innerpissa
from .calibrate import calibrate
from .directions import METHODS, Direction, compute, load_directions, register, save_directions
from .export import export_gguf, import_gguf
from .formats import export_easysteer, export_neuronpedia, import_easysteer, import_neuronpedia
from .hf_folders import from_pretrained, push_to_hub, save_pretrained
from .intervene import steer
from .lora import LoraHandle, attach_lora, load_lora
from .modes import MODES, Condition, calibrate_condition, orthogonalize_weights
from .peft_export import export_peft
from .steerable import AdapterHandle, Prompting, Steerable, Steering, applied, as_steerable, load_steerable
from .train import ReprPOConfig, TrainResult, train_reprpo

__all__ = [
    "METHODS",
    "MODES",
    "AdapterHandle",
    "Condition",
    "Direction",
    "InnerPiSSA",
    "LoraHandle",
    "Prompting",
    "ReprPOConfig",
    "Steerable",
    "Steering",
    "TrainResult",
    "applied",
    "as_steerable",
    "attach_innerpissa",
    "attach_lora",
    "calibrate",
    "calibrate_condition",
    "compute",
    "directions",
    "export_easysteer",
    "export_gguf",
    "export_neuronpedia",
    "export_peft",
    "from_pretrained",
    "import_easysteer",
    "import_gguf",
    "import_neuronpedia",
    "load_directions",
    "load_innerpissa",
    "load_lora",
    "load_steerable",
    "orthogonalize_weights",
    "push_to_hub",
    "register",
    "save_directions",
    "save_pretrained",
    "steer",
    "train_reprpo",
]
