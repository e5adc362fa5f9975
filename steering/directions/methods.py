"""Direction methods: each a small function of positive and negative states, in a typed registry.

A method takes a `StateSet` (positive and negative states at one (layer, kind),
tokens folded in as samples) and returns a unit vector and the numbers worth
reporting, or a `MethodResult` (a U-space method also gives its coordinates and
basis). `register` records what a method needs beyond the states (the model's
weights, the training pairs for gradients) and its space.

Example:
    >>> @register("median_diff")
    ... def median_diff(states):
    ...     return unit(states.diffs.median(0).values), {}
    >>> METHODS["pca_diff"].needs
    frozenset()
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, TypeVar

import numpy as np
import torch
from jaxtyping import Float
from sklearn.linear_model import LogisticRegression
from torch import Tensor

import probes

from .direction import Vector


@dataclass
class StateSet:
    """Positive and negative states at one (layer, kind), tokens folded into samples."""

    positive: Float[Tensor, "n d"]
    negative: Float[Tensor, "n d"]
    layer: int
    kind: str

    @cached_property
    def diffs(self) -> Float[Tensor, "n d"]:
        return self.positive - self.negative


@dataclass
class MethodResult:
    """What a method returns: a unit vector and the numbers worth reporting (``meta``); a U-space
    method also gives its coordinates ``δs``, the basis it is applied in, and the size of its
    weight-space step per unit ``δs`` (which sets its scale)."""

    vector: Vector
    meta: dict[str, Any] = field(default_factory=dict)
    coords: Float[Tensor, " r"] | None = None
    basis_kind: str | None = None
    weight_step: float | None = None


MethodFn = Callable[..., "MethodResult | tuple[Vector, dict[str, Any]]"]
NEEDS = ("model", "pairs")
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Method:
    """A registered direction method: its function, what it needs beyond the states, and its space.

    ``needs`` ⊆ {"model", "pairs"}: ``model`` for weights (U-space), ``pairs`` too for gradients
    (Fisher), which makes a method costly: a sweep screens only the methods that need no pairs.
    """

    name: str
    fn: MethodFn
    needs: frozenset[str] = frozenset()
    space: str = "activation"

    @property
    def needs_gradients(self) -> bool:
        return "pairs" in self.needs


METHODS: dict[str, Method] = {}


def register(name: str, *, needs: tuple[str, ...] = (), space: str = "activation") -> Callable[[F], F]:
    """Add a direction method to `METHODS`: ``fn(states, **options) -> (vector, meta)``.

    Example:
        >>> @register("my_method")
        ... def my_method(states):
        ...     return unit(states.diffs.median(0).values), {}
    """
    unknown = set(needs) - set(NEEDS)
    if unknown or space not in ("activation", "uspace"):
        raise ValueError(f"register({name!r}): needs ⊆ {NEEDS} and space 'activation' or 'uspace'; got {needs}, {space!r}.")

    def add(fn: F) -> F:
        METHODS[name] = Method(name, fn, frozenset(needs), space)
        return fn

    return add


class DegenerateDirection(ValueError):
    """No direction exists at this place: the positive and negative states do not differ (or are not finite).

    E.g. ``q``, ``k``, ``v`` at layer 0 read only the last token, which chat-templated pairs share.
    A sweep skips such a place for that method; every other place keeps its direction."""


def unit(vector: Tensor) -> Tensor:
    norm = vector.norm()
    if not torch.isfinite(norm) or norm == 0:
        raise DegenerateDirection("The direction is zero or not finite: the positive and negative states do not differ here.")
    return vector / norm


def first_components(samples: Float[Tensor, "k n d"], center: bool = True) -> tuple[Float[Tensor, "k d"], Float[Tensor, " k"]]:
    """First principal axis of each of ``k`` sample sets, and its explained-variance share (uncentred:
    of the second moment), from one batched SVD."""
    if center:
        samples = samples - samples.mean(1, keepdim=True)
    _, singular, vh = torch.linalg.svd(samples, full_matrices=False)
    return vh[:, 0], singular[:, 0] ** 2 / (singular**2).sum(-1).clamp_min(1e-300)


def first_component(samples: np.ndarray | Tensor, center: bool = True) -> tuple[Tensor, float]:
    """First principal axis and its explained-variance share (uncentred: of the second moment)."""
    axis, share = first_components(torch.as_tensor(samples, dtype=torch.float64)[None], center)
    return axis[0], float(share[0])


@register("mean_diff")
def mean_diff(states: StateSet) -> tuple[Vector, dict]:
    """Mass-mean difference: mean(positive) − mean(negative)."""
    return unit(states.diffs.mean(0)), {}


@register("pca_diff")
def pca_diff(states: StateSet) -> tuple[Vector, dict]:
    """First principal component of the centred pair differences (repeng's ``pca_diff``)."""
    axis, share = first_component(states.diffs)
    return unit(axis), {"explained_variance": share}


@register("pca_center")
def pca_center(states: StateSet) -> tuple[Vector, dict]:
    """First principal component of all 2n states after centring each pair on its midpoint."""
    mid = (states.positive + states.negative) / 2
    samples = torch.cat([states.positive - mid, states.negative - mid]).numpy()
    axis, share = first_component(samples)
    return unit(axis), {"explained_variance": share}


@register("pca_diff_weighted")
def pca_diff_weighted(states: StateSet) -> tuple[Vector, dict]:
    """First (uncentred) principal axis of the unit-normalised differences: every pair counts
    the same, so a few pairs with huge differences cannot dominate."""
    diffs = states.diffs
    normalised = diffs / diffs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    axis, share = first_component(normalised, center=False)
    return unit(axis), {"explained_variance": share}


@register("logistic")
def logistic(states: StateSet, C: float = 1.0, seed: int = 0) -> tuple[Vector, dict]:
    """Normalised weight of an L2 logistic-regression probe (positive vs negative) on centred states."""
    X = torch.cat([states.positive, states.negative]).numpy()
    y = np.repeat([1, 0], len(states.positive))
    probe = LogisticRegression(C=C, max_iter=5000, random_state=seed).fit(X - X.mean(0), y)
    return unit(torch.from_numpy(probe.coef_[0])), {"train_accuracy": float(probe.score(X - X.mean(0), y))}


@register("random")
def random_direction(states: StateSet, seed: int = 0) -> tuple[Vector, dict]:
    """A seeded random unit vector (baseline; scaled like the others)."""
    generator = torch.Generator().manual_seed(seed + 7919 * states.layer)
    return unit(torch.randn(states.positive.shape[-1], generator=generator, dtype=torch.float64)), {}


def uspace_states(states: StateSet, model: Any, basis_kind: str | None) -> tuple[StateSet, probes.WeightSVD]:
    """States in the output singular basis of the sublayer's weight (``hs @ U``)."""
    kind = basis_kind or ("down" if states.kind == "resid" else states.kind)
    basis = probes.weight_svd(model, states.layer, kind)
    U = basis.U.to(torch.float64)
    if U.shape[0] != states.positive.shape[-1]:
        raise ValueError(f"The {kind!r} basis has {U.shape[0]} output features, the states {states.positive.shape[-1]}.")
    return StateSet(states.positive @ U, states.negative @ U, states.layer, states.kind), basis


def uspace_method(inner: Callable[..., tuple[Vector, dict[str, Any]]]) -> Callable[..., MethodResult]:
    def method(states: StateSet, model: Any = None, basis_kind: str | None = None) -> MethodResult:
        if model is None:
            raise ValueError("U-space methods need the model for its weights: compute(..., model=model).")
        coords_states, basis = uspace_states(states, model, basis_kind)
        coords, meta = inner(coords_states)
        vector = basis.U.to(torch.float64) @ coords
        # Weight-space step size: ‖U diag(δs) Vᵀ x‖ from the captured outputs, since
        # Vᵀx = (Uᵀ hs) / S for the part of hs that the weight produces.
        S = basis.S.to(torch.float64).clamp_min(basis.S.max() * 1e-6)
        states_all = torch.cat([states.positive, states.negative]) @ basis.U.to(torch.float64)
        weight_step = ((states_all / S) * coords).norm(dim=-1).median()
        return MethodResult(unit(vector), meta, coords=coords, basis_kind=basis.kind, weight_step=float(weight_step))

    method.__doc__ = f"{(inner.__doc__ or inner.__name__).splitlines()[0]} — computed on coordinates ``hs @ U`` of the sublayer's weight."
    return method


register("uspace_pca", needs=("model",), space="uspace")(uspace_method(pca_diff))
register("uspace_mean", needs=("model",), space="uspace")(uspace_method(mean_diff))
