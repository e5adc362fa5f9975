"""Computing calibrated directions from captured activations, one (layer, kind) or many at once.

Every method returns a unit vector; `compute` then calibrates its sign (majority
vote that the positive side projects higher), records the vote share, and sets
``scale`` to the typical (median) norm of the pair differences, so ``c = 1``
moves a state by about one typical positive–negative gap. The methods and their
registry live in `steering.directions.methods`, the `Direction` type and its files in
`steering.directions.direction`; all are importable from `steering.directions`.

Example:
    from steering import directions
    d = directions.compute("pca_diff", acts, layer=12, kind="resid")
    d.vector.shape, d.scale, d.meta["vote_share"]
    directions.compute_many("mean_diff", acts)        # every captured (layer, kind)
    directions.METHODS.keys()
    # dict_keys(['mean_diff', 'pca_diff', 'pca_center', 'pca_diff_weighted', 'logistic', 'random', ...])
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Sequence
from typing import Any

import torch
from einops import rearrange

from .direction import Direction, Vector
from .methods import METHODS, NEEDS, DegenerateDirection, MethodResult, StateSet, first_components


def state_set(acts: Any, layer: int, kind: str, token: int | slice | None = None) -> StateSet:
    """Positive/negative states of one (layer, kind), all captured tokens folded in as samples."""
    hs = acts[layer, kind].to(torch.float64)
    captured = hs.shape[2]
    if isinstance(token, slice):
        hs = hs[:, :, token]
        if hs.shape[2] == 0:
            raise ValueError(f"token={token} selects none of the {captured} captured token position(s).")
    elif token is not None:
        if isinstance(token, bool) or not isinstance(token, numbers.Integral) or not -captured <= token < captured:
            raise ValueError(
                f"token={token!r}: {captured} token position(s) were captured per text, so use 0..{captured - 1} "
                f"(or -{captured}..-1 from the end), or capture more with collect(..., tokens=N)."
            )
        token = int(token) % captured
        hs = hs[:, :, token : token + 1]
    hs = rearrange(hs, "pair side token d -> side (pair token) d")
    layer = acts.normalize_key((layer, kind))[0]
    return StateSet(hs[0], hs[1], layer, kind)


def check_options(method: str, fn: Any, options: dict[str, Any]) -> None:
    """Name an option ``method``'s function does not take (rather than Python's bare TypeError)."""
    try:
        parameters = list(inspect.signature(fn).parameters.values())[1:]  # after the states
    except (TypeError, ValueError):
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return
    known = [p.name for p in parameters if p.name not in NEEDS and p.kind is not inspect.Parameter.VAR_POSITIONAL]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(
            f"{method} takes no option {unknown[0]!r}" + (f"; its options are {', '.join(known)}." if known else " (it has no options).")
        )


def sign_vote(vector: Vector, states: StateSet) -> float:
    """Share of samples whose positive state projects higher on ``vector`` than the negative."""
    return float(((states.diffs @ vector.to(states.diffs.dtype)) > 0).double().mean())


def compute(
    method: str, acts: Any, layer: int, kind: str, *, token: int | None = None, model: Any = None, pairs: Any = None, **options: Any
) -> Direction:
    """Compute a calibrated `Direction` with ``method`` from captured activations.

    Args:
        method: a key of `METHODS`.
        acts: `probes.Activations` holding ``(layer, kind)``.
        token: use only this captured token position (default: all, as extra samples).
        model, pairs: given to the methods that need them (`Method.needs`), ignored by the others.
        options: passed to the method (``seed``, ``C``, ``reg`` ...).

    Example:
        d = compute("mean_diff", acts, 12, "resid")
        d_u = compute("uspace_pca", acts, 12, "down", model=model)
    """
    if method not in METHODS:
        raise ValueError(f"Unknown direction method {method!r}; available: {', '.join(METHODS)}.")
    spec = METHODS[method]
    given = {"model": model, "pairs": pairs}
    missing = [need for need in sorted(spec.needs) if given[need] is None]
    if missing:
        raise ValueError(
            f"{method} needs {' and '.join(missing)}: compute({method!r}, acts, layer, kind, "
            + ", ".join(f"{m}={m}" for m in sorted(spec.needs))
            + ")."
        )
    check_options(method, spec.fn, options)
    states = state_set(acts, layer, kind, token)
    typical = float(states.diffs.norm(dim=-1).median())
    if not typical > 0:  # NaN or 0: most pairs do not differ here, so c·s would move nothing
        raise DegenerateDirection(
            f"No {method} direction at layer {states.layer} {kind!r}: the positive and negative states do not differ "
            f"(median pair-difference norm {typical:.3g}); e.g. q/k/v at layer 0 read only the last token, which the pairs share."
        )
    if states.positive.shape[0] < 2 and method not in ("mean_diff", "random"):
        raise ValueError(f"{method} needs at least 2 pairs; got {states.positive.shape[0]}.")
    result = spec.fn(states, **options, **{need: given[need] for need in spec.needs})
    result = result if isinstance(result, MethodResult) else MethodResult(*result)
    vector, coords = result.vector, result.coords
    vote_share = sign_vote(vector, states)
    if vote_share < 0.5:  # calibrate: +c moves towards the positive side
        vector, vote_share = -vector, 1 - vote_share
        coords = -coords if coords is not None else None
    scale = typical / max(result.weight_step or 0.0, 1e-12) if coords is not None else typical
    return Direction(
        vector=vector.to(torch.float32),
        scale=scale,
        layer=states.layer,
        kind=result.basis_kind or kind,  # where it is applied: a U-space direction acts in its basis' weight
        method=method,
        space="uspace" if coords is not None else "activation",
        coords=coords.to(torch.float32) if coords is not None else None,
        meta=result.meta
        | {"vote_share": vote_share, "typical_diff_norm": typical, "n_samples": states.positive.shape[0], "states_kind": kind},
    )


BATCHED = ("mean_diff", "pca_diff")


def compute_many(method: str, acts: Any, keys: Sequence[tuple[int, str]] | None = None, **options: Any) -> list[Direction]:
    """`compute` for many (layer, kind) at once (default: every key of ``acts``).

    ``mean_diff`` and ``pca_diff`` are computed for all keys of one width together (one batched
    SVD, batched sign votes and scales); other methods key by key. The results equal `compute`'s.

    Example:
        found = compute_many("pca_diff", acts)          # every layer × kind captured
    """
    keys = list(acts.keys()) if keys is None else [acts.normalize_key(key) for key in keys]
    if method not in BATCHED or options:
        return [compute(method, acts, layer, kind, **options) for layer, kind in keys]
    found: dict[tuple[int, str], Direction] = {}
    by_width: dict[int, list[tuple[int, str]]] = {}
    for key in keys:
        by_width.setdefault(acts[key].shape[-1], []).append(key)
    for group in by_width.values():
        sets = [state_set(acts, layer, kind) for layer, kind in group]
        if min(s.positive.shape[0] for s in sets) < 2 and method == "pca_diff":
            raise ValueError(f"{method} needs at least 2 pairs; got {min(s.positive.shape[0] for s in sets)}.")
        diffs = torch.stack([s.diffs for s in sets])  # [k, n, d]
        if method == "mean_diff":
            meta: list[dict[str, Any]] = [{} for _ in sets]
            vectors = diffs.mean(1)
        else:
            vectors, shares = first_components(diffs)
            meta = [{"explained_variance": float(share)} for share in shares]
        vectors = vectors / vectors.norm(dim=-1, keepdim=True).clamp_min(1e-300)
        votes = ((diffs @ vectors[..., None])[..., 0] > 0).double().mean(1)
        vectors = torch.where((votes < 0.5)[:, None], -vectors, vectors)
        votes = torch.where(votes < 0.5, 1 - votes, votes)
        typical = diffs.norm(dim=-1).median(dim=1).values
        for index, (key, states) in enumerate(zip(group, sets)):
            if not torch.isfinite(vectors[index]).all() or float(diffs[index].norm()) == 0:
                raise DegenerateDirection(
                    f"The direction at layer {key[0]} {key[1]!r} is zero or not finite: the positive and "
                    "negative states do not differ there."
                )
            found[key] = Direction(
                vector=vectors[index].to(torch.float32),
                scale=float(typical[index]),
                layer=key[0],
                kind=key[1],
                method=method,
                meta=meta[index]
                | {
                    "vote_share": float(votes[index]),
                    "typical_diff_norm": float(typical[index]),
                    "n_samples": states.positive.shape[0],
                    "states_kind": key[1],
                },
            )
    return [found[key] for key in keys]
