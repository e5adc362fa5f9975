"""Gradient directions: per-text gradients of the seeds' pair loss, and natural-gradient steps.

The loss of pair i (its positive text ``+`` and negative text ``−``), read at a later
``loss_layer`` on the last ``tokens`` real positions:

    L_i = −⟨h₊ − h₋, p⟩ + w · Σ_{t ∈ {+, −}} relu(0.99·b_t − logp_t)²

``h`` is the residual stream there (mean over the read tokens), ``p`` the frozen
preference direction (sign-calibrated ``pca_diff`` of the pairs at ``loss_layer``),
``logp_t`` the mean per-token log-probability of text t and ``b_t`` its detached
value, ``w = coherence``. Each text's gradient ``g_t = ∂L_i/∂δ_t`` is taken with respect
to a shift δ_t of the sublayer's output.

Where δ is added (``positions``): by default (``"all"``) at every real position, the
derivative of exactly what `steering.steer` does with a direction by default (it adds
``c·s·v`` at every position), so the direction is derived where it is applied. ``"last"``
adds δ only at the read tokens (the seeds' last-token derivation; the nearest application is
``steer(..., positions=1)``, the last prompt token and the generated ones).

The coherence weight ``w`` defaults to 0 here (the seeds train adapters with
``SEEDS_COHERENCE`` = 10⁴). With ``"last"`` the coherence term has no gradient at all (a shift
at the last token cannot change the log-probabilities of its own text's tokens), so the old
last-token directions never saw it. With ``"all"`` it does, and at δ = 0 the penalty is
already active (``0.99·b > b`` for a negative ``b``), so its gradient is
``−2w·0.01|b|·∇logp``, a push to raise each text's own likelihood (in q_i: the positive
text's against the negative's), not the separation along p: at w = 10⁴ its pair gradients are about 28× the separation term's (RMS norm)
on the tiny test model, where the direction then loses mean_diff (cos 0.27 → −0.04), and about
3.4× on SmolLM2-135M (layer 12, 64 honesty pairs). Pass
``coherence=SEEDS_COHERENCE`` for the seeds' full loss. The separation term makes the positive
and negative gradients oppose; ``q_i = g₊ − g₋`` is the pair's gradient for a shift that
moves the two texts apart.

Directions (``F`` a Fisher matrix of the q_i, ``ḡ = q̄``):

- ``fisher_cov``: ``−(C + λI)⁻¹ q̄`` with C the covariance of the q_i;
- ``fisher_ief``: ``−(F_iEF + λI)⁻¹ q̄`` with the improved empirical Fisher as published
  (Wu et al. 2024), ``F_iEF = mean q qᵀ / ‖∂L_i/∂o_i‖²``: each pair's gradient outer product
  divided by the squared norm of the loss's gradient with respect to the model outputs it
  reads, ``o_i`` = the logits of both texts (coherence term) and their read states h
  (separation term, ‖∂L_i/∂(h₊, h₋)‖² = 2 since ‖p‖ = 1; the paper's loss reads only logits, this
  one reads h too, and without it the weight would be 1/0 at coherence 0). With ``coherence=0`` every pair's
  output gradient is the same, so iEF is the empirical Fisher ``E = C + q̄q̄ᵀ`` and gives
  ``fisher_cov``'s direction (Sherman–Morrison, below);
- ``fisher_unit``: ``−(F_u + λI)⁻¹ q̄`` with ``F_u = mean q qᵀ / ‖q‖²``, the Fisher of unit-
  normalised pair gradients (every pair counts the same). This is what ``fisher_ief`` computed
  before it followed the paper (normalised by the δ-gradient norm, not the output gradient);
- ``fisher_dual``: the positive and negative sides solved apart,
  ``unit(−(F₊ + λI)⁻¹ ḡ₊) − unit(−(F₋ + λI)⁻¹ ḡ₋)`` (F₊, F₋ their empirical Fishers);
- ``svd_grad``: the top right singular vector of the q_i.

The uncentred empirical Fisher ``E = mean q qᵀ`` is not offered: ``E = C + q̄q̄ᵀ``, so by
Sherman–Morrison ``(E + λI)⁻¹q̄ ∝ (C + λI)⁻¹q̄`` for every λ > 0: it is ``fisher_cov`` again.

Damping. With n pairs in d dimensions F has rank ≤ n (C ≤ n − 1), and the default run has fewer pairs
than dimensions (64 pairs, 576 dimensions). A small λ then lets ``(F + λI)⁻¹ḡ`` fit the n
pairs exactly: for ``fisher_cov`` it collapses onto ``ḡ⊥``, the part of ḡ outside the range
of C (the one direction along which every pair's gradient agrees), amplified by 1/λ, and the
pseudo-inverse (λ = 0) discards exactly that part. So λ is relative to the spectrum by default:

- ``rel=r``: ``λ = r·μ`` with ``μ = tr F / d`` the mean eigenvalue of F; the default r = 1
  (``DEFAULT_REL``) is shrinkage halfway to ``μI``, ``(F + μI)/2``. Names ``fisher_cov_rel1e-2`` …
  ``fisher_cov_rel10``; the bare name is ``…_rel1``;
- ``shrinkage="lw"``: Ledoit–Wolf shrinkage of F towards ``μI``, ``F_ρ = (1 − ρ)F + ρμI`` with ρ
  estimated from the samples (sklearn's ``ledoit_wolf_shrinkage``), i.e. ``λ = μ·ρ/(1 − ρ)``
  (names ``…_lw``). It shrinks little when a few eigenvalues dominate, even with n ≤ d (ρ ≈ 0.001–0.002
  on the planted test model), so it is offered, not the default;
- ``reg=λ``: an absolute λ (the seeds' names ``reg0`` … ``reg5`` are 0, 1e-1 … 1e-5 as the notes'
  README lists them; λ = 0 uses the pseudo-inverse).

Note 000 contradicts itself and that README about ``reg1``: it says ``fisher_steer_cov_reg1``
has "reg 1e-5" and orders "reg1 (1e-5) >> reg2 (1e-4) >> reg3 (1e-3)", while the README
(and this module) maps reg1 … reg5 to 1e-1 … 1e-5; note 000's "reg1" is ``fisher_cov_reg5``
here. Both are absolute, so neither says how strong the damping is relative to F: a
`UserWarning` names the numbers when n ≤ d and λ < ``WARN_REL``·μ (this includes λ = 0).
``meta`` records ``reg`` (λ), ``rel`` (λ/μ), ``shrinkage`` (ρ, or None), ``mean_eigenvalue``,
and for ``fisher_cov`` ``outside_share`` (‖ḡ⊥‖/‖ḡ‖) and ``outside_cosine`` (|cos| of the
direction with ḡ⊥: near 1 is the collapse).

Method names: ``fisher_{cov,ief,unit,dual}`` (relative λ = μ, as ``…_rel1``), ``…_rel1e-2``,
``…_rel1e-1``, ``…_rel1``, ``…_rel10`` (relative λ), ``…_lw`` (Ledoit–Wolf) and ``…_reg0`` …
``…_reg5`` (absolute λ, kept). Changed meanings: the bare names used an absolute λ = 1e-3
and δ at the last token; ``fisher_ief*`` was the unit-normalised Fisher, now ``fisher_unit*``;
every name now adds δ at every position with ``coherence=0`` by default.

Gradients are cached (bounded, keyed by the model's weight fingerprint, the pairs and
the options); `clear_gradient_cache` empties it.

Example:
    d = directions.compute("fisher_cov", acts, 12, "resid", model=model, pairs=pairs)
    d.meta["rel"], d.meta["shrinkage"], d.meta["outside_cosine"]
    d = directions.compute("fisher_cov_rel1e-1", acts, 12, "resid", model=model, pairs=pairs)
    d = directions.compute("fisher_dual", acts, 12, "down", model=model, pairs=pairs, rel=0.1, coherence=0)
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

import probes
from probes import sublayers as sl
from probes.batching import check_batch_size, encode, pad_batch
from probes.fingerprint import model_fingerprint
from probes.module_output import module_hidden
from probes.remote import require_weights

from .compute import sign_vote, state_set
from .methods import StateSet, pca_diff, register, unit

REGS = {f"reg{k}": value for k, value in enumerate((0.0, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5))}
"""The seeds' absolute λ names, as their README lists them (note 000 reads reg1 as 1e-5: see the module docstring)."""
RELS = {"rel1e-2": 1e-2, "rel1e-1": 1e-1, "rel1": 1.0, "rel10": 10.0}
"""Relative λ names: λ = value × the mean eigenvalue of F."""
DEFAULT_REL = 1.0
DEFAULT_POSITIONS = "all"
DEFAULT_COHERENCE = 0.0
SEEDS_COHERENCE = 1e4
WARN_REL = 0.1
"""With n ≤ d pairs, a λ below this share of F's mean eigenvalue warns."""
VARIANTS = ("cov", "ief", "unit", "dual")
CACHE_SIZE = 16


@dataclass
class Gradients:
    """Per-text gradients of the pair loss: ``positive[i]`` = g₊ and ``negative[i]`` = g₋ of pair i, and
    ``output_norms[i]`` = ‖∂L_i/∂o_i‖², the squared norm of the pair's loss gradient with respect to the
    model outputs the loss reads (both texts' logits and read states; iEF's weights)."""

    positive: Float[Tensor, "n d"]
    negative: Float[Tensor, "n d"]
    loss_layer: int
    output_norms: Float[Tensor, " n"]

    @property
    def pairs(self) -> Float[Tensor, "n d"]:
        """q_i = g₊ − g₋: the gradient for a shift that moves the pair's texts apart."""
        return self.positive - self.negative


gradient_cache: OrderedDict[tuple, Gradients] = OrderedDict()


def clear_gradient_cache() -> None:
    gradient_cache.clear()


def default_loss_layer(model: Any, layer: int) -> int:
    total = sl.n_layers(model)
    return min(total - 1, layer + max(1, total // 6))


def preference_direction(model: Any, pairs: list, loss_layer: int, tokens: int = 1) -> Tensor:
    """Frozen ``p``: sign-calibrated ``pca_diff`` of the resid states at ``loss_layer``."""
    acts = probes.collect(model, pairs, layers=[loss_layer], sublayers="resid", tokens=tokens, progress=False)
    states = state_set(acts, loss_layer, "resid")
    vector, _ = pca_diff(states)
    return (vector if sign_vote(vector, states) >= 0.5 else -vector).to(torch.float32)


def text_gradients(
    model: Any,
    pairs: list,
    layer: int,
    kind: str,
    loss_layer: int | None = None,
    coherence: float = DEFAULT_COHERENCE,
    tokens: int = 1,
    positions: str = DEFAULT_POSITIONS,
    batch_size: int = 8,
) -> Gradients:
    """Per-text gradients ``g_t = ∂L_i/∂δ_t`` at (layer, kind); see the module docstring. Cached."""
    if positions not in ("last", "all"):
        raise ValueError(
            f"positions={positions!r}: use 'all' (every real position, where steer applies a direction) "
            "or 'last' (the read tokens, as the seeds)."
        )
    require_weights(model, "Gradient directions (fisher_cov, fisher_ief, fisher_unit, fisher_dual, svd_grad)")
    pairs = probes.as_pairs(pairs)
    batch_size = check_batch_size(batch_size)
    layer = sl.resolve_layers(model, layer)[0]
    loss_layer = default_loss_layer(model, layer) if loss_layer is None else sl.resolve_layers(model, loss_layer)[0]
    if loss_layer < layer:
        raise ValueError(f"loss_layer={loss_layer} comes before layer {layer}: the loss must be read at or after the steered sublayer.")
    key = (model_fingerprint(model), probes.shards.texts_digest(pairs), layer, kind, loss_layer, float(coherence), tokens, positions)
    if key in gradient_cache:
        gradient_cache.move_to_end(key)
        return gradient_cache[key]
    pref_dir = preference_direction(model, pairs, loss_layer, tokens)
    target, read = sl.resolve(model, layer, kind), sl.resolve(model, loss_layer, "resid")
    texts = [text for pair in pairs for text in pair]
    ids = encode(model, texts)
    torch_model = sl.unwrap(model)
    device = next(torch_model.parameters()).device
    found: list[Tensor] = []
    outputs: list[Tensor] = []
    for start in range(0, len(pairs), max(1, batch_size // 2)):
        rows = list(range(2 * start, 2 * min(len(pairs), start + max(1, batch_size // 2))))  # whole pairs, interleaved
        batch = pad_batch([ids[r] for r in rows], rows, model.tokenizer.pad_token_id, "left", tokens)
        grads, output_norms = batch_gradients(model, batch, target, read, pref_dir.to(device), coherence, positions)
        found.append(grads.cpu())
        outputs.append(output_norms.cpu())
    grads, output_norms = torch.cat(found), torch.cat(outputs)
    gradients = Gradients(grads[0::2], grads[1::2], loss_layer, output_norms[0::2] + output_norms[1::2])
    gradient_cache[key] = gradients
    while len(gradient_cache) > CACHE_SIZE:
        gradient_cache.popitem(last=False)
    return gradients


def batch_gradients(
    model: Any, batch: Any, target: sl.Sublayer, read: sl.Sublayer, pref_dir: Tensor, coherence: float, positions: str = DEFAULT_POSITIONS
) -> tuple[Float[Tensor, "b d"], Float[Tensor, " b"]]:
    """One forward and backward of a batch of whole pairs (rows 2i, 2i+1): each row's ∂L/∂δ, δ added at the
    read positions (``"last"``) or at every real position (``"all"``), and each row's ‖∂L/∂(logits, h)‖²."""
    torch_model = sl.unwrap(model)
    device = next(torch_model.parameters()).device
    inputs = batch.model_inputs(device)
    rows = torch.arange(len(batch.text_index), device=device)[:, None]
    read_positions = batch.last_positions.to(device)
    where = positions
    captured: dict[str, Tensor] = {}

    real = inputs["attention_mask"][..., None]

    def shift(module, args, output):
        hidden = module_hidden(output)
        width = read_positions.shape[1] if where == "last" else 1
        captured["shift"] = torch.zeros(
            hidden.shape[0], width, hidden.shape[-1], dtype=hidden.dtype, device=hidden.device, requires_grad=True
        )
        if where == "last":
            edited = hidden.index_put((rows, read_positions), hidden[rows, read_positions] + captured["shift"])
        else:
            edited = hidden + captured["shift"] * real.to(hidden.dtype)
        return (edited, *output[1:]) if isinstance(output, tuple) else edited

    def keep(module, args, output):
        captured["later"] = module_hidden(output)

    handles = [sl.get_module(model, target.path).register_forward_hook(shift), sl.get_module(model, read.path).register_forward_hook(keep)]
    try:
        with torch.enable_grad():
            logits = torch_model(**inputs).logits
            h = captured["later"][rows, read_positions].float().mean(1)  # [b, d] at the read tokens
            projection = h @ pref_dir
            mask = inputs["attention_mask"].to(logits.dtype)
            token_mask = mask[:, 1:] * mask[:, :-1]
            logp_tokens = F.log_softmax(logits[:, :-1].float(), -1).gather(-1, inputs["input_ids"][:, 1:, None])[..., 0]
            logp = (logp_tokens * token_mask).sum(-1) / token_mask.sum(-1).clamp_min(1)
            separation = -(projection[0::2] - projection[1::2])
            penalty = F.relu(0.99 * logp.detach() - logp) ** 2
            loss = separation.sum() + coherence * penalty.sum()
            grad, h_grad, logit_grad = torch.autograd.grad(loss, (captured["shift"], h, logits), allow_unused=True)
    finally:
        for handle in handles:
            handle.remove()
    output_norms = h_grad.float().pow(2).sum(-1)
    if logit_grad is not None:
        output_norms = output_norms + logit_grad.float().pow(2).sum((1, 2))
    return target.split(grad.sum(1)).detach().float(), output_norms.detach()


def named_damping(value: float | str, names: dict[str, float], option: str, meaning: str) -> float:
    """``value`` (a number, or one of ``names``) as a damping ≥ 0, or an error naming ``option`` and what it means."""
    if isinstance(value, str):
        if value not in names:
            raise ValueError(f"{option}={value!r}: use a number or one of {', '.join(names)}.")
        return names[value]
    number = float(value)
    if not number >= 0:
        raise ValueError(f"{option}={number}: {meaning}")
    return number


def resolve_reg(reg: float | str) -> float:
    return named_damping(reg, REGS, "reg", "the damping λ must be ≥ 0 (the seeds' reg0 … reg5 are 0, 1e-1 … 1e-5).")


def resolve_rel(rel: float | str) -> float:
    return named_damping(rel, RELS, "rel", "the relative damping must be ≥ 0 (λ = rel × the mean eigenvalue of F).")


def ledoit_wolf(samples: Float[Tensor, "n d"]) -> float:
    """Ledoit–Wolf shrinkage ρ of ``S = XᵀX/n`` (X = ``samples``, taken as they are: centre them for a
    covariance) towards ``μI``, as sklearn's ``ledoit_wolf_shrinkage(X, assume_centered=True)``; from the
    n×n Gram matrix, so it costs O(n²d)."""
    n, d = samples.shape
    gram = samples @ samples.T
    trace = float(gram.trace()) / n  # tr S
    mu = trace / d
    frobenius = float((gram**2).sum()) / n**2  # ‖S‖²_F = ‖XXᵀ‖²_F / n²
    delta = (frobenius - 2 * mu * trace + d * mu**2) / d  # ‖S − μI‖²_F / d
    beta = (float((gram.diagonal() ** 2).sum()) / n - frobenius) / (d * n)
    beta = min(beta, delta)
    return 0.0 if beta <= 0 or delta <= 0 else beta / delta


@dataclass
class Damping:
    """The λ a solve used: ``reg`` absolute (inf: ρ = 1, the direction is ḡ), ``rel`` = λ/μ, ``shrinkage`` ρ."""

    reg: float
    rel: float
    shrinkage: float | None
    mean_eigenvalue: float


def damping_for(samples: Tensor, mean_grad: Tensor, reg: float | None, rel: float | None, shrinkage: str | None) -> Damping:
    """λ for ``F = samplesᵀ samples / n``: absolute ``reg``, Ledoit–Wolf ``shrinkage`` or relative ``rel``.

    When the samples are zero (to 1e-12 of ‖ḡ‖: every pair has the same gradient, so C = 0), every λ > 0
    gives ḡ itself; λ = ∞ says so."""
    n, d = samples.shape
    mu = float(samples.pow(2).sum()) / (n * d)  # tr F / d
    if mu * d <= (1e-12 * float(mean_grad.norm())) ** 2:
        return Damping(0.0 if reg == 0 else math.inf, math.inf, None, mu)
    if reg is not None:
        return Damping(reg, reg / mu if mu > 0 else math.inf, None, mu)
    if shrinkage is not None:
        if shrinkage != "lw":
            raise ValueError(f"shrinkage={shrinkage!r}: use 'lw' (Ledoit–Wolf), or give rel= or reg=.")
        rho = ledoit_wolf(samples)
        ratio = rho / (1 - rho) if rho < 1 else math.inf
        return Damping(ratio * mu, ratio, rho, mu)
    rel = DEFAULT_REL if rel is None else rel
    return Damping(rel * mu, rel, None, mu)


def damped_solve(samples: Tensor, mean_grad: Tensor, damping: Damping) -> Tensor:
    """``(F + λI)⁻¹ ḡ`` with ``F = samplesᵀ samples / n``; λ = 0 uses the pseudo-inverse, λ = ∞ gives ḡ."""
    if math.isinf(damping.reg):
        return mean_grad
    fisher = samples.T @ samples / samples.shape[0]
    if damping.reg == 0:
        return torch.linalg.pinv(fisher, hermitian=True) @ mean_grad
    return torch.linalg.solve(fisher + damping.reg * torch.eye(fisher.shape[0], dtype=fisher.dtype), mean_grad)


def outside_range(samples: Tensor, vector: Tensor) -> tuple[Tensor, float]:
    """ḡ⊥ for ``vector = ḡ``: its part outside the span of ``samples`` (the range of F), and ‖ḡ⊥‖/‖ḡ‖."""
    _, singular, vh = torch.linalg.svd(samples, full_matrices=False)
    basis = vh[singular > singular.max() * max(samples.shape) * torch.finfo(samples.dtype).eps]
    outside = vector - basis.T @ (basis @ vector)
    return outside, float(outside.norm() / vector.norm().clamp_min(1e-300))


def check_damping(name: str, samples: Tensor, damping: Damping, centred: bool, outside: tuple[float, float] | None = None) -> None:
    """Warn when n ≤ d pairs and λ < ``WARN_REL`` × the mean eigenvalue of F (``outside``: ‖ḡ⊥‖/‖ḡ‖ and the
    direction's |cos| with ḡ⊥, for the covariance)."""
    n, d = samples.shape
    if n > d or not damping.rel < WARN_REL:
        return
    if centred and damping.reg == 0:
        what = "the pseudo-inverse (λ = 0) discards ḡ⊥, the part of ḡ outside C's range" + (
            f" ({outside[0]:.0%} of ‖ḡ‖)" if outside else ""
        )
    elif centred:
        what = (
            "(C + λI)⁻¹ḡ collapses onto ḡ⊥, the part of ḡ outside C's range (along which every pair's gradient is the same), amplified by 1/λ"
            + (f" (|cos| {outside[1]:.4f} with it)" if outside else "")
        )
    else:
        what = "(F + λI)⁻¹ḡ approaches F⁺ḡ, which fits the pairs exactly (it sets every pair's projection)"
    warnings.warn(
        f"{name}: {n} pairs ≤ {d} dimensions, so F has rank ≤ {n - 1 if centred else n}, and λ = {damping.reg:.3g} is "
        + ("zero" if damping.reg == 0 else f"only {damping.rel:.3g} × its mean eigenvalue {damping.mean_eigenvalue:.3g}")
        + f": {what}, instead of using the curvature. "
        f"Damp relative to the spectrum: rel ≥ {WARN_REL:g} (the default rel={DEFAULT_REL:g}: the bare name {name} "
        f"or {name}_rel1), or use more pairs than dimensions.",
        UserWarning,
        stacklevel=3,
    )


def fisher_direction(
    states: StateSet,
    model: Any = None,
    pairs: list | None = None,
    reg: float | str | None = None,
    rel: float | str | None = None,
    shrinkage: str | None = None,
    variant: str = "cov",
    loss_layer: int | None = None,
    coherence: float = DEFAULT_COHERENCE,
    tokens: int = 1,
    positions: str = DEFAULT_POSITIONS,
) -> tuple[Tensor, dict]:
    """A natural-gradient direction; ``variant`` is ``cov``, ``ief``, ``unit`` or ``dual`` (see the module docstring).

    Damping, one of: ``reg`` an absolute λ (or ``"reg0"`` … ``"reg5"``), ``rel`` a λ relative to F's mean
    eigenvalue (or ``"rel1e-2"`` … ``"rel10"``; default ``DEFAULT_REL``), or Ledoit–Wolf ``shrinkage="lw"``."""
    given = {name: value for name, value in (("reg", reg), ("rel", rel), ("shrinkage", shrinkage)) if value is not None}
    if len(given) > 1:
        raise ValueError(
            ", ".join(f"{k}={v!r}" for k, v in given.items())
            + ": give one damping (reg absolute, rel relative or shrinkage='lw'), not both."
        )
    reg = None if reg is None else resolve_reg(reg)
    rel = None if rel is None else resolve_rel(rel)
    if variant not in VARIANTS:
        raise ValueError(f"variant={variant!r}: use one of {', '.join(VARIANTS)}.")
    if model is None or pairs is None:
        raise ValueError("Gradient directions need the model and the training pairs: compute(..., model=model, pairs=pairs).")
    gradients = text_gradients(model, pairs, states.layer, states.kind, loss_layer, coherence, tokens, positions)
    name = f"fisher_{variant}"
    extra: dict[str, Any] = {}
    if variant == "dual":
        sides, dampings = [], []
        for side in (gradients.positive.double(), gradients.negative.double()):
            damping = damping_for(side, side.mean(0), reg, rel, shrinkage)
            check_damping(name, side, damping, centred=False)
            sides.append(unit(-damped_solve(side, side.mean(0), damping)))
            dampings.append(damping)
        vector = sides[0] - sides[1]
        damping = dampings[0]
        extra = {"rel_negative": dampings[1].rel, "shrinkage_negative": dampings[1].shrinkage}
    else:
        grads = gradients.pairs.double()
        if variant == "cov":
            samples = grads - grads.mean(0)
        elif variant == "ief":
            samples = grads / gradients.output_norms.double().sqrt().clamp_min(1e-30)[:, None]
        else:
            samples = grads / grads.norm(dim=-1, keepdim=True).clamp_min(1e-30)
        damping = damping_for(samples, grads.mean(0), reg, rel, shrinkage)
        vector = -damped_solve(samples, grads.mean(0), damping)
        if variant == "cov":
            outside, share = outside_range(samples, grads.mean(0))
            cosine = abs(float(unit(vector) @ outside / outside.norm())) if share > 1e-9 else 0.0
            extra = {"outside_share": share, "outside_cosine": cosine}
        check_damping(name, samples, damping, variant == "cov", (extra["outside_share"], extra["outside_cosine"]) if extra else None)
    opposition = float(F.cosine_similarity(gradients.positive.mean(0), gradients.negative.mean(0), dim=0))
    return unit(vector), {
        "reg": damping.reg,
        "rel": damping.rel,
        "shrinkage": damping.shrinkage,
        "mean_eigenvalue": damping.mean_eigenvalue,
        "variant": variant,
        "loss_layer": gradients.loss_layer,
        "coherence": coherence,
        "positions": positions,
        "n_pairs": gradients.positive.shape[0],
        "gradient_cosine": opposition,
    } | extra


def svd_grad(
    states: StateSet,
    model: Any = None,
    pairs: list | None = None,
    loss_layer: int | None = None,
    coherence: float = DEFAULT_COHERENCE,
    tokens: int = 1,
    positions: str = DEFAULT_POSITIONS,
) -> tuple[Tensor, dict]:
    """Top right singular vector of the pair gradients (sign calibrated afterwards)."""
    if model is None or pairs is None:
        raise ValueError("svd_grad needs the model and the training pairs: compute(..., model=model, pairs=pairs).")
    grads = text_gradients(model, pairs, states.layer, states.kind, loss_layer, coherence, tokens, positions).pairs.double()
    _, singular, vt = torch.linalg.svd(grads, full_matrices=False)
    return unit(vt[0]), {"explained_variance": float(singular[0] ** 2 / (singular**2).sum()), "positions": positions}


GRADIENT_NEEDS = ("model", "pairs")
FISHER_NAMES = {
    "cov": "covariance Fisher",
    "ief": "improved empirical Fisher (iEF, as published: weights 1/‖∂L/∂outputs‖²)",
    "unit": "Fisher of unit-normalised pair gradients (fisher_ief before it followed the paper)",
    "dual": "dual (positive and negative sides solved apart)",
}
DAMPING_OPTIONS = ("reg", "rel", "shrinkage")


def variant_method(variant: str, fixed: dict[str, Any], damping_doc: str, changed: str = ""):
    """The registered function of ``fisher_{variant}[_suffix]``: `fisher_direction` with ``fixed`` options."""

    def method(states: StateSet, **options: Any) -> tuple[Tensor, dict]:
        if fixed and set(options) & set(DAMPING_OPTIONS):
            given = sorted(set(options) & set(DAMPING_OPTIONS))
            raise ValueError(f"This method's name fixes the damping ({damping_doc}); pass {given[0]}= to fisher_{variant} instead.")
        return fisher_direction(states, **(options | fixed | {"variant": variant}))

    parameters = [p for p in inspect.signature(fisher_direction).parameters.values() if p.name != "variant"]
    if fixed:
        parameters = [p for p in parameters if p.name not in DAMPING_OPTIONS]
    method.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]  # compute names unknown options
    method.__doc__ = (
        f"Natural-gradient direction, {FISHER_NAMES[variant]}, {damping_doc}; δ at every position by default "
        "(positions='last': the seeds' last token)." + (f" {changed}" if changed else "")
    )
    return method


NOTE_000 = {"reg1": " (note 000 says reg1 is 1e-5, which is reg5 here)", "reg5": " (note 000 calls 1e-5 'reg1')"}


def register_variant(variant: str) -> None:
    """Register ``fisher_{variant}`` and its named dampings (``_lw``, ``_rel…``, ``_reg0`` … ``_reg5``)."""
    renamed = "fisher_ief was the unit-normalised Fisher (now fisher_unit); " if variant == "ief" else ""
    default = f"relative λ = {DEFAULT_REL:g} × the mean eigenvalue of F by default (or reg=, rel=, shrinkage=)"
    changed = f"(Changed: {renamed}it used an absolute λ = 1e-3 and δ at the last token.)"
    named: dict[str, tuple[dict[str, Any], str, str]] = {
        "": ({}, default, changed),
        "_lw": ({"shrinkage": "lw"}, "Ledoit–Wolf shrinkage towards the mean eigenvalue", ""),
    }
    for name, value in RELS.items():
        named[f"_{name}"] = ({"rel": value}, f"relative λ = {value:g} × the mean eigenvalue of F", "")
    for name, value in REGS.items():
        damping = "pseudo-inverse" if value == 0 else f"absolute λ = {value:g}"
        note = "(Changed: fisher_ief_reg* was the unit-normalised Fisher, now fisher_unit_reg*.)" if variant == "ief" else ""
        named[f"_{name}"] = ({"reg": value}, f"the seeds' {name}: {damping}{NOTE_000.get(name, '')}", note)
    for suffix, (fixed, damping_doc, note) in named.items():
        register(f"fisher_{variant}{suffix}", needs=GRADIENT_NEEDS)(variant_method(variant, fixed, damping_doc, note))


register("svd_grad", needs=GRADIENT_NEEDS)(svd_grad)
for _variant in VARIANTS:
    register_variant(_variant)
