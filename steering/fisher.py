"""Gradient directions: per-text gradients at a sublayer, and natural-gradient steps.

The scalar loss (per text ``t``, read at a later ``loss_layer``):

    L_t = −⟨h_t, p⟩ + λ_coh · relu(0.99·b_t − logp_t)²

where ``h_t`` is the residual stream at ``loss_layer`` (last real token), ``p`` the
frozen preference direction there (``pca_diff`` of the pairs, sign-calibrated),
``logp_t`` the mean per-token log-probability of the text and ``b_t`` its detached
value (the seeds' separation loss with its coherence term, at c = 0). The
gradient ``g_t`` is taken w.r.t. an additive shift of the sublayer output applied
at every real position, i.e. what a steering vector does.

Natural-gradient directions use the empirical Fisher ``F = mean g gᵀ`` (or the
covariance of g for ``cov``) and ``v = −(F + λI)⁻¹ ḡ`` with ``λ = reg · tr(F)/d``
(``reg`` itself if F = 0; ``reg = 0``: pseudo-inverse); ``dual`` averages the positive- and negative-text
solutions; ``svd_grad`` is the top right singular vector of the gradients.

Example:
    >>> from steering import directions
    >>> d = directions.compute("fisher", acts, 12, "resid", model=model, pairs=pairs, reg=1e-3)
    >>> d = directions.compute("fisher_cov", acts, 12, "down", model=model, pairs=pairs)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

import probes
from probes import sublayers as sl
from probes.batching import encode, plan_batches
from probes.remote import require_weights

from .directions import METHODS, StateSet, pca_diff, sign_vote, state_set, unit

REGS = {0: 0.0, 1: 1e-1, 2: 1e-2, 3: 1e-3, 4: 1e-4, 5: 1e-5}  # the seeds' reg0 … reg5


@dataclass
class Gradients:
    positive: Float[Tensor, "n d"]
    negative: Float[Tensor, "n d"]
    loss_layer: int

    @property
    def all(self) -> Float[Tensor, "m d"]:
        return torch.cat([self.positive, self.negative])


def default_loss_layer(model: Any, layer: int) -> int:
    total = sl.n_layers(model)
    return min(total - 1, layer + max(1, total // 6))


def preference_direction(model: Any, pairs: list, loss_layer: int) -> Tensor:
    """Frozen ``p``: sign-calibrated ``pca_diff`` of the resid states at ``loss_layer``."""
    acts = probes.collect(model, pairs, layers=[loss_layer], sublayers="resid", progress=False)
    states = state_set(acts, loss_layer, "resid")
    vector, _ = pca_diff(states)
    return (vector if sign_vote(vector, states) >= 0.5 else -vector).to(torch.float32)


gradient_cache: dict[tuple, Gradients] = {}


def text_gradients(
    model: Any,
    pairs: list,
    layer: int,
    kind: str,
    loss_layer: int | None = None,
    coherence: float = 1.0,
    batch_size: int = 8,
) -> Gradients:
    """Per-text gradients ``g_t = ∂L_t/∂δ`` at (layer, kind); cached per (model, pairs, layer, kind)."""
    require_weights(model, "Gradient directions (fisher, fisher_cov, fisher_dual, svd_grad)")
    pairs = probes.as_pairs(pairs)
    layer = sl.resolve_layers(model, layer)[0]
    loss_layer = default_loss_layer(model, layer) if loss_layer is None else sl.resolve_layers(model, loss_layer)[0]
    key = (id(sl.unwrap(model)), tuple(pairs), layer, kind, loss_layer, coherence)
    if key in gradient_cache:
        return gradient_cache[key]
    if loss_layer < layer:
        raise ValueError(f"loss_layer={loss_layer} comes before layer {layer}: the loss must be read at or after the steered sublayer.")
    pref_dir = preference_direction(model, pairs, loss_layer)
    target = sl.resolve(model, layer, kind)
    read = sl.resolve(model, loss_layer, "resid")
    texts = [text for pair in pairs for text in pair]
    tokenizer = model.tokenizer
    batches = plan_batches(encode(model, texts), batch_size, tokenizer.pad_token_id, tokenizer.padding_side, 1)
    device = next(sl.unwrap(model).parameters()).device
    results: list[tuple[Tensor, Tensor]] = []
    for batch in batches:
        inputs = batch.model_inputs(device)
        with torch.enable_grad(), model.trace(inputs):
            hs = sl.module_hidden(model.get(target.path).output).save()
            later = sl.module_hidden(model.get(read.path).output).save()
            logits = model.output.logits.save()
        mask = inputs["attention_mask"].to(logits.dtype)
        rows = torch.arange(len(batch.text_index), device=device)
        h_last = later[rows, batch.last_positions[:, 0].to(device)]
        logp_tokens = F.log_softmax(logits[:, :-1].float(), -1).gather(-1, inputs["input_ids"][:, 1:, None])[..., 0]
        token_mask = mask[:, 1:] * mask[:, :-1]
        logp = (logp_tokens * token_mask).sum(-1) / token_mask.sum(-1).clamp_min(1)
        loss = -(h_last.float() @ pref_dir.to(device)) + coherence * F.relu(0.99 * logp.detach() - logp) ** 2
        (grad,) = torch.autograd.grad(loss.sum(), hs)
        per_text = target.split((grad * mask[..., None]).sum(1)).detach().float().cpu()
        results.append((batch.text_index, per_text))
    ordered = torch.empty(len(texts), results[0][1].shape[-1])
    for index, values in results:
        ordered[index] = values
    gradients = Gradients(ordered[0::2], ordered[1::2], loss_layer)
    gradient_cache[key] = gradients
    return gradients


def regularised_solve(fisher: Tensor, mean_grad: Tensor, reg: float) -> Tensor:
    """``(F + λI)⁻¹ ḡ`` with ``λ = reg · tr(F)/d``; ``reg = 0`` uses the pseudo-inverse."""
    d = fisher.shape[0]
    mean_eigenvalue = float(torch.trace(fisher)) / d
    damping = reg * (mean_eigenvalue if mean_eigenvalue > 0 else 1.0)
    if damping == 0:
        return torch.linalg.pinv(fisher, hermitian=True) @ mean_grad
    return torch.linalg.solve(fisher + damping * torch.eye(d, dtype=fisher.dtype), mean_grad)


def empirical_fisher(grads: Tensor, centred: bool) -> Tensor:
    grads = grads - grads.mean(0) if centred else grads
    return grads.T @ grads / grads.shape[0]


def gradients_for(states: StateSet, model: Any, pairs: list, loss_layer: int | None, coherence: float) -> Gradients:
    if model is None or pairs is None:
        raise ValueError("Gradient methods need the model and the training pairs: compute(..., model=model, pairs=pairs).")
    return text_gradients(model, pairs, states.layer, states.kind, loss_layer, coherence)


def fisher_direction(states: StateSet, model: Any = None, pairs: list | None = None, reg: float = 1e-3,
                     variant: str = "empirical", loss_layer: int | None = None, coherence: float = 1.0) -> tuple[Tensor, dict]:
    """Natural gradient ``−(F + λI)⁻¹ ḡ``; ``variant`` is ``empirical``, ``cov`` or ``dual``."""
    gradients = gradients_for(states, model, pairs, loss_layer, coherence)
    if variant == "dual":
        parts = [regularised_solve(empirical_fisher(g.double(), False), g.double().mean(0), reg) for g in (gradients.positive, gradients.negative)]
        vector = -(unit(parts[0]) + unit(parts[1])) / 2
    elif variant in ("empirical", "cov"):
        grads = gradients.all.double()
        vector = -regularised_solve(empirical_fisher(grads, centred=variant == "cov"), grads.mean(0), reg)
    else:
        raise ValueError(f"variant={variant!r}: use 'empirical', 'cov' or 'dual'.")
    return unit(vector), {"reg": reg, "variant": variant, "loss_layer": gradients.loss_layer}


def svd_grad(states: StateSet, model: Any = None, pairs: list | None = None, loss_layer: int | None = None,
             coherence: float = 1.0) -> tuple[Tensor, dict]:
    """Top right singular vector of the per-text gradients (sign calibrated afterwards)."""
    grads = gradients_for(states, model, pairs, loss_layer, coherence).all.double()
    _, singular, vt = torch.linalg.svd(grads, full_matrices=False)
    return unit(vt[0]), {"explained_variance": float(singular[0] ** 2 / (singular**2).sum())}


METHODS["svd_grad"] = svd_grad
METHODS["fisher"] = fisher_direction
METHODS["fisher_cov"] = lambda states, **options: fisher_direction(states, **(options | {"variant": "cov"}))
METHODS["fisher_dual"] = lambda states, **options: fisher_direction(states, **(options | {"variant": "dual"}))
