"""Cheap fingerprints of weights: a hash of a fixed, evenly spaced sample of each tensor.

Hashing every byte of a 4B model's weights on each lookup costs seconds (0.12 s
per weight on a GPU box); a sample of 1,024 values per tensor costs one small
gather. Fine-tuning, merging an adapter or loading another checkpoint changes
essentially every value, so it changes the sample too.

Example:
    tensor_fingerprint(probes.torch_module(model).lm_head.weight)
    # 'a3f09c1e22b87d41'
    model_fingerprint(model)        # over every parameter and buffer
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from torch import Tensor

SAMPLES = 1024


def sample_indices(numel: int, samples: int = SAMPLES) -> Tensor:
    """Evenly spaced indices into ``numel`` values (float64: float32 rounds past the end above 2²⁴)."""
    last = max(numel - 1, 0)
    spaced = torch.linspace(0, last, min(samples, max(numel, 1)), dtype=torch.float64).round().long()
    return spaced.clamp(0, last).unique()


def tensor_fingerprint(tensor: Tensor, samples: int = SAMPLES) -> str:
    """16 hex digits from the tensor's shape, dtype and an evenly spaced sample of its values."""
    digest = hashlib.blake2b(f"{tuple(tensor.shape)}|{tensor.dtype}".encode(), digest_size=8)
    if tensor.device.type == "meta":
        raise ValueError("A tensor on the meta device has no values to fingerprint (the model's weights are elsewhere).")
    flat = tensor.detach().reshape(-1)
    if flat.numel():
        values = flat[sample_indices(flat.numel(), samples).to(flat.device)].to("cpu", torch.float64)
        digest.update(values.numpy().tobytes())
    return digest.hexdigest()


def model_fingerprint(model: Any) -> str:
    """A fingerprint of every parameter and buffer of ``model`` (by name), or of its name for a
    model whose weights live elsewhere (NDIF)."""
    from .model_handle import model_handle
    from .sublayers import unwrap

    torch_model = unwrap(model)
    state = torch_model.state_dict(keep_vars=True)
    if any(t.device.type == "meta" for t in state.values()):
        return "remote:" + (model_handle(model).model_id or "")
    digest = hashlib.blake2b(digest_size=8)
    for name, tensor in sorted(state.items()):
        digest.update(f"{name}={tensor_fingerprint(tensor)};".encode())
    return digest.hexdigest()
