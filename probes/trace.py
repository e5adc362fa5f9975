"""A baukit-style hook API for people who think in baukit terms (baukit itself is not on PyPI).

``with trace_modules(model, names, edit_output=fn) as traces:`` records each named
module's output (and optionally input) during every forward inside the block;
``edit_output(output, name)`` may return a replacement output, as in baukit's
``TraceDict``. Plain PyTorch forward hooks, so it works with or without nnsight.

Example:
    >>> names = ["model.layers.3.mlp.up_proj", "model.layers.5"]
    >>> with trace_modules(model, names) as traces:
    ...     model._module(**batch)
    >>> traces["model.layers.3.mlp.up_proj"].output.shape
    >>> def zero_mlp(output, name):
    ...     return output * 0
    >>> with trace_modules(model, ["model.layers.3.mlp"], edit_output=zero_mlp):
    ...     logits = model._module(**batch).logits
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch

from .sublayers import get_module, module_hidden


@dataclass
class Trace:
    """What one module saw in the last forward: its output and (if retained) input."""

    output: Any = None
    input: Any = None


def keep(value: Any, clone: bool, detach: bool) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.detach() if detach else value
        return value.clone() if clone else value
    if isinstance(value, (tuple, list)):
        return type(value)(keep(v, clone, detach) for v in value)
    return value


@contextmanager
def trace_modules(
    model: Any,
    names: Sequence[str],
    *,
    edit_output: Callable[[Any, str], Any] | None = None,
    retain_output: bool = True,
    retain_input: bool = False,
    retain_grad: bool = False,
    clone: bool = True,
    detach: bool | None = None,
) -> Iterator[dict[str, Trace]]:
    """Record (and optionally edit) the outputs of modules named by dotted paths.

    Args:
        names: dotted module paths, e.g. ``"model.layers.3.mlp.up_proj"``.
        edit_output: ``fn(output, name) -> output`` applied before recording.
        retain_output / retain_input: what to keep in each `Trace`.
        retain_grad: keep the live (attached) output and call ``retain_grad()`` on it, so
            ``traces[name].output.grad`` is filled after ``backward()``.
        clone, detach: copy / detach what is kept (defaults: clone, detach unless retain_grad).
    """
    detach = not retain_grad if detach is None else detach
    if retain_grad:
        clone = False
    traces = {name: Trace() for name in names}
    handles = []

    def hook_for(name: str):
        def hook(module, args, output):
            if edit_output is not None:
                edited = edit_output(output, name)
                output = output if edited is None else edited
            if retain_grad:
                hidden = module_hidden(output)
                if hidden.requires_grad:
                    hidden.retain_grad()
            if retain_output:
                traces[name].output = keep(output, clone, detach)
            if retain_input:
                traces[name].input = keep(args[0] if len(args) == 1 else args, clone, detach)
            return output

        return hook

    try:
        for name in names:
            handles.append(get_module(model, name).register_forward_hook(hook_for(name)))
        yield traces
    finally:
        for handle in handles:
            handle.remove()
