"""InnerPiSSA: a reversible adapter in each weight's singular basis.

For a target sublayer ``y = W x (+ b)`` with top-r SVD ``W ≈ U_r S_r V_rᵀ`` (plus the
untouched rest), the adapted forward is

    y(c) = W x + [ (U_r R_u(c)) S_r(c) (V_r R_v(c))ᵀ x − U_r S_r V_rᵀ x ]

computed factored from ``x`` (no dense weight copy). ``R_v(c)`` is the Cayley
rotation of ``c·A`` with ``A`` a learnable skew-symmetric generator, squashed so that
the largest principal angle of ``R(c)`` is at most ``max_angle`` for |c| ≤ 1
(``angle_bound="largest"``; see `cayley`), and ``R(−c) = R(c)ᵀ``: steering is
reversible in c. ``R_u`` is the same, off by default. Singular values: ``add`` S + c·δ,
``tanh`` S + c·tanh(λ), ``mult`` S·exp(c·λ), or ``none``. At c = 0 the correction is
skipped, so the model is exactly the base model.

The no-SVD ablation (``basis="random"``) runs the same adapter in random orthonormal
bases. With ``random_scale="matched"`` (the default) their ``S`` are the weight's true
singular values of the components the SVD adapter would adapt, so a parameter moves the
output about as much in both (matched leverage); ``"projected"`` keeps the old
``S = diag(Uᵀ W V)``, 1–2 orders of magnitude smaller, under which the same parameter
step barely moves the output.

The correction is an edit-output callback (forward hook) on the target module:
the module tree, the base weights and nnsight's view of the model are untouched,
and `InnerPiSSA.detach` removes every trace.

Example:
    adapter = steering.attach_innerpissa(model, layers=range(8, 20), kinds=("o", "down"), rank=16)
    with adapter.coeff(1.0):
        out = probes.torch_module(model)(**batch)      # honest-steered
    adapter.save("runs/adapter")
    adapter = steering.load_innerpissa("runs/adapter", model)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, cast

import torch
from jaxtyping import Float
from safetensors.torch import save_file
from torch import Tensor, nn

import probes
from probes import sublayers as sl
from probes.files import write_atomic, write_json
from probes.model_handle import model_handle
from probes.module_output import edit_hidden

from ..intervene import coefficient_tensor
from .base import AdapterHandle, PeftFactors
from .frozen import freeze

ScaleMode = Literal["add", "tanh", "mult", "none"]
SCALE_MODES = ("add", "tanh", "mult", "none")
AngleBound = Literal["largest", "entries"]
ANGLE_BOUNDS = ("largest", "entries")
RandomScale = Literal["matched", "projected"]
RANDOM_SCALES = ("matched", "projected")
FINGERPRINT_VALUES = 8  # top singular values stored per target to recognise its weight


@dataclass
class AdapterConfig:
    """What an InnerPiSSA adapter adapts and how (saved with it as JSON)."""

    layers: list[int]
    kinds: list[str]
    rank: int = 16
    rotate_v: bool = True
    rotate_u: bool = False
    scale_mode: ScaleMode = "add"
    max_angle: float = 0.3
    init_std: float = 1e-3
    select: Literal["top", "data"] = "top"
    basis: Literal["svd", "random"] = "svd"  # "random": the same adapter in random orthonormal bases (the no-SVD ablation)
    # "largest": the largest principal angle of R(c) is ≤ max_angle for |c| ≤ 1; "entries": each generator entry
    # is ≤ max_angle (adapters saved before the angle bound; it does not bound the angle: up to ~2 rad at rank 16)
    angle_bound: AngleBound = "largest"
    # basis="random" only: "matched": S = the weight's singular values of the adapted components (same leverage as
    # the SVD bases); "projected": S = diag(Uᵀ W V) of the random bases (adapters saved before; 30–180× smaller)
    random_scale: RandomScale = "matched"
    sign: float = 1.0
    seed: int = 0  # of the parameters' initialisation and, for basis="random", of the bases (rebuilt on load)
    model: str | None = None
    components: dict[str, list[int]] = field(default_factory=dict)  # target name -> selected singular indices
    # target name -> {"shape": [d_out, d_in], "singular_values": top values}: which weights it was made for
    targets: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = []
        if self.scale_mode not in SCALE_MODES:
            problems.append(f"scale_mode={self.scale_mode!r} (use one of {SCALE_MODES})")
        if not (isinstance(self.max_angle, (int, float)) and math.isfinite(self.max_angle) and self.max_angle > 0):
            problems.append(f"max_angle={self.max_angle!r} (the rotation bound must be a finite number > 0, e.g. 0.3)")
        elif self.angle_bound == "largest" and not self.max_angle < math.pi:
            problems.append(
                f"max_angle={self.max_angle!r} (a Cayley rotation's angles stay below π: give a bound in radians < π, e.g. 0.3)"
            )
        if self.angle_bound not in ANGLE_BOUNDS:
            problems.append(f"angle_bound={self.angle_bound!r} (use one of {ANGLE_BOUNDS})")
        if self.random_scale not in RANDOM_SCALES:
            problems.append(f"random_scale={self.random_scale!r} (use one of {RANDOM_SCALES})")
        if self.sign not in (1.0, -1.0):
            problems.append(f"sign={self.sign!r} (must be 1 or -1)")
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            problems.append(f"rank={self.rank!r} (a whole number ≥ 1)")
        if self.select not in ("top", "data"):
            problems.append(f"select={self.select!r} (use 'top' or 'data')")
        if self.basis not in ("svd", "random"):
            problems.append(f"basis={self.basis!r} (use 'svd' or 'random')")
        if not (isinstance(self.init_std, (int, float)) and math.isfinite(self.init_std) and self.init_std >= 0):
            problems.append(f"init_std={self.init_std!r} (a finite number ≥ 0)")
        if problems:
            raise ValueError("Invalid InnerPiSSA configuration: " + "; ".join(problems) + ".")


def bounded_generator(generator: Float[Tensor, "r r"], max_angle: float, bound: AngleBound = "largest") -> Float[Tensor, "r r"]:
    """The skew-symmetric part ``K`` of ``generator``, squashed so that the rotation it generates is bounded.

    The eigenvalues of a skew-symmetric ``A`` are ``±iθ_k``, and those of its Cayley rotation
    ``(I − cA)(I + cA)⁻¹`` are ``e^{∓2i·atan(cθ_k)}``: the principal angles are ``2·atan(|c|·θ_k)``.
    ``bound="largest"`` scales ``K`` radially, ``A = K · t·tanh(‖K‖₂/t)/‖K‖₂`` with ``t = tan(max_angle/2)``
    (``‖K‖₂`` = the largest θ), so ``‖A‖₂ < t`` and every principal angle is below ``max_angle`` for
    |c| ≤ 1 (below ``2·atan(|c|·t)`` beyond); near 0, ``A ≈ K``. ``bound="entries"`` is the
    bound adapters were saved with before: each entry ``max_angle·tanh(K/max_angle)``, which
    bounds the entries but not the angle.
    """
    if not max_angle > 0:
        raise ValueError(f"max_angle={max_angle}: the rotation bound must be > 0.")
    skew = (generator - generator.T) / 2
    if bound == "entries":
        return max_angle * torch.tanh(skew / max_angle)  # odd, so still skew-symmetric
    if bound != "largest":
        raise ValueError(f"bound={bound!r}: use one of {ANGLE_BOUNDS}.")
    if not max_angle < math.pi:
        raise ValueError(f"max_angle={max_angle}: a Cayley rotation's angles stay below π; give a bound < π.")
    limit = math.tan(max_angle / 2)
    norm = torch.linalg.matrix_norm(skew.float(), ord=2).to(skew.dtype)  # the largest singular value: stable gradients
    safe = norm.clamp_min(1e-12)
    factor = torch.where(norm > 1e-12, limit * torch.tanh(safe / limit) / safe, torch.ones_like(norm))
    return skew * factor


def cayley(generator: Float[Tensor, "r r"], c: Tensor | float, max_angle: float, bound: AngleBound = "largest") -> Float[Tensor, "... r r"]:
    """Orthogonal ``(I − cA)(I + cA)⁻¹`` for ``A`` the bounded skew-symmetric part of ``generator``
    (`bounded_generator`: with ``bound="largest"`` every principal angle of the rotation is at most
    ``max_angle`` for |c| ≤ 1).

    ``c`` may be a scalar or one value per batch row (then one rotation per row).
    """
    bounded = bounded_generator(generator, max_angle, bound)
    c = torch.as_tensor(c, dtype=generator.dtype, device=generator.device)
    scaled = c.reshape(-1, 1, 1) * bounded if c.ndim else c * bounded
    eye = torch.eye(generator.shape[0], dtype=generator.dtype, device=generator.device)
    return torch.linalg.solve(eye + scaled, eye - scaled, left=False)


class InnerPiSSALayer(nn.Module):
    """The learnable part for one target: rotations and singular-value scaling of its top-r components."""

    U: Tensor
    S: Tensor
    V: Tensor
    theta_v: nn.Parameter | None
    theta_u: nn.Parameter | None
    scale: nn.Parameter | None

    def __init__(self, basis: probes.WeightSVD, config: AdapterConfig, generator: torch.Generator):
        super().__init__()
        r = basis.rank
        self.register_buffer("U", basis.U.clone(), persistent=False)
        self.register_buffer("S", basis.S.clone(), persistent=False)
        self.register_buffer("V", basis.V.clone(), persistent=False)
        self.config = config
        init = lambda *shape: nn.Parameter(torch.randn(*shape, generator=generator) * config.init_std)  # noqa: E731
        self.theta_v = init(r, r) if config.rotate_v else None
        self.theta_u = init(r, r) if config.rotate_u else None
        self.scale = init(r) if config.scale_mode != "none" else None

    def rotation(self, generator: Tensor, c: Tensor | float) -> Tensor:
        """``R(c)`` for ``generator`` (``theta_v`` or ``theta_u``) under this adapter's bound."""
        return cayley(generator, c, self.config.max_angle, self.config.angle_bound)

    @torch.no_grad()
    def largest_angles(self, c: float = 1.0) -> dict[str, float]:
        """The largest principal angle (radians) of each rotation at ``c`` (``"v"``, ``"u"`` when learned)."""
        found = {}
        for name, generator in (("v", self.theta_v), ("u", self.theta_u)):
            if generator is not None:
                found[name] = float(torch.linalg.eigvals(self.rotation(generator, c).double()).angle().abs().max())
        return found

    def singular_values(self, c: Tensor) -> Tensor:
        """``S(c)``: shape ``[r]`` or ``[batch, r]`` for per-row c."""
        c = c.reshape(-1, 1) if c.ndim else c
        mode = self.config.scale_mode
        if mode == "none" or self.scale is None:
            return self.S.expand(c.shape[0], -1) if c.ndim else self.S
        if mode == "add":
            return self.S + c * self.scale
        if mode == "tanh":
            return self.S + c * torch.tanh(self.scale)
        return self.S * torch.exp(c * self.scale)  # "mult"

    def delta(self, x: Float[Tensor, "b s d_in"], c: Tensor) -> Float[Tensor, "b s d_out"]:
        """``adapted(x, c) − original(x)``, factored through the r components."""
        dtype = self.U.dtype
        x = x.to(dtype)
        coords = x @ self.V  # [b, s, r]: V_rᵀ x
        rotated = coords
        if self.theta_v is not None:  # (V R_v)ᵀ x = R_vᵀ (V_rᵀ x)
            R_v = self.rotation(self.theta_v, c)
            rotated = coords @ R_v  # R_v: [r, r] or [b, r, r]
        S_c = self.singular_values(c)
        scaled = rotated * (S_c[:, None, :] if S_c.ndim == 2 else S_c)
        original = coords * self.S
        if self.theta_u is None:  # both parts share U: one projection back instead of two
            return (scaled - original) @ self.U.T
        R_u = self.rotation(self.theta_u, c)
        return (scaled @ R_u.transpose(-1, -2) - original) @ self.U.T

    def delta_weight(self, c: float) -> Float[Tensor, "d_out d_in"]:
        """The dense ``ΔW(c)`` (only for `InnerPiSSA.merge`)."""
        eye = torch.eye(self.V.shape[0], dtype=self.V.dtype, device=self.V.device)
        return self.delta(eye[None], torch.tensor(float(c)))[0].T


@dataclass
class Target:
    name: str
    sublayer: sl.Sublayer
    module: nn.Module


class InnerPiSSA(AdapterHandle):
    """Handle to an attached adapter: coefficient, parameters, merge, save, detach (see `AdapterHandle`)."""

    def __init__(self, model: Any, config: AdapterConfig, layers: dict[str, InnerPiSSALayer], targets: list[Target]):
        self.config = config
        super().__init__(model, "InnerPiSSA", sign=config.sign)
        self.layers = nn.ModuleDict({name.replace(".", "_"): layer for name, layer in layers.items()})
        self.targets = targets
        self.merged: dict[str, Tensor] = {}
        freeze(model, self)  # only adapters train; restored when the last one detaches
        self.handles = [t.module.register_forward_hook(self.hook_for(t)) for t in targets]

    @property
    def sign(self) -> float:
        return self.config.sign

    @sign.setter
    def sign(self, value: float) -> None:
        self.config.sign = value

    def layer(self, target: Target) -> InnerPiSSALayer:
        return cast(InnerPiSSALayer, self.layers[target.name.replace(".", "_")])

    def hook_for(self, target: Target):
        def hook(module, args, output):
            c = self.c
            if self.merged or (not torch.is_tensor(c) and c == 0):
                return output
            x = args[0]

            def edit(hs: Tensor) -> Tensor:
                coefficient = coefficient_tensor(c, hs.shape[0], hs).reshape(-1) * self.config.sign
                coefficient = coefficient[0] if coefficient.numel() == 1 else coefficient
                step = self.layer(target).delta(x, coefficient).to(hs.dtype)
                return hs + (step if target.sublayer.fused is None else target.sublayer.fused.place(step, like=hs))

            return edit_hidden(output, edit)

        return hook

    def _apply_coeff(self) -> None:
        """Nothing to push: the hooks read ``self.c`` and the sign at every forward."""

    def largest_angles(self, c: float = 1.0) -> dict[str, float]:
        """Per target and rotation (``"3.o:v"``): the largest principal angle (radians) of its rotation at
        ``c`` (sign included), at most ``max_angle`` for |c| ≤ 1 under ``angle_bound="largest"``."""
        return {
            f"{target.name}:{which}": angle
            for target in self.targets
            for which, angle in self.layer(target).largest_angles(c * self.config.sign).items()
        }

    def adapted_layers(self) -> list[int]:
        return sorted(set(self.config.layers))

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.layers.parameters() if p.requires_grad]

    def to(self, device: Any) -> InnerPiSSA:
        self.layers.to(device)
        return self

    # -- merge / detach ----------------------------------------------------------
    @torch.no_grad()
    def merge(self, c: float) -> None:
        """Write ``ΔW(c)`` into the base weights (faster inference); `unmerge` restores them exactly."""
        if self.merged:
            raise RuntimeError("Already merged; call unmerge() first.")
        for target in self.targets:
            weight = sl.get_module(self.model, sl.weight_path_of(target.sublayer)).weight
            delta = self.layer(target).delta_weight(c * self.config.sign)  # [features, d_in]
            if target.sublayer.fused is not None:  # place it in this q/k/v slice of the fused rows
                delta = target.sublayer.fused.place(delta.T, like=torch.zeros(delta.shape[1], 3 * delta.shape[0], dtype=delta.dtype)).T
            self.merged[target.name] = weight.detach().clone()
            weight.add_((delta.T if type(target.module).__name__ == "Conv1D" else delta).to(weight.dtype))

    @torch.no_grad()
    def unmerge(self) -> None:
        for target in self.targets:
            if target.name in self.merged:
                sl.get_module(self.model, sl.weight_path_of(target.sublayer)).weight.copy_(self.merged[target.name])
        self.merged = {}

    def _remove(self) -> None:
        """Hooks off and merged weights restored (`detach` also gives back the frozen flags)."""
        self.unmerge()
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def peft_factors(self, c: float) -> dict[str, PeftFactors]:
        """Weight path -> ``(A, B)`` with ``B @ A`` = the weight change at c (fused kinds stacked)."""
        if self.merged:
            raise ValueError("The adapter is merged into the weights: unmerge() it before exporting its change as LoRA.")
        by_module: dict[str, list[PeftFactors]] = {}
        for target in self.targets:
            layer = self.layer(target)
            with torch.no_grad():
                # rows of delta(V_rᵀ) are Mᵀ U_rᵀ, since V_rᵀ V_r = I: that is (U_r M)ᵀ
                B = layer.delta(layer.V.T[None], torch.tensor(float(c) * self.config.sign, dtype=layer.V.dtype))[0].T
                A = layer.V.T
            if target.sublayer.fused is not None:  # this slice's rows of the fused output, zeros elsewhere
                B = target.sublayer.fused.place(B.T, like=torch.zeros(B.shape[1], 3 * B.shape[0], dtype=B.dtype)).T
            by_module.setdefault(sl.weight_path_of(target.sublayer), []).append((A, B))
        return {path: (torch.cat([a for a, _ in parts]), torch.cat([b for _, b in parts], dim=1)) for path, parts in by_module.items()}

    # -- persistence -------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write ``adapter.safetensors`` and ``adapter.json`` (model, targets, options) into ``path``."""
        path = Path(path)
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.layers.state_dict().items()}
        write_atomic(path / "adapter.safetensors", lambda temporary: save_file(tensors, str(temporary)))
        write_json(path / "adapter.json", asdict(self.config))
        return path

    def __repr__(self) -> str:
        c = self.config
        return (
            f"InnerPiSSA({len(self.targets)} targets: layers {c.layers[0]}–{c.layers[-1]} × {c.kinds}, rank {c.rank}, "
            f"V rotation {c.rotate_v}, U rotation {c.rotate_u}, S {c.scale_mode}, {self.num_parameters():,} parameters, c={self.c})"
        )


def data_aware_components(model: Any, layer: int, kind: str, basis: probes.WeightSVD, rank: int, pairs: Sequence[Any]) -> list[int]:
    """Indices of the ``rank`` output singular components whose coordinates differ most between
    positive and negative pairs (mean |Δ(hs @ U)|)."""
    acts = probes.collect(model, pairs, layers=[layer], sublayers=kind, progress=False)
    coords = probes.project(acts.diff[layer, kind][:, -1], basis)
    return coords.abs().mean(0).topk(rank).indices.sort().values.tolist()


def attach_innerpissa(
    model: Any,
    layers: Any = "all",
    kinds: Sequence[str] = ("o", "down"),
    rank: int = 16,
    *,
    rotate_v: bool = True,
    rotate_u: bool = False,
    scale_mode: ScaleMode = "add",
    max_angle: float = 0.3,
    init_std: float = 1e-3,
    select: Literal["top", "data"] = "top",
    basis: Literal["svd", "random"] = "svd",
    angle_bound: AngleBound = "largest",
    random_scale: RandomScale = "matched",
    pairs: Sequence[Any] | None = None,
    seed: int = 0,
    components: dict[str, list[int]] | None = None,
) -> InnerPiSSA:
    """Attach an InnerPiSSA adapter to every (layer, kind) target and return its handle.

    ``select="data"`` (needs ``pairs``) keeps the components that separate the pairs
    most instead of the top-r by singular value. ``basis="random"`` is the no-SVD ablation:
    the same rotations and scalings in random orthonormal bases, with ``S`` the weight's singular values
    of the components the SVD adapter would adapt (``random_scale="matched"``, same leverage) or
    ``diag(Uᵀ W V)`` (``"projected"``). ``max_angle`` bounds the largest principal angle of every
    rotation for |c| ≤ 1 (``angle_bound="largest"``; ``"entries"`` is the old entry-wise bound).
    Raises ``ValueError`` for a rank the weight cannot hold or a kind the model lacks.
    """
    if select == "data" and pairs is None and components is None:
        raise ValueError("select='data' needs pairs=... to find the components that separate them.")
    config = AdapterConfig(
        layers=sl.resolve_layers(model, layers),
        kinds=[kinds] if isinstance(kinds, str) else list(kinds),
        rank=rank,
        rotate_v=rotate_v,
        rotate_u=rotate_u,
        scale_mode=scale_mode,
        max_angle=max_angle,
        init_std=init_std,
        select=select,
        basis=basis,
        angle_bound=angle_bound,
        random_scale=random_scale,
        seed=seed,
        model=model_handle(model).model_id,
        components=dict(components or {}),
    )
    return attach_config(model, config, pairs)


def attach_config(model: Any, config: AdapterConfig, pairs: Sequence[Any] | None = None) -> InnerPiSSA:
    """Attach the adapter ``config`` describes (`attach_innerpissa` builds one; `load_innerpissa` reads one).

    Targets named in ``config.components`` keep those singular components; the others take the top-r, or
    with ``select="data"`` the ones that separate ``pairs`` most."""
    config = replace(config, components=dict(config.components), targets={})
    rank, generator = config.rank, torch.Generator().manual_seed(config.seed)
    adapted: dict[str, InnerPiSSALayer] = {}
    targets: list[Target] = []
    device = next(sl.unwrap(model).parameters()).device
    for layer in config.layers:
        for kind in config.kinds:
            sublayer = sl.resolve(model, layer, kind)
            if kind == "resid" or sublayer.weight_path is None:
                raise ValueError(f"InnerPiSSA adapts weights; {kind!r} has none. Use projection kinds such as 'o', 'down', 'up'.")
            full = probes.weight_svd(model, layer, kind)
            if not 1 <= rank <= full.rank:
                raise ValueError(f"rank={rank} is larger than the {kind!r} weight at layer {layer} allows ({full.rank}).")
            name = f"{layer}.{kind}"
            if name in config.components:
                index = config.components[name]
            elif config.select == "data" and pairs is not None:
                index = data_aware_components(model, layer, kind, full, rank, pairs)
            else:
                index = list(range(rank))
            config.components[name] = list(index)
            config.targets[name] = weight_identity(full)
            if config.basis == "random":
                scale = full.S[index] if config.random_scale == "matched" else None
                chosen = random_basis(sl.weight_matrix(model, sublayer), rank, generator, layer, kind, singular_values=scale)
            else:
                chosen = probes.WeightSVD(full.U[:, index], full.S[index], full.V[:, index], layer, kind)
            adapted[name] = InnerPiSSALayer(chosen, config, generator)
            module = sl.get_module(model, sl.weight_path_of(sublayer))
            targets.append(Target(name, sublayer, module))
    handle = InnerPiSSA(model, config, adapted, targets)
    return handle.to(device)


def random_basis(
    weight: Tensor, rank: int, generator: torch.Generator, layer: int, kind: str, *, singular_values: Tensor | None = None
) -> probes.WeightSVD:
    """Random orthonormal ``U [d_out, r]``, ``V [d_in, r]``: no singular vectors.

    ``S`` is ``singular_values`` when given (the weight's own, for matched leverage: the
    adapter's change ``U (R S(c) − S) Vᵀ`` then has the size it has in the SVD bases), else
    ``diag(Uᵀ W V)``, the weight's (tiny) gain along the random directions.
    """
    matrix = weight.detach().to("cpu", torch.float32)
    U = torch.linalg.qr(torch.randn(matrix.shape[0], rank, generator=generator)).Q
    V = torch.linalg.qr(torch.randn(matrix.shape[1], rank, generator=generator)).Q
    if singular_values is None:
        S = torch.diagonal(U.T @ matrix @ V).clone()
    else:
        if singular_values.shape != (rank,):
            raise ValueError(f"singular_values has shape {tuple(singular_values.shape)}; the bases need {rank} values.")
        S = singular_values.detach().to("cpu", torch.float32).clone()
    return probes.WeightSVD(U, S, V, layer, kind)


def weight_identity(basis: probes.WeightSVD) -> dict[str, Any]:
    """What an adapter records about a target weight to recognise it later."""
    return {"shape": [basis.U.shape[0], basis.V.shape[0]], "singular_values": [round(float(v), 6) for v in basis.S[:FINGERPRINT_VALUES]]}
