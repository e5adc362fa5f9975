"""Steering-direction methods: each a small function of positive and negative states.

Every method returns a unit vector; `compute` then calibrates its sign (majority
vote that the positive side projects higher), records the vote share, and sets
``scale`` to the typical (median) norm of the pair differences, so ``c = 1``
moves a state by about one typical positive–negative gap.

Example:
    >>> from steering import directions
    >>> d = directions.compute("pca_diff", acts, layer=12, kind="resid")
    >>> d.vector.shape, d.scale, d.meta["vote_share"]
    >>> directions.METHODS.keys()
    dict_keys(['mean_diff', 'pca_diff', 'pca_center', 'pca_diff_weighted', 'logistic', 'random', ...])
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from einops import rearrange
from jaxtyping import Float
from safetensors import safe_open
from safetensors.torch import save_file
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from torch import Tensor

import probes

Vector = Float[Tensor, "d"]


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
    coords: Float[Tensor, "r"] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.method}@L{self.layer}.{self.kind}"

    def __repr__(self) -> str:
        vote = self.meta.get("vote_share")
        vote_text = f", vote {vote:.0%}" if vote is not None else ""
        return f"Direction({self.name}, d={self.vector.shape[0]}, scale={self.scale:.3g}, space={self.space}{vote_text})"


@dataclass
class StateSet:
    """Positive and negative states at one (layer, kind), tokens folded into samples."""

    positive: Float[Tensor, "n d"]
    negative: Float[Tensor, "n d"]
    layer: int
    kind: str

    @property
    def diffs(self) -> Float[Tensor, "n d"]:
        return self.positive - self.negative


MethodFn = Callable[..., tuple[Vector, dict[str, Any]]]
NEEDS = ("model", "pairs")


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


def register(name: str, *, needs: tuple[str, ...] = (), space: str = "activation") -> Callable[[MethodFn], MethodFn]:
    """Add a direction method to `METHODS`: ``fn(states, **options) -> (vector, meta)``.

    Example:
        >>> @register("my_method")
        ... def my_method(states):
        ...     return unit(states.diffs.median(0).values), {}
    """
    unknown = set(needs) - set(NEEDS)
    if unknown or space not in ("activation", "uspace"):
        raise ValueError(f"register({name!r}): needs ⊆ {NEEDS} and space 'activation' or 'uspace'; got {needs}, {space!r}.")

    def add(fn: MethodFn) -> MethodFn:
        METHODS[name] = Method(name, fn, frozenset(needs), space)
        return fn

    return add


def unit(vector: Tensor) -> Tensor:
    norm = vector.norm()
    if not torch.isfinite(norm) or norm == 0:
        raise ValueError("The direction is zero or not finite: the positive and negative states do not differ here.")
    return vector / norm


def first_component(samples: np.ndarray, center: bool = True) -> tuple[np.ndarray, float]:
    """First principal axis and its explained-variance share (uncentred: of the second moment)."""
    if center:
        pca = PCA(n_components=1).fit(samples)
        return pca.components_[0], float(pca.explained_variance_ratio_[0])
    _, singular, vt = np.linalg.svd(samples, full_matrices=False)
    return vt[0], float(singular[0] ** 2 / (singular**2).sum())


@register("mean_diff")
def mean_diff(states: StateSet) -> tuple[Vector, dict]:
    """Mass-mean difference: mean(positive) − mean(negative)."""
    return unit(states.diffs.mean(0)), {}


@register("pca_diff")
def pca_diff(states: StateSet) -> tuple[Vector, dict]:
    """First principal component of the centred pair differences (repeng's ``pca_diff``)."""
    axis, share = first_component(states.diffs.numpy())
    return unit(torch.from_numpy(axis)), {"explained_variance": share}


@register("pca_center")
def pca_center(states: StateSet) -> tuple[Vector, dict]:
    """First principal component of all 2n states after centring each pair on its midpoint."""
    mid = (states.positive + states.negative) / 2
    samples = torch.cat([states.positive - mid, states.negative - mid]).numpy()
    axis, share = first_component(samples)
    return unit(torch.from_numpy(axis)), {"explained_variance": share}


@register("pca_diff_weighted")
def pca_diff_weighted(states: StateSet) -> tuple[Vector, dict]:
    """First (uncentred) principal axis of the unit-normalised differences: every pair counts
    the same, so a few pairs with huge differences cannot dominate."""
    diffs = states.diffs
    normalised = diffs / diffs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    axis, share = first_component(normalised.numpy(), center=False)
    return unit(torch.from_numpy(axis)), {"explained_variance": share}


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


def uspace_method(inner: MethodFn) -> Callable[..., tuple[Vector, dict]]:
    def method(states: StateSet, model: Any = None, basis_kind: str | None = None) -> tuple[Vector, dict]:
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
        return unit(vector), meta | {"coords": coords, "basis_kind": basis.kind, "weight_step": float(weight_step)}

    method.__doc__ = f"{inner.__doc__.splitlines()[0]} — computed on coordinates ``hs @ U`` of the sublayer's weight."
    return method


register("uspace_pca", needs=("model",), space="uspace")(uspace_method(pca_diff))
register("uspace_mean", needs=("model",), space="uspace")(uspace_method(mean_diff))


def state_set(acts: Any, layer: int, kind: str, token: int | slice | None = None) -> StateSet:
    """Positive/negative states of one (layer, kind), all captured tokens folded in as samples."""
    hs = acts[layer, kind].to(torch.float64)
    captured = hs.shape[2]
    if isinstance(token, slice):
        hs = hs[:, :, token]
        if hs.shape[2] == 0:
            raise ValueError(f"token={token} selects none of the {captured} captured token position(s).")
    elif token is not None:
        if isinstance(token, bool) or not isinstance(token, int) or not -captured <= token < captured:
            raise ValueError(f"token={token!r}: {captured} token position(s) were captured per text, so use 0..{captured - 1} "
                             f"(or -{captured}..-1 from the end), or capture more with collect(..., tokens=N).")
        hs = hs[:, :, token % captured : token % captured + 1]
    hs = rearrange(hs, "pair side token d -> side (pair token) d")
    layer = acts.normalize_key((layer, kind))[0]
    return StateSet(hs[0], hs[1], layer, kind)


def sign_vote(vector: Vector, states: StateSet) -> float:
    """Share of samples whose positive state projects higher on ``vector`` than the negative."""
    return float(((states.diffs @ vector.to(states.diffs.dtype)) > 0).double().mean())


def compute(method: str, acts: Any, layer: int, kind: str, *, token: int | None = None, model: Any = None,
            pairs: Any = None, **options: Any) -> Direction:
    """Compute a calibrated `Direction` with ``method`` from captured activations.

    Args:
        method: a key of `METHODS`.
        acts: `probes.Activations` holding ``(layer, kind)``.
        token: use only this captured token position (default: all, as extra samples).
        model, pairs: given to the methods that need them (`Method.needs`), ignored by the others.
        options: passed to the method (``seed``, ``C``, ``reg`` ...).

    Example:
        >>> d = compute("mean_diff", acts, 12, "resid")
        >>> d_u = compute("uspace_pca", acts, 12, "down", model=model)
    """
    if method not in METHODS:
        raise ValueError(f"Unknown direction method {method!r}; available: {', '.join(METHODS)}.")
    spec = METHODS[method]
    given = {"model": model, "pairs": pairs}
    missing = [need for need in sorted(spec.needs) if given[need] is None]
    if missing:
        raise ValueError(f"{method} needs {' and '.join(missing)}: compute({method!r}, acts, layer, kind, "
                         + ", ".join(f"{m}={m}" for m in sorted(spec.needs)) + ").")
    states = state_set(acts, layer, kind, token)
    if states.positive.shape[0] < 2 and method not in ("mean_diff", "random"):
        raise ValueError(f"{method} needs at least 2 pairs; got {states.positive.shape[0]}.")
    vector, meta = spec.fn(states, **options, **{need: given[need] for need in spec.needs})
    coords = meta.pop("coords", None)
    vote_share = sign_vote(vector, states)
    if vote_share < 0.5:  # calibrate: +c moves towards the positive side
        vector, vote_share = -vector, 1 - vote_share
        coords = -coords if coords is not None else None
    typical = float(states.diffs.norm(dim=-1).median())
    scale = typical / max(meta.pop("weight_step"), 1e-12) if coords is not None else typical
    return Direction(
        vector=vector.to(torch.float32),
        scale=scale,
        layer=states.layer,
        kind=kind,
        method=method,
        space="uspace" if coords is not None else "activation",
        coords=coords.to(torch.float32) if coords is not None else None,
        meta=meta | {"vote_share": vote_share, "typical_diff_norm": typical, "n_samples": states.positive.shape[0]},
    )


def save_directions(directions: list[Direction], path: str | Path) -> Path:
    """Write directions (vectors, U-space coords, scales and metadata) to one safetensors file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors, records = {}, []
    for index, direction in enumerate(directions):
        tensors[f"{index}.vector"] = direction.vector.contiguous()
        if direction.coords is not None:
            tensors[f"{index}.coords"] = direction.coords.contiguous()
        records.append({
            "layer": direction.layer, "kind": direction.kind, "method": direction.method, "space": direction.space,
            "scale": direction.scale, "meta": {k: v for k, v in direction.meta.items() if isinstance(v, (int, float, str, bool, type(None)))},
        })
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
                vector=handle.get_tensor(f"{i}.vector"), scale=r["scale"], layer=r["layer"], kind=r["kind"],
                method=r["method"], space=r["space"],
                coords=handle.get_tensor(f"{i}.coords") if f"{i}.coords" in keys else None, meta=r["meta"],
            )
            for i, r in enumerate(records)
        ]
