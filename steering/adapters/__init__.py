"""Adapters: steering by changing weights, trained to steer.

`base` holds `AdapterHandle` (a coefficient per row, a sign, trainable parameters, an
exact detach with reference-counted freezing from `frozen`); `innerpissa` the
InnerPiSSA adapter (rotations and singular-value shifts in each weight's SVD basis)
and `innerpissa_files` its checked save and load; `lora` the PEFT LoRA baseline;
`peft_folders` any adapter as a PEFT LoRA folder at one c; `reprpo` trains an adapter
with ReprPO through traced interventions. Each type registers its loader with
`steering.register_loader`; what this stage hands on is a `Steerable` adapter that
`steering.applied` applies like any other.

Example:
    >>> from steering.adapters import AdapterHandle, InnerPiSSA, LoraHandle
    >>> issubclass(InnerPiSSA, AdapterHandle) and issubclass(LoraHandle, AdapterHandle)
    True
"""

from .base import AdapterHandle
from .innerpissa import AdapterConfig, InnerPiSSA, attach_innerpissa
from .innerpissa_files import load_innerpissa, read_adapter_config
from .lora import LoraHandle, attach_lora, load_lora
from .peft_folders import export_peft
from .reprpo import ReprPOConfig, TrainResult, default_loss_layer, train_reprpo

__all__ = [
    "AdapterConfig",
    "AdapterHandle",
    "InnerPiSSA",
    "LoraHandle",
    "ReprPOConfig",
    "TrainResult",
    "attach_innerpissa",
    "attach_lora",
    "default_loss_layer",
    "export_peft",
    "load_innerpissa",
    "load_lora",
    "read_adapter_config",
    "train_reprpo",
]
