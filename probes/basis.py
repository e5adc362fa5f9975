"""Singular-vector bases of sublayer weights, and projection into them.

For a sublayer ``y = W x (+ b)`` with ``W = U diag(S) Vᵀ``: ``U`` is the output
basis (``hs @ U`` are a sublayer output's coordinates), ``V`` the input basis.
SVDs are cached in memory and on disk (``$STEERSCOPE_CACHE/svd``), keyed by the
model's name, the module path, the weight's shape and dtype, and a sampled
fingerprint of its values (cheap: no full-weight hashing per lookup). Every
entry read is checked against the weight itself (``W v_i ≈ s_i u_i`` for the top
components), so a damaged or stale file is recomputed, never used; a cache
folder that cannot be written only costs the recomputation.

Example:
    basis = probes.weight_svd(model, 12, "down")
    coords = probes.project(acts[12, "down"], basis)            # hs @ U
    coords_in = probes.project(x, basis, side="in", rank=32)    # x @ V[:, :32]
"""

from __future__ import annotations

import hashlib
import warnings
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from jaxtyping import Float
from safetensors.torch import load_file, save_file
from torch import Tensor

from . import sublayers as sl
from .files import write_atomic
from .fingerprint import tensor_fingerprint
from .model_handle import model_handle
from .models import cache_dir
from .remote import require_weights

MEMORY_CACHE_SIZE = 64
CHECKED_COMPONENTS = 4


def svd_cache_dir() -> Path:
    """Where weight SVDs are kept on disk (``$STEERSCOPE_CACHE/svd``)."""
    return cache_dir() / "svd"


memory_cache: OrderedDict[str, WeightSVD] = OrderedDict()


@dataclass(frozen=True)
class WeightSVD:
    """``W ≈ U diag(S) Vᵀ`` of one sublayer weight (``W`` as ``[d_out, d_in]``), S descending."""

    U: Float[Tensor, "d_out r"]
    S: Float[Tensor, " r"]
    V: Float[Tensor, "d_in r"]
    layer: int | None = None
    kind: str | None = None

    @property
    def rank(self) -> int:
        return self.S.shape[0]

    def top(self, rank: int | None) -> WeightSVD:
        """The top-``rank`` components (all when ``rank`` is None)."""
        if rank is None:
            return self
        if not 1 <= rank <= self.rank:
            raise ValueError(f"rank={rank} is out of range: this weight has {self.rank} singular components.")
        return WeightSVD(self.U[:, :rank], self.S[:rank], self.V[:, :rank], self.layer, self.kind)

    def reconstruct(self) -> Float[Tensor, "d_out d_in"]:
        return (self.U * self.S) @ self.V.T

    def __repr__(self) -> str:
        where = f"layer {self.layer} {self.kind!r}, " if self.kind else ""
        return f"WeightSVD({where}U {tuple(self.U.shape)}, S {tuple(self.S.shape)}, V {tuple(self.V.shape)}, S[0]={self.S[0]:.3g})"


def weight_key(model: Any, sublayer: sl.Sublayer, weight: Tensor, method: str) -> str:
    """Cache key: model name and revision, module path (and q/k/v slice), shape, dtype, method and a
    sampled fingerprint of the values."""
    config = sl.config_of(model)
    parts = [
        model_handle(model).model_id or "",
        str(getattr(config, "_commit_hash", "")),
        sublayer.weight_path or "",
        sublayer.kind if sublayer.fused is not None else "",
        str(tuple(weight.shape)),
        str(weight.dtype),
        method,
        tensor_fingerprint(weight),
    ]
    return hashlib.blake2b("|".join(parts).encode(), digest_size=16).hexdigest()


def factors_fit(weight: Tensor, factors: tuple[Tensor, Tensor, Tensor], tolerance: float) -> bool:
    """Whether ``(U, S, V)`` are singular triplets of ``weight``: right shapes, finite, and
    ``W v_i ≈ s_i u_i`` for the top components (relative to ``s_0``)."""
    U, S, V = factors
    rank = S.shape[0] if S.ndim == 1 else -1
    d_out, d_in = weight.shape
    if rank < 1 or U.shape != (d_out, rank) or V.shape != (d_in, rank):
        return False
    if not all(torch.isfinite(t).all() for t in factors) or S[0] <= 0:
        return False
    k = min(CHECKED_COMPONENTS, rank)
    matrix = weight.detach().to(torch.float32)
    image = matrix @ V[:, :k].to(matrix.device)
    expected = U[:, :k].to(matrix.device) * S[:k].to(matrix.device)
    return bool((image - expected).norm() <= tolerance * float(S[0]) * k**0.5)


warned_unwritable: set[Path] = set()


def read_cached(file: Path, weight: Tensor, tolerance: float) -> tuple[Tensor, Tensor, Tensor] | None:
    """The cached factors in ``file`` if it exists, reads and fits ``weight``; else None (with a warning
    when a file was there but unusable)."""
    if not file.exists():
        return None
    try:
        stored = load_file(str(file))
        factors = stored["U"], stored["S"], stored["V"]
    except Exception as error:  # truncated or garbled file
        warnings.warn(f"Cached SVD {file} is unreadable ({type(error).__name__}); recomputing it.", stacklevel=4)
        return None
    if not factors_fit(weight, factors, tolerance):
        warnings.warn(f"Cached SVD {file} does not fit its weight (wrong shapes or values); recomputing it.", stacklevel=4)
        return None
    return factors


def write_cached(file: Path, factors: tuple[Tensor, Tensor, Tensor]) -> None:
    """Store the factors; a cache folder that cannot be written is reported once and skipped."""
    try:
        tensors = {"U": factors[0].contiguous(), "S": factors[1].contiguous(), "V": factors[2].contiguous()}
        write_atomic(file, lambda temporary: save_file(tensors, str(temporary)))
    except OSError as error:
        if file.parent not in warned_unwritable:
            warned_unwritable.add(file.parent)
            warnings.warn(
                f"Cannot write the SVD cache in {file.parent} ({error.strerror}); SVDs are recomputed in each "
                "process. Point STEERSCOPE_CACHE at a writable folder to keep them.",
                stacklevel=4,
            )


def compute_svd(weight: Float[Tensor, "d_out d_in"], rank: int | None, lowrank: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Thin SVD in float32; randomized (``svd_lowrank``) only when asked, with enough oversampling.

    ``torch.svd_lowrank`` at its defaults (q=6, niter=2) is 12–15 % off in the top
    singular values of these weights; oversampling to ``2·rank + 10`` and 8 power
    iterations keeps it within 1 %.
    """
    matrix = weight.detach().to(torch.float32)
    if lowrank and rank is not None and 2 * rank + 10 < min(matrix.shape):
        U, S, V = torch.svd_lowrank(matrix, q=2 * rank + 10, niter=8)
        return U[:, :rank].contiguous(), S[:rank].contiguous(), V[:, :rank].contiguous()
    U, S, Vh = torch.linalg.svd(matrix, full_matrices=False)
    return U.contiguous(), S.contiguous(), Vh.T.contiguous()


def weight_svd(
    model: Any,
    layer: int,
    kind: str,
    rank: int | None = None,
    *,
    lowrank: bool = False,
    cache: bool = True,
) -> WeightSVD:
    """The (cached) SVD of a sublayer's weight: ``U [d_out, r]``, ``S [r]``, ``V [d_in, r]``.

    ``attn`` and ``mlp`` use the projection that produces the block output (``o``,
    ``down``); ``resid`` has no weight of its own (pick ``o`` or ``down``). GPT-2's
    transposed ``Conv1D`` and fused q/k/v slices are handled. ``lowrank=True`` (with
    ``rank``) uses a randomized SVD for big weights.

    Example:
        basis = weight_svd(model, 3, "up", rank=64)
        torch.allclose(basis.reconstruct(), W, atol=...)   # only for rank=None
    """
    require_weights(model, "A weight SVD (probes.project, U-space directions, InnerPiSSA)")
    layer = sl.resolve_layers(model, layer)[0]
    sublayer = sl.resolve(model, layer, kind)
    weight = sl.weight_matrix(model, sublayer)
    if rank is not None and not 1 <= rank <= min(weight.shape):
        raise ValueError(
            f"rank={rank} is out of range for {kind!r} at layer {layer}: its weight is {tuple(weight.shape)}, so rank ≤ {min(weight.shape)}."
        )
    method = f"lowrank{rank}" if lowrank and rank is not None else "full"
    tolerance = 2e-2 if method != "full" else 1e-3
    key = weight_key(model, sublayer, weight, method)
    svd = memory_cache.get(key) if cache else None
    if svd is None:
        file = svd_cache_dir() / f"{key}.safetensors"
        factors = read_cached(file, weight, tolerance) if cache else None
        if factors is None:
            U, S, V = compute_svd(weight, rank, lowrank)
            factors = (U.cpu(), S.cpu(), V.cpu())
            if cache:
                write_cached(file, factors)
        svd = WeightSVD(*factors)
        if cache:
            memory_cache[key] = svd
            while len(memory_cache) > MEMORY_CACHE_SIZE:
                memory_cache.popitem(last=False)
    svd = WeightSVD(svd.U, svd.S, svd.V, layer, kind)
    return svd.top(rank) if method == "full" else svd


BATCH_BYTES = 1 << 30  # stack at most ~1 GB of weights per batched SVD


def weight_svds(model: Any, keys: Iterable[tuple[int, str]], *, cache: bool = True) -> dict[tuple[int, str], WeightSVD]:
    """Full SVDs of many sublayer weights: cache misses are computed in batches of equal shape on the
    weights' own device (one ``torch.linalg.svd`` per batch), then cached like `weight_svd`.

    Example:
        bases = weight_svds(model, [(layer, kind) for layer in range(30) for kind in ("o", "down")])
    """
    require_weights(model, "A weight SVD (probes.project, U-space directions, InnerPiSSA)")
    keys = [(sl.resolve_layers(model, layer)[0], kind) for layer, kind in keys]
    missing: dict[tuple, list[tuple[tuple[int, str], Tensor, Path, str]]] = {}
    found: dict[tuple[int, str], WeightSVD] = {}
    cache_keys: dict[tuple[int, str], str] = {}
    for layer, kind in keys:
        sublayer = sl.resolve(model, layer, kind)
        weight = sl.weight_matrix(model, sublayer)
        key = cache_keys[(layer, kind)] = weight_key(model, sublayer, weight, "full")
        if cache and key in memory_cache:
            continue
        file = svd_cache_dir() / f"{key}.safetensors"
        factors = read_cached(file, weight, 1e-3) if cache else None
        if factors is not None:
            memory_cache[key] = WeightSVD(*factors)
            continue
        missing.setdefault((tuple(weight.shape), weight.device, weight.dtype), []).append(((layer, kind), weight, file, key))
    for (shape, _, _), group in missing.items():
        per_batch = max(1, BATCH_BYTES // (4 * shape[0] * shape[1]))
        for start in range(0, len(group), per_batch):
            chunk = group[start : start + per_batch]
            stacked = torch.stack([weight.detach().to(torch.float32) for _, weight, _, _ in chunk])
            U, S, Vh = torch.linalg.svd(stacked, full_matrices=False)
            for index, (_, _, file, key) in enumerate(chunk):
                factors = (U[index].contiguous().cpu(), S[index].contiguous().cpu(), Vh[index].T.contiguous().cpu())
                found[chunk[index][0]] = WeightSVD(*factors)
                if cache:
                    write_cached(file, factors)
                    memory_cache[key] = found[chunk[index][0]]
    for layer, kind in keys:
        svd = found.get((layer, kind)) or memory_cache[cache_keys[(layer, kind)]]
        found[(layer, kind)] = WeightSVD(svd.U, svd.S, svd.V, layer, kind)
    while len(memory_cache) > max(MEMORY_CACHE_SIZE, len(keys)):
        memory_cache.popitem(last=False)
    return {key: found[key] for key in keys}


def project(
    hs: Float[Tensor, "... d"],
    basis: WeightSVD,
    side: Literal["out", "in"] = "out",
    rank: int | None = None,
) -> Float[Tensor, "... r"]:
    """Coordinates of ``hs`` in a weight's singular basis: ``hs @ U`` (``side="out"``) or ``x @ V`` (``"in"``).

    Example:
        u_coords = project(acts.diff[12, "down"], weight_svd(model, 12, "down"))
    """
    if side not in ("out", "in"):
        raise ValueError(f"side={side!r}: use 'out' (hs @ U) or 'in' (x @ V).")
    vectors = (basis.U if side == "out" else basis.V)[:, slice(None, rank)]
    if hs.shape[-1] != vectors.shape[0]:
        raise ValueError(
            f"hs has {hs.shape[-1]} features but the {side}put basis of layer {basis.layer} {basis.kind!r} "
            f"has {vectors.shape[0]}: project outputs with side='out' and inputs with side='in'."
        )
    return hs.to(vectors.dtype) @ vectors.to(hs.device)
