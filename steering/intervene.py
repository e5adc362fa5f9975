"""Apply steering directions with a coefficient c, during traces, forwards and generation.

``with steer(model, directions, c):`` installs edit-output callbacks (baukit
style) on the sublayers' modules, so every forward inside the block is steered:
nnsight ``trace`` and ``generate`` (every position, every generated token, KV
cache on) and plain transformers calls alike.

- activation directions: ``h ← h + c·s·v`` on the sublayer output;
- U-space directions: ``h ← h + c·s·U diag(δs) Vᵀ x`` with ``x`` the weight's
  input, computed factored as ``((x @ V) ⊙ δs) @ Uᵀ`` (ΔW is never built).

``c`` may be a float or a tensor with one value per batch row, so a whole
coefficient sweep runs as one batched forward.

Reading ``.output`` of the steered module itself inside an nnsight trace shows
its value before the edit (nnsight serves it inside ``forward``; the edit is a
forward hook); every later module sees the steered value.

Example:
    >>> with steer(model, direction, 2.0):
    ...     with model.generate(prompt, max_new_tokens=20) as tracer:
    ...         ids = tracer.result.save()
    >>> coeffs = torch.tensor([-1.0, 0.0, 1.0]).repeat_interleave(len(prompts))
    >>> with steer(model, direction, coeffs):   # one batched forward for three doses
    ...     logits = model._module(**batch).logits
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

import probes
from probes import sublayers as sl

from .directions import Direction

Coeff = float | Sequence[float] | Float[Tensor, "batch"]


def coefficient_tensor(coeff: Coeff, batch: int, like: Tensor) -> Tensor:
    """``c`` broadcastable over ``[batch, seq, d]``."""
    c = torch.as_tensor(coeff, dtype=like.dtype, device=like.device)
    if c.ndim == 0:
        return c
    if c.ndim != 1 or c.shape[0] != batch:
        raise ValueError(f"A per-row coefficient tensor must have one value per batch row ({batch}); got shape {tuple(c.shape)}.")
    return c[:, None, None]


def edit_hidden(output: Any, edit) -> Any:
    """Apply ``edit(hs) -> hs`` to a module output (tensor or tuple whose first item is the hidden state)."""
    if isinstance(output, tuple):
        return (edit(output[0]), *output[1:])
    return edit(output)


def additive_hook(direction: Direction, sublayer: sl.Sublayer, coeff: Coeff, form_scale: float):
    vector = direction.vector

    def hook(module, args, output):
        def edit(hs: Tensor) -> Tensor:
            c = coefficient_tensor(coeff, hs.shape[0], hs)
            step = c * form_scale * vector.to(hs.device, hs.dtype)
            return hs + (step if sublayer.fused is None else fused_delta(hs, sublayer.fused, step))

        return edit_hidden(output, edit)

    return hook


def fused_delta(hs: Tensor, fused: sl.FusedSlice, step: Tensor) -> Tensor:
    """A zero tensor shaped like a fused q/k/v output with ``step`` in this slice's features."""
    parts = [torch.zeros_like(hs[..., : hs.shape[-1] // 3]) for _ in range(3)]
    parts[fused.index] = step.expand_as(parts[fused.index]).to(hs.dtype)
    if fused.layout == "concat":
        return torch.cat(parts, dim=-1)
    heads = fused.n_heads
    per_head = [p.unflatten(-1, (heads, -1)) for p in parts]
    return torch.cat(per_head, dim=-1).flatten(-2)


def weight_space_hook(direction: Direction, sublayer: sl.Sublayer, basis: probes.WeightSVD, coeff: Coeff, form_scale: float):
    coords = direction.coords

    def hook(module, args, output):
        x = args[0]

        def edit(hs: Tensor) -> Tensor:
            c = coefficient_tensor(coeff, hs.shape[0], hs)
            V = basis.V.to(hs.device, hs.dtype)
            U = basis.U.to(hs.device, hs.dtype)
            step = ((x.to(hs.dtype) @ V) * coords.to(hs.device, hs.dtype)) @ U.T  # U diag(δs) Vᵀ x, factored
            step = c * form_scale * step
            return hs + (step if sublayer.fused is None else fused_delta(hs, sublayer.fused, step))

        return edit_hidden(output, edit)

    return hook


@contextmanager
def steer(model: Any, directions: Direction | Sequence[Direction], coeff: Coeff, *, scale: float | None = None) -> Iterator[None]:
    """Steer ``model`` with ``directions`` at coefficient ``coeff`` inside the block.

    Args:
        directions: one `Direction` or several (applied together, same ``coeff``).
        coeff: a float, or one value per batch row (a batched dose sweep).
        scale: override each direction's own ``scale`` (the size of a c = 1 step).

    c = 0 is exactly the unsteered model (the hooks add zero).
    """
    directions = [directions] if isinstance(directions, Direction) else list(directions)
    handles = []
    try:
        for direction in directions:
            sublayer = sl.resolve(model, direction.layer, direction.kind)
            step_scale = direction.scale if scale is None else scale
            if direction.space == "uspace":
                basis_kind = direction.meta.get("basis_kind", direction.kind)
                basis = probes.weight_svd(model, direction.layer, basis_kind)
                weight_sublayer = sl.resolve(model, direction.layer, basis_kind)
                module = sl.get_module(model, weight_sublayer.weight_path)
                hook = weight_space_hook(direction, weight_sublayer, basis, coeff, step_scale)
            else:
                module = sl.get_module(model, sublayer.path)
                hook = additive_hook(direction, sublayer, coeff, step_scale)
            handles.append(module.register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()
