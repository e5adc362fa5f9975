"""Gradient directions: per-text gradients of the seeds' pair loss, and natural-gradient steps.

The loss of pair i (its positive text ``+`` and negative text ``−``), read at a later
``loss_layer`` on the last ``tokens`` real positions:

    L_i = −⟨h₊ − h₋, p⟩ + w · Σ_{t ∈ {+, −}} relu(0.99·b_t − logp_t)²

``h`` is the residual stream there (mean over the read tokens), ``p`` the frozen
preference direction (sign-calibrated ``pca_diff`` of the pairs at ``loss_layer``),
``logp_t`` the mean per-token log-probability of text t and ``b_t`` its detached
value, ``w = coherence`` (the seeds' 10⁴). Each text's gradient ``g_t = ∂L_i/∂δ_t``
is taken with respect to a shift δ_t of the sublayer's output at the read
positions (``positions="last"``, as the seeds read the last token) or at every real
position (``"all"``: the derivative of a steering vector, which `steer` adds
everywhere). With ``"last"`` the coherence term has no gradient at all: a shift at the
last token can only change the prediction after the text, not the log-probabilities
of its own tokens, so ``coherence`` matters only with ``"all"``. The separation term
makes the positive and negative gradients oppose; ``q_i = g₊ − g₋`` is the pair's
gradient for a shift that moves the two texts apart.

Directions (``λ = reg``, absolute; the seeds' names ``reg0`` … ``reg5`` are
0, 1e-1 … 1e-5; λ = 0 uses the pseudo-inverse):

- ``fisher_cov``: ``−(C + λI)⁻¹ q̄`` with C the covariance of the q_i;
- ``fisher_ief``: ``−(F_w + λI)⁻¹ q̄`` with ``F_w = mean q qᵀ / ‖q‖²``, the gradient-norm-
  weighted ("improved empirical") Fisher, where every pair counts the same;
- ``fisher_dual``: the positive and negative sides solved apart,
  ``unit(−(F₊ + λI)⁻¹ ḡ₊) − unit(−(F₋ + λI)⁻¹ ḡ₋)`` (F₊, F₋ their empirical Fishers);
- ``svd_grad``: the top right singular vector of the q_i.

The uncentred empirical Fisher ``E = mean q qᵀ`` is not offered: ``E = C + q̄q̄ᵀ``, so by
Sherman–Morrison ``(E + λI)⁻¹q̄ ∝ (C + λI)⁻¹q̄`` for every λ > 0: it is ``fisher_cov`` again.
Every method also exists as ``{name}_reg0`` … ``{name}_reg5``.

Gradients are cached (bounded, keyed by the model's weight fingerprint, the pairs and
the options); `clear_gradient_cache` empties it.

Example:
    d = directions.compute("fisher_cov_reg1", acts, 12, "resid", model=model, pairs=pairs)
    d = directions.compute("fisher_dual", acts, 12, "down", model=model, pairs=pairs, reg=1e-2, coherence=1e4)
"""

from __future__ import annotations

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
DEFAULT_REG = 1e-3
DEFAULT_COHERENCE = 1e4
CACHE_SIZE = 16


@dataclass
class Gradients:
    """Per-text gradients of the pair loss: ``positive[i]`` = g₊ and ``negative[i]`` = g₋ of pair i."""

    positive: Float[Tensor, "n d"]
    negative: Float[Tensor, "n d"]
    loss_layer: int

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
    positions: str = "last",
    batch_size: int = 8,
) -> Gradients:
    """Per-text gradients ``g_t = ∂L_i/∂δ_t`` at (layer, kind); see the module docstring. Cached."""
    if positions not in ("last", "all"):
        raise ValueError(f"positions={positions!r}: use 'last' (the read tokens, as the seeds) or 'all' (every real position).")
    require_weights(model, "Gradient directions (fisher_cov, fisher_ief, fisher_dual, svd_grad)")
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
    for start in range(0, len(pairs), max(1, batch_size // 2)):
        rows = list(range(2 * start, 2 * min(len(pairs), start + max(1, batch_size // 2))))  # whole pairs, interleaved
        batch = pad_batch([ids[r] for r in rows], rows, model.tokenizer.pad_token_id, "left", tokens)
        found.append(batch_gradients(model, batch, target, read, pref_dir.to(device), coherence, positions).cpu())
    grads = torch.cat(found)
    gradients = Gradients(grads[0::2], grads[1::2], loss_layer)
    gradient_cache[key] = gradients
    while len(gradient_cache) > CACHE_SIZE:
        gradient_cache.popitem(last=False)
    return gradients


def batch_gradients(
    model: Any, batch: Any, target: sl.Sublayer, read: sl.Sublayer, pref_dir: Tensor, coherence: float, positions: str = "last"
) -> Float[Tensor, "b d"]:
    """One forward and backward of a batch of whole pairs (rows 2i, 2i+1): each row's ∂L/∂δ, δ added at the
    read positions (``"last"``) or at every real position (``"all"``)."""
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
            (grad,) = torch.autograd.grad(loss, captured["shift"])
    finally:
        for handle in handles:
            handle.remove()
    return target.split(grad.sum(1)).detach().float()


def regularised_solve(fisher: Tensor, mean_grad: Tensor, reg: float) -> Tensor:
    """``(F + λI)⁻¹ ḡ`` with an absolute ``λ = reg``; ``reg = 0`` uses the pseudo-inverse."""
    if reg < 0:
        raise ValueError(f"reg={reg}: the damping λ must be ≥ 0 (the seeds' reg0 … reg5 are 0, 1e-1 … 1e-5).")
    if reg == 0:
        return torch.linalg.pinv(fisher, hermitian=True) @ mean_grad
    return torch.linalg.solve(fisher + reg * torch.eye(fisher.shape[0], dtype=fisher.dtype), mean_grad)


def covariance(grads: Tensor) -> Tensor:
    centred = grads - grads.mean(0)
    return centred.T @ centred / grads.shape[0]


def second_moment(grads: Tensor, normalise: bool = False) -> Tensor:
    if normalise:
        grads = grads / grads.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    return grads.T @ grads / grads.shape[0]


def resolve_reg(reg: float | str) -> float:
    if isinstance(reg, str):
        if reg not in REGS:
            raise ValueError(f"reg={reg!r}: use a number or one of {', '.join(REGS)}.")
        return REGS[reg]
    return float(reg)


def fisher_direction(
    states: StateSet,
    model: Any = None,
    pairs: list | None = None,
    reg: float | str = DEFAULT_REG,
    variant: str = "cov",
    loss_layer: int | None = None,
    coherence: float = DEFAULT_COHERENCE,
    tokens: int = 1,
    positions: str = "last",
) -> tuple[Tensor, dict]:
    """A natural-gradient direction; ``variant`` is ``cov``, ``ief`` or ``dual`` (see the module docstring)."""
    reg = resolve_reg(reg)
    if model is None or pairs is None:
        raise ValueError("Gradient directions need the model and the training pairs: compute(..., model=model, pairs=pairs).")
    gradients = text_gradients(model, pairs, states.layer, states.kind, loss_layer, coherence, tokens, positions)
    if variant == "dual":
        sides = []
        for side in (gradients.positive.double(), gradients.negative.double()):
            sides.append(unit(-regularised_solve(second_moment(side), side.mean(0), reg)))
        vector = sides[0] - sides[1]
    elif variant in ("cov", "ief"):
        grads = gradients.pairs.double()
        fisher = covariance(grads) if variant == "cov" else second_moment(grads, normalise=True)
        vector = -regularised_solve(fisher, grads.mean(0), reg)
    else:
        raise ValueError(f"variant={variant!r}: use 'cov', 'ief' or 'dual'.")
    opposition = float(F.cosine_similarity(gradients.positive.mean(0), gradients.negative.mean(0), dim=0))
    return unit(vector), {
        "reg": reg,
        "variant": variant,
        "loss_layer": gradients.loss_layer,
        "coherence": coherence,
        "positions": positions,
        "gradient_cosine": opposition,
    }


def svd_grad(
    states: StateSet,
    model: Any = None,
    pairs: list | None = None,
    loss_layer: int | None = None,
    coherence: float = DEFAULT_COHERENCE,
    tokens: int = 1,
    positions: str = "last",
) -> tuple[Tensor, dict]:
    """Top right singular vector of the pair gradients (sign calibrated afterwards)."""
    if model is None or pairs is None:
        raise ValueError("svd_grad needs the model and the training pairs: compute(..., model=model, pairs=pairs).")
    grads = text_gradients(model, pairs, states.layer, states.kind, loss_layer, coherence, tokens, positions).pairs.double()
    _, singular, vt = torch.linalg.svd(grads, full_matrices=False)
    return unit(vt[0]), {"explained_variance": float(singular[0] ** 2 / (singular**2).sum())}


GRADIENT_NEEDS = ("model", "pairs")


def variant_method(variant: str, reg: float | None):
    def method(states: StateSet, **options: Any) -> tuple[Tensor, dict]:
        fixed = {"variant": variant} | ({"reg": reg} if reg is not None else {})
        return fisher_direction(states, **(options | fixed))

    method.__doc__ = f"Natural-gradient direction, {variant} Fisher" + (f", λ = {reg:g}" if reg is not None else "") + "."
    return method


register("svd_grad", needs=GRADIENT_NEEDS)(svd_grad)
for _variant in ("cov", "ief", "dual"):
    register(f"fisher_{_variant}", needs=GRADIENT_NEEDS)(variant_method(_variant, None))
    for _name, _value in REGS.items():
        register(f"fisher_{_variant}_{_name}", needs=GRADIENT_NEEDS)(variant_method(_variant, _value))
