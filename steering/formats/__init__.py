"""Formats: what steerscope finds, in the files other tools read.

`gguf` writes and reads llama.cpp / repeng control vectors; `steering_tools` the
Neuronpedia vector upload and EasySteer's vLLM request folder; `lm_eval_steer` lm-eval-harness's
``steered`` model file; `hub` the Hugging Face
folder of any steerable (``save_pretrained`` / ``from_pretrained`` / ``push_to_hub``).
Adapters leave as PEFT LoRA folders (`steering.adapters.peft_folders`). This is the last
stage: nothing else in steerscope imports it.

Example:
    >>> from steering.formats import export_gguf, export_neuronpedia, save_pretrained
"""

from .gguf import export_gguf, import_gguf
from .hub import from_pretrained, push_to_hub, save_pretrained
from .lm_eval_steer import export_lm_eval
from .steering_tools import export_easysteer, export_neuronpedia, import_easysteer, import_neuronpedia

__all__ = [
    "export_easysteer",
    "export_gguf",
    "export_lm_eval",
    "export_neuronpedia",
    "from_pretrained",
    "import_easysteer",
    "import_gguf",
    "import_neuronpedia",
    "push_to_hub",
    "save_pretrained",
]
