"""`Direction`: a calibrated steering direction at one (layer, kind), and its files.

Example:
    d = steering.compute("pca_diff", acts, 12, "resid")
    honest_not_sycophantic = (d - 0.5 * sycophancy).orthogonalized(sentiment)   # same layer and kind
    save_directions([d], "dirs.safetensors"); load_directions("dirs.safetensors")
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

Vector = Float[Tensor, " d"]


@dataclass
class Direction:
    """A calibrated steering direction at one (layer, kind).

    ``vector`` is unit-norm in activation space; ``scale`` is the default size of
    a ``c = 1`` step. U-space directions (``space == "uspace"``) also carry
    ``coords`` (unit ``δs`` in the sublayer's output singular basis) and are
    applied in weight space, ``h + c·s·U diag(δs) Vᵀ x``.
    """

    vector: Vector
    scale: float
    layer: int
    kind: str
    method: str
    space: str = "activation"
    coords: Float[Tensor, " r"] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.method}@L{self.layer}.{self.kind}"

    @property
    def step(self) -> Vector:
        """``s·v``: what a c = 1 step adds (activation space)."""
        return self.vector * self.scale

    def from_step(self, step: Vector, method: str) -> Direction:
        """A direction at this (layer, kind) whose c = 1 step is ``step``."""
        norm = float(torch.linalg.vector_norm(step))
        if norm == 0:
            raise ValueError(f"{method} is the zero vector: it has no direction.")
        return Direction(step / norm, norm, self.layer, self.kind, method)

    def same_place(self, other: Direction, operation: str) -> None:
        for d in (self, other):
            if d.space != "activation":
                raise ValueError(f"{operation} needs activation-space directions; {d.name} is {d.space}.")
        if (self.layer, self.kind) != (other.layer, other.kind):
            raise ValueError(
                f"{operation} needs directions at one (layer, kind): {self.name} and {other.name}. Use a Steering plan for several places."
            )

    def __mul__(self, factor: float) -> Direction:
        """``k·d``: the same direction with a step ``k`` times as large (a negative ``k`` flips it)."""
        k = real_factor(factor)
        if k is None:
            return NotImplemented
        if not math.isfinite(k):
            raise ValueError(f"{self.name} × {factor!r}: the factor must be a finite number.")
        if self.space != "activation":
            raise ValueError(f"Scaling needs an activation-space direction; {self.name} is {self.space}.")
        return self.from_step(self.step * k, f"{k:g}·{self.method}")

    __rmul__ = __mul__

    def __truediv__(self, divisor: float) -> Direction:
        """``d / k``: the step ``k`` times smaller."""
        k = real_factor(divisor)
        if k is None:
            return NotImplemented
        if k == 0 or not math.isfinite(k):
            raise ValueError(f"{self.name} / {divisor!r}: divide by a finite number other than zero.")
        return self * (1.0 / k)

    def __neg__(self) -> Direction:
        return self * -1.0

    def __add__(self, other: Direction) -> Direction:
        """The direction whose step is the sum of both steps (same layer and kind)."""
        if not isinstance(other, Direction):
            return NotImplemented
        self.same_place(other, "Adding directions")
        return self.from_step(self.step + other.step, f"({self.method} + {other.method})")

    def __radd__(self, other: object) -> Direction:
        """``0 + d`` is ``d``, so ``sum([d1, d2])`` adds the steps."""
        if isinstance(other, (int, float)) and not isinstance(other, bool) and other == 0:
            return self
        return NotImplemented

    def __sub__(self, other: Direction) -> Direction:
        if not isinstance(other, Direction):
            return NotImplemented
        return self + (-other)

    def orthogonalized(self, other: Direction) -> Direction:
        """This step with its component along ``other`` removed (``other`` unit-normalised)."""
        self.same_place(other, "Orthogonalising")
        unit = other.vector / torch.linalg.vector_norm(other.vector)
        return self.from_step(self.step - (self.step @ unit) * unit, f"{self.method} ⊥ {other.method}")

    def __repr__(self) -> str:
        vote = self.meta.get("vote_share")
        vote_text = f", vote {vote:.0%}" if vote is not None else ""
        return f"Direction({self.name}, d={self.vector.shape[0]}, scale={self.scale:.3g}, space={self.space}{vote_text})"


def real_factor(value: object) -> float | None:
    """``value`` as a float when it is a real number (or a one-element tensor), else None."""
    if isinstance(value, bool) or (not isinstance(value, (int, float, Tensor)) and not hasattr(value, "__float__")):
        return None
    if isinstance(value, Tensor) and value.numel() != 1:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def save_directions(directions: list[Direction], path: str | Path) -> Path:
    """Write directions (vectors, U-space coords, scales and metadata) to one safetensors file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors, records = {}, []
    for index, direction in enumerate(directions):
        if not isinstance(direction, Direction):
            raise TypeError(f"save_directions writes steering.Direction objects; item {index} is a {type(direction).__name__}.")
        # own copies: one direction listed twice (or a plan's condition on its own direction) shares memory
        tensors[f"{index}.vector"] = direction.vector.detach().cpu().clone().contiguous()
        if direction.coords is not None:
            tensors[f"{index}.coords"] = direction.coords.detach().cpu().clone().contiguous()
        records.append(
            {
                "layer": direction.layer,
                "kind": direction.kind,
                "method": direction.method,
                "space": direction.space,
                "scale": direction.scale,
                "meta": {k: v for k, v in direction.meta.items() if isinstance(v, (int, float, str, bool, type(None)))},
            }
        )
    save_file(tensors, str(path), metadata={"format": "steerscope.directions/1", "directions": json.dumps(records)})
    return path


def load_directions(path: str | Path) -> list[Direction]:
    """Read directions written by `save_directions`."""
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
        if metadata.get("format") != "steerscope.directions/1":
            raise ValueError(f"{path} is not a steerscope directions file.")
        records = json.loads(metadata["directions"])
        keys = set(handle.keys())
        return [
            Direction(
                vector=handle.get_tensor(f"{i}.vector"),
                scale=r["scale"],
                layer=r["layer"],
                kind=r["kind"],
                method=r["method"],
                space=r["space"],
                coords=handle.get_tensor(f"{i}.coords") if f"{i}.coords" in keys else None,
                meta=r["meta"],
            )
            for i, r in enumerate(records)
        ]
