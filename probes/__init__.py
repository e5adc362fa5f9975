"""probes: getting numbers out of a model.

Example:
    import probes
    model = probes.load_model()                                   # embedded SmolLM2-135M
    pairs = probes.honesty_pairs(n=64, tokenizer=model.tokenizer, chat=True)
    acts = probes.collect(model, pairs, layers="all", sublayers=("resid", "up"))
    coords = probes.project(acts[10, "up"], probes.weight_svd(model, 10, "up"))
"""

from . import hooks, remote, shards, sublayers, tracing
from .activations import Activations
from .basis import WeightSVD, project, weight_svd
from .collect import collect
from .hooks import Trace, trace_modules
from .models import load_model, wrap
from .pairs import (
    ContrastivePair,
    as_pairs,
    concept_pairs,
    honesty_pairs,
    pairs_from_templates,
    sentiment_pairs,
)
from .sublayers import KINDS
from .tracing import torch_module

__all__ = [
    "KINDS",
    "Activations",
    "ContrastivePair",
    "Trace",
    "WeightSVD",
    "as_pairs",
    "collect",
    "concept_pairs",
    "honesty_pairs",
    "hooks",
    "load_model",
    "pairs_from_templates",
    "project",
    "remote",
    "sentiment_pairs",
    "shards",
    "sublayers",
    "torch_module",
    "trace_modules",
    "tracing",
    "weight_svd",
    "wrap",
]
