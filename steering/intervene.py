"""Apply steering directions with a coefficient c, during traces, forwards and generation.

``with steer(model, directions, c):`` installs edit-output callbacks (baukit
style) on the sublayers' modules, so every forward inside the block is steered:
nnsight ``trace`` and ``generate`` (every position, every generated token, KV
cache on) and plain transformers calls alike.

- activation directions: ``h ← h + c·s·v`` on the sublayer output;
- U-space directions: ``h ← h + c·s·U diag(δs) Vᵀ x`` with ``x`` the weight's
  input, computed factored as ``((x @ V) ⊙ δs) @ Uᵀ`` (ΔW is never built);
- ``mode="ablate"`` / ``"clamp"`` and ``condition=`` (CAST): ``h + c·(α + β·(h·û))·û``, gated per
  position (`steering.modes`); ``positions=`` chooses prompt, generated or sliced positions, the
  same with and without the KV cache (`steering.positions`).

``c`` may be a float or a tensor with one value per batch row, so a whole
coefficient sweep runs as one batched forward.

Locally the edits are forward hooks. Reading ``.output`` of the steered module
itself inside an nnsight trace shows its value before the edit (nnsight serves
it inside ``forward``; the hook runs after); every later module sees the steered
value. With ``remote=True`` (or a model loaded with ``remote=True``) the same
edits are registered as nnsight edits instead, which travel with each trace to
NDIF; a forward hook never leaves this process.

Example:
    with steer(model, direction, 2.0):
        with model.generate(prompt, max_new_tokens=20) as tracer:
            ids = tracer.result.save()
    coeffs = torch.tensor([-1.0, 0.0, 1.0]).repeat_interleave(len(prompts))
    with steer(model, direction, coeffs):   # one batched forward for three doses
        logits = probes.torch_module(model)(**batch).logits
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

import probes
from probes import sublayers as sl
from probes import tracing
from probes.module_output import edit_hidden
from probes.remote import Remote, has_weights, resolve_remote
from probes.tracing import Iterations

from .directions import Direction
from .modes import Condition, apply_mode, check_mode, check_target, mode_coefficients
from .positions import Positions, PositionTracker, check_positions
from .steerable import Coeff, check_coefficients


def coefficient_tensor(coeff: Coeff, batch: int, like: Tensor) -> Tensor:
    """``c`` broadcastable over ``[batch, seq, d]``."""
    c = torch.as_tensor(coeff, dtype=like.dtype, device=like.device)
    if c.ndim == 0:
        return c
    if c.ndim != 1 or c.shape[0] != batch:
        raise ValueError(f"A per-row coefficient tensor must have one value per batch row ({batch}); got shape {tuple(c.shape)}.")
    return c[:, None, None]


@dataclass(frozen=True)
class SteeringEdit:
    """What one direction adds to one module's output per unit of c (its ``scale`` folded in).

    Activation form: ``delta = step``. Weight-space form: ``delta = ((x @ V) ⊙ coords) @ U_out``
    with ``x`` the module's input. For a fused q/k/v module, ``step`` and ``U_out``
    already place the slice in the fused output, so applying an edit is one formula
    for every architecture, here (forward hooks) and on NDIF (nnsight edits).
    """

    path: str
    step: Float[Tensor, " d_out"] | None = None
    V: Float[Tensor, "d_in r"] | None = None
    coords: Float[Tensor, "*rows r"] | None = None  # one set per row allowed (broadcast over positions)
    U_out: Float[Tensor, "r d_out"] | None = None
    unit: Float[Tensor, " d_out"] | None = None  # set for ablate, clamp and conditional modes (see steering.modes)
    alpha: float = 0.0
    beta: float = 0.0
    gate_unit: Float[Tensor, " d_out"] | None = None
    threshold: float = 0.0

    def apply(self, hs: Tensor, x: Tensor | None, coeff: Tensor) -> Tensor:
        """``hs`` changed at coefficient ``coeff`` (broadcastable over ``hs``)."""
        if self.unit is None:
            return hs + coeff * self.delta(hs, x)
        return apply_mode(hs, coeff, self.unit, self.alpha, self.beta, self.gate_unit, self.threshold)

    def delta(self, hs: Tensor, x: Tensor | None) -> Tensor:
        if self.step is not None:
            return self.step.to(hs.device, hs.dtype)
        if x is None or self.V is None or self.coords is None or self.U_out is None:
            raise ValueError(f"A weight-space edit of {self.path} needs the module input and its V, coords and U_out.")
        V, coords, U_out = (t.to(hs.device, hs.dtype) for t in (self.V, self.coords, self.U_out))
        return ((x.to(hs.dtype) @ V) * coords) @ U_out


def check_fits(model: Any, direction: Direction) -> sl.Sublayer:
    """The sublayer ``direction`` steers, after checking the model has it and its width matches."""
    if not isinstance(direction, Direction):
        raise TypeError(f"Expected a steering.Direction, got {type(direction).__name__}.")
    try:
        sublayer = sl.resolve(model, direction.layer, direction.kind)
    except ValueError as error:
        raise ValueError(f"{direction.name} cannot steer this model: {error}") from None
    width = sl.output_width(model, sublayer)
    if direction.space == "activation" and width is not None and direction.vector.shape[-1] != width:
        raise ValueError(
            f"{direction.name} has {direction.vector.shape[-1]} features but {direction.kind!r} at layer "
            f"{direction.layer} of this model has {width}: was it computed on another model?"
        )
    if not torch.isfinite(direction.vector).all() or not math.isfinite(direction.scale):
        raise ValueError(f"{direction.name} holds NaN or infinite values.")
    return sublayer


def steering_edit(
    model: Any,
    direction: Direction,
    scale: float | None = None,
    *,
    mode: str = "add",
    target: float | None = None,
    condition: Condition | None = None,
) -> SteeringEdit:
    """The `SteeringEdit` of ``direction`` on ``model``; ``scale`` overrides ``direction.scale``.

    ``mode``, ``target`` and ``condition`` are described in `steering.modes`."""
    check_fits(model, direction)
    check_mode(mode)
    step_scale = direction.scale if scale is None else scale
    if mode != "add" or condition is not None:
        return mode_edit(model, direction, step_scale, mode, target, condition)
    if direction.space == "uspace":
        basis_kind = direction.meta.get("basis_kind", direction.kind)  # files written before kind said it
        basis = probes.weight_svd(model, direction.layer, basis_kind)
        sublayer = sl.resolve(model, direction.layer, basis_kind)
        if direction.coords is None or direction.coords.shape[-1] != basis.rank:
            raise ValueError(
                f"{direction.name} has {None if direction.coords is None else direction.coords.shape[-1]} U-space "
                f"coordinates but the {basis_kind!r} weight at layer {direction.layer} has {basis.rank} components: "
                "was it computed on another model?"
            )
        U_out = sublayer.place(basis.U.T)
        return SteeringEdit(sl.weight_path_of(sublayer), V=basis.V.float(), coords=direction.coords.float() * step_scale, U_out=U_out)
    sublayer = sl.resolve(model, direction.layer, direction.kind)
    return SteeringEdit(sublayer.path, step=sublayer.place(direction.vector.float() * step_scale))


def mode_edit(model: Any, direction: Direction, scale: float, mode: str, target: float | None, condition: Condition | None) -> SteeringEdit:
    """The edit of an ablate / clamp / conditional mode: ``h + c·(α + β·(h·û))·û`` where ``h·ŵ > τ``."""
    if direction.space != "activation":
        raise NotImplementedError(
            f"mode={mode!r}{' with a condition' if condition else ''} needs an activation-space direction; "
            f"{direction.name} is {direction.space}: use mode='add' without a condition, or a method such as mean_diff."
        )
    sublayer = sl.resolve(model, direction.layer, direction.kind)
    alpha, beta = mode_coefficients(mode, scale, target)
    gate = None
    if condition is not None:
        other = condition.direction
        if (other.layer, other.kind, other.space) != (direction.layer, direction.kind, "activation"):
            raise ValueError(
                f"The condition {other.name} must read the module it gates ({direction.layer}, {direction.kind!r}, activation space)."
            )
        gate = sublayer.place(torch.nn.functional.normalize(other.vector.float(), dim=-1))
    unit = sublayer.place(torch.nn.functional.normalize(direction.vector.float(), dim=-1))
    threshold = condition.threshold if condition is not None else 0.0
    return SteeringEdit(sublayer.path, unit=unit, alpha=alpha, beta=beta, gate_unit=gate, threshold=threshold)


def steering_hook(edit: SteeringEdit, coeff: Coeff, tracker: PositionTracker | None = None):
    """A forward hook applying ``edit`` at coefficient ``coeff`` to the module's output (at ``tracker``'s positions)."""

    def hook(module, args, output):
        def apply(hs: Tensor) -> Tensor:
            c = coefficient_tensor(coeff, hs.shape[0], hs)
            if tracker is not None:
                c = c * tracker.mask(hs.shape[1], hs)
            return edit.apply(hs, args[0] if args else None, c)

        return edit_hidden(output, apply)

    return hook


def nnsight_edit(model: Any, edit: SteeringEdit, coeff: Coeff, positions: Positions = "all") -> list:
    """Register ``c · delta`` as an nnsight edit, replayed at every forward of every later trace.

    Unlike a forward hook, an nnsight edit travels with a remote trace to NDIF, so
    its block uses only torch and the module's envoy (the server has no steerscope).
    ``positions`` (see `steering.positions`) is tracked from the step index: step 0 is the
    prompt, step t the t-th generated token. Returns the edit's mediators, for
    `probes.tracing.remove_edits`.
    """
    # plain values for the traced block: "all", "prompt", "generated", "slice" or "from" (the k-th last prompt token on)
    which = "slice" if isinstance(positions, slice) else "from" if isinstance(positions, int) else str(positions)
    k = positions if isinstance(positions, int) else 0
    lo, hi, stride = (positions.start, positions.stop, positions.step) if isinstance(positions, slice) else (None, None, None)
    envoy = model.get(edit.path)
    c = torch.as_tensor(coeff, dtype=torch.float32)
    c = c[:, None, None] if c.ndim == 1 else c
    step, V, coords, U_out = edit.step, edit.V, edit.coords, edit.U_out
    unit, alpha, beta, gate, threshold = edit.unit, edit.alpha, edit.beta, edit.gate_unit, edit.threshold
    if unit is None and step is None and (V is None or coords is None or U_out is None):
        raise ValueError(f"The edit of {edit.path} has neither a step nor the factors of a weight-space step.")
    before = len(tracing.edits(model))
    with model.edit(inplace=True):
        prompt_length = 0
        for index in Iterations()[:]:  # every forward, each generated token too (see probes.tracing)
            inputs = envoy.input if step is None and unit is None else None
            output = envoy.output
            hidden = output[0] if isinstance(output, tuple) else output
            if index == 0:
                prompt_length = hidden.shape[-2]
            if unit is not None:  # h + c·(α + β·(h·û))·û, where h·ŵ > τ (steering.modes)
                u = unit.to(hidden.device, hidden.dtype)
                delta = (alpha + beta * (hidden @ u)[..., None]) * u
                if gate is not None:
                    delta = delta * ((hidden @ gate.to(hidden.device, hidden.dtype))[..., None] > threshold).to(hidden.dtype)
            elif step is None:
                weight_step = (inputs.to(hidden.dtype) @ V.to(hidden.device, hidden.dtype)) * coords.to(hidden.device, hidden.dtype)  # type: ignore[union-attr]
                delta = weight_step @ U_out.to(hidden.device, hidden.dtype)  # type: ignore[union-attr]
            else:
                delta = step.to(hidden.device, hidden.dtype)
            if which != "all":  # absolute positions of this forward's columns, with or without the KV cache
                end = prompt_length + index
                absolute = torch.arange(end - hidden.shape[-2], end, device=hidden.device)
                if which == "prompt":
                    keep = absolute < prompt_length
                elif which == "generated":
                    keep = absolute >= prompt_length
                elif which == "from":
                    keep = absolute >= prompt_length - k
                else:
                    keep = torch.isin(absolute, torch.arange(end, device=hidden.device)[lo:hi:stride])
                delta = delta * keep.to(hidden.dtype)[:, None]
            steered = hidden + c.to(hidden.device, hidden.dtype) * delta
            envoy.output = (steered, *output[1:]) if isinstance(output, tuple) else steered
    return tracing.edits(model)[before:]


@contextmanager
def steer(
    model: Any,
    directions: Direction | Sequence[Direction],
    coeff: Coeff,
    *,
    mode: str = "add",
    target: float | None = None,
    condition: Condition | None = None,
    positions: Positions = "all",
    scale: float | None = None,
    remote: Remote | None = None,
) -> Iterator[None]:
    """Steer ``model`` with ``directions`` at coefficient ``coeff`` inside the block.

    Args:
        directions: one `Direction` or several (applied together, same ``coeff``).
        coeff: a float, or one value per batch row (a batched dose sweep).
        mode: ``"add"`` (``h + c·s·v``), ``"ablate"`` (``h − c·(h·v)v``) or ``"clamp"``
            (``h + c·(target − h·v)v``, ``target`` defaulting to ``s``); see `steering.modes`.
        condition: a `steering.Condition` (CAST): change only positions whose projection on its
            direction at the same module exceeds its threshold (`steering.calibrate_condition`).
        positions: ``"all"``, ``"prompt"``, ``"generated"``, an int k (from the k-th last prompt token
            on) or a slice of absolute positions; the same with and without the KV cache (`steering.positions`).
        scale: override each direction's own ``scale`` (the size of a c = 1 step).
        remote: ``True``/``"local"`` register the edits as nnsight edits, which ride
            along with remote traces to NDIF (only nnsight traces see them);
            ``False`` uses forward hooks (every forward sees them, plain transformers
            calls included). ``None`` follows ``load_model(..., remote=)``.

    c = 0 is exactly the unsteered model in every mode (the edits add zero).
    """
    directions = [directions] if isinstance(directions, Direction) else list(directions)
    if not directions:
        raise ValueError("steer was given no directions: pass a steering.Direction or a non-empty list of them.")
    check_coefficients(coeff)
    check_target(check_mode(mode), target)
    if scale is not None and not (isinstance(scale, (int, float)) and math.isfinite(scale)):
        raise ValueError(f"scale={scale!r}: give a finite number (the size of a c = 1 step), or None for each direction's own.")
    edits = [steering_edit(model, direction, scale, mode=mode, target=target, condition=condition) for direction in directions]
    positions = check_positions(positions)
    tracker = None if positions == "all" else PositionTracker(positions)
    if resolve_remote(model, remote):
        added: list = []
        try:
            for edit in edits:
                added += nnsight_edit(model, edit, coeff, positions)
            with warnings.catch_warnings():
                # The edit's open "every forward" loop ends with each run, by design.
                warnings.filterwarnings("ignore", message=".*was never reached: the loop asked for a step", category=UserWarning)
                yield
        finally:
            tracing.remove_edits(model, added)
        return
    handles = []
    try:
        if tracker is not None:
            handles.append(sl.unwrap(model).register_forward_pre_hook(tracker.pre_hook, with_kwargs=True))
        for edit in edits:
            handles.append(sl.get_module(model, edit.path).register_forward_hook(steering_hook(edit, coeff, tracker)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def orthogonalize_weights(model, direction: Direction, coeff: float = 1.0) -> None:
    """Bake ``ablate`` at ``coeff`` into the weights, in place: ``W ← (I − c·ûûᵀ) W`` and ``b ← (I − c·ûûᵀ) b``
    of the linear module that writes ``direction``'s sublayer (so its output never carries ``û`` at c = 1).

    Equal to ``steer(model, direction, coeff, mode="ablate")`` at that module, with no hook, so the model
    can be saved as an "orthogonalised weights" checkpoint (``probes.torch_module(model).save_pretrained``).
    ``resid`` has no single writing weight: ablate the ``o`` and ``down`` directions, or use the hook.

    Example:
        orthogonalize_weights(model, steering.compute("mean_diff", acts, 14, "o"))
    """
    given = coeff
    try:
        coeff = float(coeff)
    except (TypeError, ValueError, RuntimeError):
        coeff = math.nan
    if not math.isfinite(coeff):
        raise ValueError(f"coeff={given!r}: give a finite number (1.0 removes the component along the direction).")
    if not has_weights(model):
        raise NotImplementedError(
            f"orthogonalize_weights({direction.name}) rewrites the weights in this process, but this model was loaded "
            "for remote execution (its weights live on NDIF), so nothing would change there. Ablate remotely with "
            f"steer(model, direction, {coeff:g}, mode='ablate'), or load the model locally "
            "(probes.load_model(name, device_map='auto', dtype='bfloat16')) to bake it into the weights."
        )
    sublayer = check_fits(model, direction)
    module = sl.get_module(model, sublayer.path)
    if direction.space != "activation" or not isinstance(module, torch.nn.Linear):
        raise NotImplementedError(
            f"{direction.name}: weight-space ablation needs an activation direction at a kind written by one "
            f"nn.Linear (q, k, v, o, gate, up, down of most families); {sublayer.path} is {type(module).__name__}. "
            "Use steer(..., mode='ablate') instead."
        )
    unit = sublayer.place(torch.nn.functional.normalize(direction.vector.float(), dim=-1))
    with torch.no_grad():
        u = unit.to(module.weight.device, torch.float32)
        weight = module.weight.float()
        module.weight.copy_((weight - coeff * torch.outer(u, u @ weight)).to(module.weight.dtype))
        if module.bias is not None:
            bias = module.bias.float()
            module.bias.copy_((bias - coeff * u * (u @ bias)).to(module.bias.dtype))
