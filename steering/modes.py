"""The ways a direction changes a state: add, ablate, clamp, each optionally conditional.

With ``û`` the direction's unit vector (placed in its slice for a fused q/k/v module),
``s`` its scale, ``p = h·û`` the state's component along it and ``c`` the coefficient,
every mode is one formula, ``h ← h + c · (α + β·p) · û``:

============  ===================================  =======  ====
mode          effect at c = 1                       α        β
============  ===================================  =======  ====
``add``       ``h + s·û`` (steering)                ``s``    0
``ablate``    ``h − p·û`` (the component removed)   0        −1
``clamp``     ``h + (t − p)·û`` (set to ``t``)      ``t``    −1
============  ===================================  =======  ====

c = 0 is the base model in every mode; ``ablate`` and ``clamp`` interpolate for
0 < c < 1 and overshoot beyond 1. ``t`` (``target``) defaults to ``s``, one typical
pair gap along the direction. A ``Condition`` (CAST-style conditional steering)
applies the change only at positions whose projection on another direction at the
same module exceeds a threshold (`calibrate_condition` sets it from the pairs): a
per-token test, so generation with and without the KV cache agree.

Example:
    >>> import torch
    >>> mode_coefficients("ablate", scale=2.0, target=None), mode_coefficients("clamp", scale=2.0, target=5.0)
    ((0.0, -1.0), (5.0, -1.0))
    >>> apply_mode(torch.tensor([3.0, 4.0]), torch.tensor(1.0), torch.tensor([1.0, 0.0]), alpha=0.0, beta=-1.0).tolist()
    [0.0, 4.0]

    With a model:

    with steering.steer(model, d, 1.0, mode="ablate"): ...        # project d out at its module
    cond = steering.calibrate_condition(acts, harmful)            # threshold between the sides
    with steering.steer(model, refuse, 2.0, condition=cond): ...  # steer only where it fires
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor

from .directions import Direction

Mode = Literal["add", "ablate", "clamp"]
MODES: tuple[str, ...] = ("add", "ablate", "clamp")


APPLY_MODES: tuple[str, ...] = (*MODES, "conditional")  # what a sweep's --modes may name


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}: choose one of {', '.join(MODES)} (and condition= for conditional steering).")
    return mode


def check_target(mode: str, target: object) -> float | None:
    """``target`` as a float (a one-element tensor or numpy number is read as its value), refusing NaN,
    infinities and a target for a mode other than ``clamp`` (which would ignore it)."""
    if target is None:
        return None
    if mode != "clamp":
        raise ValueError(f"target={target!r} is only used by mode='clamp'; drop it for mode={mode!r}, or use mode='clamp'.")
    try:
        value = float(target)  # type: ignore[arg-type]
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"target={target!r}: give the clamp target as one number (the projection to set).") from None
    if not math.isfinite(value):
        raise ValueError(f"target={target!r} is not finite: a clamp target is the real projection every state is set to.")
    return value


def mode_coefficients(mode: str, scale: float, target: float | None) -> tuple[float, float]:
    """``(α, β)`` of ``h + c·(α + β·p)·û`` for ``mode`` (see the module docstring)."""
    check_mode(mode)
    target = check_target(mode, target)
    if mode == "add":
        return scale, 0.0
    if mode == "ablate":
        return 0.0, -1.0
    return (scale if target is None else float(target)), -1.0


@dataclass(frozen=True)
class Condition:
    """Apply the steering only where ``h·ŵ > threshold`` at the steered module (``ŵ``: ``direction``'s unit vector)."""

    direction: Direction
    threshold: float

    def __post_init__(self) -> None:
        if not isinstance(self.direction, Direction):
            raise TypeError(f"A Condition reads a steering.Direction, not a {type(self.direction).__name__}.")
        try:
            threshold = float(self.threshold)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"Condition threshold={self.threshold!r}: give one number.") from None
        if math.isnan(threshold):
            raise ValueError(
                f"Condition threshold={self.threshold!r}: NaN compares false everywhere, so the gate would silently "
                "never fire; use calibrate_condition, a number, or inf for 'never'."
            )
        object.__setattr__(self, "threshold", threshold)


def calibrate_condition(acts, direction: Direction, token: int = -1) -> Condition:
    """A `Condition` on ``direction`` whose threshold is the midpoint of the positive and negative sides'
    mean projections at ``token`` (the captured pairs in ``acts``), so it fires on the positive side.

    Example:
        cond = calibrate_condition(acts, steering.compute("mean_diff", acts, 12, "resid"))
    """
    states: Float[Tensor, "pair side token d"] = acts[direction.layer, direction.kind]
    captured = states.shape[2]
    if isinstance(token, bool) or not isinstance(token, int) or not -captured <= token < captured:
        raise ValueError(
            f"token={token!r}: {captured} token position(s) were captured per text, so use 0..{captured - 1} "
            f"(or -{captured}..-1 from the end), or capture more with collect(..., tokens=N)."
        )
    projections = states[:, :, token].float() @ torch.nn.functional.normalize(direction.vector.float(), dim=-1)  # as the gate reads it
    positive, negative = float(projections[:, 0].mean()), float(projections[:, 1].mean())
    if positive <= negative:
        raise ValueError(
            f"{direction.name} does not project the positive side above the negative one on these pairs "
            f"({positive:.3g} ≤ {negative:.3g}); a condition needs a direction whose sign was calibrated on them."
        )
    return Condition(direction, (positive + negative) / 2)


def apply_mode(
    hidden: Float[Tensor, "*batch d"],
    coeff: Tensor,
    unit: Float[Tensor, " d"],
    alpha: float,
    beta: float,
    gate_unit: Float[Tensor, " d"] | None = None,
    threshold: float = 0.0,
) -> Float[Tensor, "*batch d"]:
    """``h + c·(α + β·(h·û))·û``, only where ``h·ŵ > threshold`` when ``gate_unit`` (``ŵ``) is given."""
    unit = unit.to(hidden.device, hidden.dtype)
    amount = alpha + beta * (hidden @ unit)[..., None] if beta else torch.full_like(hidden[..., :1], alpha)
    change = coeff * amount * unit
    if gate_unit is not None:
        fires = (hidden @ gate_unit.to(hidden.device, hidden.dtype))[..., None] > threshold
        change = change * fires.to(hidden.dtype)
    return hidden + change
