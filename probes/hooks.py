"""Plain forward hooks: the local fast path for reading and editing module outputs.

nnsight is how steerscope expresses traces that may travel to NDIF; for local runs
with many modules per forward its per-module cost dominates on a GPU (about 0.2 ms
per envoy access). These helpers do the same work with plain PyTorch hooks on the
wrapped model, gather on the model's device, and copy to the host once per batch;
`probes.collect` and the scorers use them whenever a run is local, and tests check
that both paths return identical tensors.

- `gather_last`: one forward, the last real positions of many modules, stopped after
  the last of them (the LM head never runs);
- `edit_outputs`: a context that edits module outputs in every forward inside it
  (baukit's edit-output callbacks, by dotted module path);
- `trace_modules`: record (and optionally edit) outputs for inspection.

Example:
    values = gather_last(model, batch, ["model.layers.3", "model.layers.3.mlp.up_proj"])
    with edit_outputs(model, {"model.layers.3.mlp": lambda output, inputs: output * 0}):
        logits = probes.torch_module(model)(**inputs).logits
    with trace_modules(model, ["model.layers.3.mlp.up_proj"]) as traces:
        probes.torch_module(model)(**inputs)
    traces["model.layers.3.mlp.up_proj"].output.shape
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .batching import Batch
from .module_output import module_hidden
from .sublayers import get_module, unwrap

OutputEdit = Callable[[Any, tuple], Any]  # (output, inputs) -> new output, or None to keep it


class StopForward(Exception):
    """Raised by the last hook of a capture: nothing after it is needed."""


def gather_last(model: Any, batch: Batch, paths: Sequence[str]) -> list[Tensor]:
    """Each module's output at each row's last ``tokens`` real positions, ``[b, tokens, features]`` per path,
    from one forward stopped after the last of them. ``paths`` must be in execution order."""
    torch_model = unwrap(model)
    device = next(torch_model.parameters()).device
    rows = torch.arange(len(batch.text_index), device=device)[:, None]
    positions = batch.last_positions.to(device)
    gathered: list[Tensor] = []
    last = paths[-1]

    def hook_for(path: str):
        def hook(module: Any, args: tuple, output: Any) -> None:
            hidden = module_hidden(output)
            gathered.append(hidden[rows, positions])  # advanced indexing copies: the full output can be freed
            if path == last:
                raise StopForward

        return hook

    handles = [get_module(model, path).register_forward_hook(hook_for(path)) for path in paths]
    try:
        with torch.inference_mode():
            torch_model(**batch.model_inputs(device))
    except StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return gathered


def gather_to_host(gathered: list[Tensor], dtype: torch.dtype) -> list[Tensor]:
    """One copy to the host for a whole batch: concatenate on the device, copy once (pinned when on CUDA)."""
    widths = [t.shape[-1] for t in gathered]
    joined = torch.cat([t.to(dtype) for t in gathered], dim=-1)
    if joined.device.type == "cuda":
        host = torch.empty(joined.shape, dtype=dtype, pin_memory=True)
        host.copy_(joined, non_blocking=True)
        torch.cuda.current_stream(joined.device).synchronize()
    else:
        host = joined
    return list(host.split(widths, dim=-1))


@contextmanager
def edit_outputs(model: Any, edits: Mapping[str, OutputEdit]) -> Iterator[None]:
    """Apply ``edit(output, inputs)`` to each named module's output in every forward inside the block."""

    def hook_for(edit: OutputEdit):
        def hook(module: Any, args: tuple, output: Any) -> Any:
            return edit(output, args)

        return hook

    handles = [get_module(model, path).register_forward_hook(hook_for(edit)) for path, edit in edits.items()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


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
    """Record (and optionally edit, baukit style: ``edit_output(output, name)``) the outputs of named modules.

    ``retain_grad`` keeps the live output and calls ``retain_grad()`` on it, so ``traces[name].output.grad``
    is filled after ``backward()``; ``clone``/``detach`` default to a detached copy otherwise.
    """
    detach = not retain_grad if detach is None else detach
    clone = clone and not retain_grad
    traces = {name: Trace() for name in names}

    def edit_for(name: str) -> OutputEdit:
        def edit(output: Any, inputs: tuple) -> Any:
            if edit_output is not None:
                edited = edit_output(output, name)
                output = output if edited is None else edited
            if retain_grad and module_hidden(output).requires_grad:
                module_hidden(output).retain_grad()
            if retain_output:
                traces[name].output = keep(output, clone, detach)
            if retain_input:
                traces[name].input = keep(inputs[0] if len(inputs) == 1 else inputs, clone, detach)
            return output

        return edit

    with edit_outputs(model, {name: edit_for(name) for name in names}):
        yield traces
