"""steering: finding and applying steering directions, and adapters that steer.

Example:
    import steering
    d = steering.compute("pca_diff", acts, 12, "resid")
    with steering.applied(model, d, 1.5):           # any Steerable: Direction, InnerPiSSA, LoRA, Prompting
        ids = probes.torch_module(model).generate(**inputs, max_new_tokens=20)
"""

from . import adapters, directions, formats
from .adapters import (
    AdapterHandle,
    InnerPiSSA,
    LoraHandle,
    ReprPOConfig,
    TrainResult,
    attach_innerpissa,
    attach_lora,
    export_peft,
    load_innerpissa,
    load_lora,
    train_reprpo,
)
from .calibrate import calibrate
from .directions import METHODS, Direction, compute, load_directions, register, save_directions
from .formats import (
    export_easysteer,
    export_gguf,
    export_lm_eval,
    export_neuronpedia,
    from_pretrained,
    import_easysteer,
    import_gguf,
    import_neuronpedia,
    push_to_hub,
    save_pretrained,
)
from .intervene import orthogonalize_weights, steer
from .modes import MODES, Condition, calibrate_condition
from .plans import Prompting, Steering, applied, as_steerable, in_mode
from .steerable import Coeff, Steerable, load_steerable, register_loader

__all__ = [
    "METHODS",
    "MODES",
    "AdapterHandle",
    "Coeff",
    "Condition",
    "Direction",
    "InnerPiSSA",
    "LoraHandle",
    "Prompting",
    "ReprPOConfig",
    "Steerable",
    "Steering",
    "TrainResult",
    "adapters",
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
    "export_lm_eval",
    "export_neuronpedia",
    "export_peft",
    "formats",
    "from_pretrained",
    "import_easysteer",
    "import_gguf",
    "import_neuronpedia",
    "in_mode",
    "load_directions",
    "load_innerpissa",
    "load_lora",
    "load_steerable",
    "orthogonalize_weights",
    "push_to_hub",
    "register",
    "register_loader",
    "save_directions",
    "save_pretrained",
    "steer",
    "train_reprpo",
]
