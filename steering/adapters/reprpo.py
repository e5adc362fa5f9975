"""ReprPO: train an adapter to separate positive and negative hidden states, coherently.

No labelled completions: each step runs the pairs at c = +1 and c = −1 (the
positive and negative texts swap roles at −1) through plain forwards with the
adapter active, reads the last ``tokens`` real positions at the loss layer(s),
and pushes their separation along a frozen preference direction away from the
reference (c = 0, i.e. the base model), inside a per-token coherence bound:

- projection: ``Δ = c · (sep_c − sep_ref) / scale`` per pair, where ``sep`` is the
  positive−negative gap along the frozen direction (``scale`` its typical size at
  c = 0); loss ``raw`` −Δ, ``logsigmoid`` −log σ(β Δ) (DPO-style), or ``softplus``
  softplus(1 − c·sep_c/scale) (an absolute margin, no reference);
- objective: ``"shift"`` (default) pushes each pair's midpoint ``(pos + neg)/2``
  along the direction (``Δ = c · (mid_c − mid_ref) / scale``: a mean_diff vector at
  c = 1 scores about 1), which is what moves persona-free text. ``"gap"`` (before
  2026-11-30) pushes the positive−negative gap ``sep`` instead; a shift of every
  state along the direction leaves the gap unchanged, so the gap objective cannot
  see it, and its adapters amplify the persona difference rather than move neutral
  text (sentiment control, SmolLM2, validation readouts at a KL budget of 0.05:
  effect 0.56 nats with the gap, 2.52 with the shift). ``"both"`` adds the two;
- coherence: each target token's log-prob may fall at most ``coherence_margin``
  nats below the reference's; the squared excess is averaged over all tokens,
  so it cannot be gamed on a few;
- monotonic: each pair's log-prob difference (positive − negative text) must be
  ordered c = −1 < 0 < +1 by at least ``monotonic_margin`` (a hinge per pair, so
  one pair's violation cannot be cancelled by another's excess).

``direction_space="uspace"`` takes the frozen direction inside the span of the
loss layer's top ``direction_rank`` output singular vectors of ``down_proj`` (PCA of
the pair differences projected there), so it differs from the activation-space one.
`TrainResult` records how well that direction agrees with the pairs: the share of
training pairs it orders the right way at c = 0 (``direction_vote``) and its cosine with
the mean pair difference (``direction_mean_diff_cos``; PC1 of centred differences can be
nearly orthogonal to it).

A training budget chosen by validation: with ``val_pairs`` the same loss (no gradient,
the training pairs' frozen direction and scale) is measured on held-out pairs before
training and every ``eval_every`` steps; training stops after ``patience`` steps
without a better validation loss, and the parameters of the best validation step are
put back (``best_step`` updates; 0 = the initial ones). Without ``val_pairs``,
``patience`` watches the (noisy) training-batch loss and the last parameters are kept.

Example:
    adapter = steering.attach_innerpissa(model, layers=range(10, 20), kinds=("o", "down"), rank=16)
    result = steering.train_reprpo(model, adapter, pairs, val_pairs=held_out, steps=64, lr=3e-3, patience=16)
    result.summary()                                     # steps run, best step, lr, losses, direction checks
    result.history.tail(); result.validation
    analysis.plots.training_curves(result.history)      # the training-curve figure
"""

from __future__ import annotations

import math
import numbers
import random
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

import pandas as pd
import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

import probes
from probes import hooks
from probes import sublayers as sl
from probes.batching import check_lengths, pad_batch, tokenize
from probes.module_output import module_hidden

from ..directions import StateSet, first_component, sign_vote, unit
from .base import AdapterHandle

WHOLE_NUMBERS = {  # option: what it counts
    "steps": "training steps",
    "warmup_steps": "warm-up steps",
    "batch_pairs": "pairs per step",
    "grad_accum": "steps to accumulate gradients over",
    "tokens": "last tokens read per text",
    "max_length": "tokens per text (or None)",
    "direction_rank": "singular vectors spanning the direction",
    "direction_topk": "principal components to choose from (or None)",
    "patience": "steps without improvement (or None)",
    "eval_every": "steps between validation losses",
    "check_pairs": "pairs for the sign check",
    "seed": "the random seed",
}
OPTIONAL = ("max_length", "direction_topk", "patience")
OBJECTIVES = ("shift", "gap", "both")  # what the projection loss pushes along the frozen direction (see the module docstring)


@dataclass
class ReprPOConfig:
    """Training options (every field can be overridden by keyword in `train_reprpo`)."""

    steps: int = 40
    lr: float = 3e-3
    weight_decay: float = 0.0
    warmup_steps: int = 4
    batch_pairs: int = 4
    grad_accum: int = 1
    seed: int = 0
    loss_layers: Sequence[int] | None = None  # default: about 3/4 of the depth
    tokens: int = 4  # last real tokens read per text
    max_length: int | None = 256  # longer texts keep their last max_length tokens
    projection: Literal["raw", "logsigmoid", "softplus"] = "logsigmoid"
    beta: float = 1.0
    coherence_weight: float = 10.0
    coherence_margin: float = 0.2
    monotonic_weight: float = 1.0
    monotonic_margin: float = 0.01  # nats per pair
    objective: Literal["gap", "shift", "both"] = "shift"  # what moves along the frozen direction: the pair midpoint, the gap, or both
    direction_space: Literal["activation", "uspace"] = "activation"
    direction_rank: int = 16  # for direction_space="uspace": top output singular vectors spanning the direction
    direction_topk: int | None = None  # pick the best-aligned of the top-k PCs (None: PC1)
    clip_grad: float = 1.0
    patience: int | None = None  # stop after this many steps without a better validation loss (training loss without val_pairs)
    eval_every: int = 4  # with val_pairs: steps between validation losses (also measured before the first step and after the last)
    check_pairs: int = 16  # training pairs used by the sign check after training
    progress: bool = True

    def __post_init__(self) -> None:
        for name, meaning in WHOLE_NUMBERS.items():
            value, least = getattr(self, name), 0 if name in ("warmup_steps", "seed") else 1
            if value is None and name in OPTIONAL:
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
                raise ValueError(f"{name}={value!r}: give a whole number of {meaning}, at least {least}.")
        for name in (
            "lr",
            "weight_decay",
            "beta",
            "coherence_weight",
            "coherence_margin",
            "monotonic_weight",
            "monotonic_margin",
            "clip_grad",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name}={value!r}: give a finite number ≥ 0.")
        if self.lr == 0:
            raise ValueError("lr=0.0: a learning rate of 0 trains nothing; give a positive one (e.g. 3e-3).")
        if self.projection not in ("raw", "logsigmoid", "softplus"):
            raise ValueError(f"projection={self.projection!r}: use 'raw', 'logsigmoid' or 'softplus'.")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective={self.objective!r}: use 'shift' (the pair midpoint), 'gap' (the pair gap) or 'both'.")
        if self.objective != "gap" and self.projection == "softplus":
            raise ValueError(
                f"objective={self.objective!r} with projection='softplus': softplus is an absolute margin on the gap; "
                "a midpoint shift is measured from the reference, so use projection='logsigmoid' or 'raw'."
            )
        if self.direction_space not in ("activation", "uspace"):
            raise ValueError(f"direction_space={self.direction_space!r}: use 'activation' or 'uspace'.")


@dataclass
class TrainResult:
    """What `train_reprpo` did: the per-step history, the budget it used and checks of its frozen direction.

    ``steps_run`` optimizer steps were taken; the adapter holds the parameters after
    ``best_step`` of them (the best validation loss; ``steps_run`` without validation pairs).
    ``train_loss`` and ``val_loss`` are the full loss at those parameters on all training and
    validation pairs (no gradient, before any sign flip); ``validation`` has the validation loss
    and its parts at each evaluation (``step`` = steps taken). Per loss layer, ``direction_vote``
    is the share of training pairs whose positive−negative gap along the frozen direction at
    c = 0 (mean over the read tokens, as in the loss) is positive, and ``direction_mean_diff_cos``
    the direction's cosine with the mean positive−negative difference of the read states at
    c = 0. ``weight_change`` is ‖ΔW‖_F at c = +1 over all targets (`AdapterHandle.weight_change_norm`).
    """

    history: pd.DataFrame
    sign_flipped: bool
    seconds: float
    config: ReprPOConfig
    directions: dict[int, Tensor] = field(default_factory=dict)
    separation: dict[str, float] = field(default_factory=dict)
    steps_run: int = 0
    best_step: int = 0
    lr: float = float("nan")
    train_loss: float = float("nan")
    val_loss: float | None = None
    validation: pd.DataFrame | None = None
    direction_vote: dict[int, float] = field(default_factory=dict)
    direction_mean_diff_cos: dict[int, float] = field(default_factory=dict)
    weight_change: float | None = None

    def summary(self) -> dict[str, Any]:
        """One flat row for a table: budget, losses, direction checks (per loss layer) and cost."""
        row: dict[str, Any] = {
            "steps": self.config.steps,
            "steps_run": self.steps_run,
            "best_step": self.best_step,
            "lr": self.lr,
            "train_loss": self.train_loss,
            "val_loss": self.val_loss,
            "stopped_early": self.steps_run < self.config.steps,
            "sign_flipped": self.sign_flipped,
            "weight_change": self.weight_change,
            "seconds": self.seconds,
        }
        for layer in self.direction_vote:
            row[f"direction_vote_L{layer}"] = self.direction_vote[layer]
            row[f"direction_mean_diff_cos_L{layer}"] = self.direction_mean_diff_cos[layer]
        return row


@dataclass
class Encoded:
    """The training texts, tokenized once (positive, negative interleaved)."""

    ids: list[list[int]]
    pad_id: int

    def batch(self, pair_index: Sequence[int], tokens: int):
        rows = [i for p in pair_index for i in (2 * p, 2 * p + 1)]
        return pad_batch([self.ids[i] for i in rows], rows, self.pad_id, "left", tokens)


def encode(model: Any, pairs: list, tokens: int, max_length: int | None) -> Encoded:
    texts = [text for pair in pairs for text in pair]
    ids = tokenize(model.tokenizer, texts)
    if max_length is not None:
        ids = [row[-max_length:] for row in ids]
    check_lengths(model, ids, texts)
    for index, row in enumerate(ids):
        if len(row) < tokens + 1:
            raise ValueError(
                f"pair {index // 2} ({'positive' if index % 2 == 0 else 'negative'}) has {len(row)} real token(s) "
                f"after truncation to max_length={max_length}: fewer than tokens={tokens} plus one to predict. "
                "Use longer texts, fewer tokens or a larger max_length."
            )
    return Encoded(ids, model.tokenizer.pad_token_id)


def forward_states(model: Any, batch, read_paths: Sequence[str], grad: bool):
    """One forward with plain hooks (training is local): last-token states at ``read_paths`` and per-token
    log-probs of the targets."""
    device = next(sl.unwrap(model).parameters()).device
    inputs = batch.model_inputs(device)
    rows = torch.arange(len(batch.text_index), device=device)[:, None]
    positions = batch.last_positions.to(device)
    states: dict[str, Tensor] = {}

    def reader(path: str):
        def read(output: Any, args: tuple) -> None:
            states[path] = module_hidden(output)[rows, positions]

        return read

    with torch.set_grad_enabled(grad), hooks.edit_outputs(model, {path: reader(path) for path in read_paths}):
        logits = sl.unwrap(model)(**inputs).logits
    logp = F.log_softmax(logits[:, :-1].float(), -1).gather(-1, inputs["input_ids"][:, 1:, None])[..., 0]
    mask = (inputs["attention_mask"][:, 1:] * inputs["attention_mask"][:, :-1]).to(logp.dtype)
    return states, logp, mask


def default_loss_layer(total: int) -> int:
    """The layer whose residual stream the ReprPO loss reads by default: about 3/4 of the depth."""
    return min(total - 1, (3 * total) // 4)


def check_loss_after_adapter(loss_layers: Sequence[int], adapter: AdapterHandle) -> None:
    """Refuse an adapter layer after every loss layer: it cannot change the states the loss reads (zero gradient)."""
    adapted = adapter.adapted_layers()
    if adapted and max(adapted) > max(loss_layers):
        after = sorted(layer for layer in adapted if layer > max(loss_layers))
        raise ValueError(
            f"The ReprPO loss reads the residual stream at layer(s) {list(loss_layers)}, but the adapter also changes layer(s) {after} "
            f"after it: those parts cannot move what the loss reads and would never train. Read the loss at or after the deepest "
            f"adapted layer (loss_layers=[{max(adapted)}]) or adapt earlier layers."
        )


def separations(states: dict[str, Tensor], directions: dict[str, Tensor]) -> Float[Tensor, "layer pair"]:
    """Positive − negative gap along each frozen direction, averaged over the read tokens."""
    gaps = []
    for path, hs in states.items():
        projected = hs.float() @ directions[path].to(hs.device)  # [texts, tokens]
        gaps.append((projected[0::2] - projected[1::2]).mean(-1))
    return torch.stack(gaps)


def midpoints(states: dict[str, Tensor], directions: dict[str, Tensor]) -> Float[Tensor, "layer pair"]:
    """Each pair's midpoint ((positive + negative) / 2) along each frozen direction, averaged over the read tokens:
    what a shift of every state moves, and what the gap cannot see."""
    mids = []
    for path, hs in states.items():
        projected = hs.float() @ directions[path].to(hs.device)  # [texts, tokens]
        mids.append(((projected[0::2] + projected[1::2]) / 2).mean(-1))
    return torch.stack(mids)


def moved(states: dict[str, Tensor], directions: dict[str, Tensor], objective: str) -> Float[Tensor, "layer pair"]:
    """What the objective pushes along the frozen directions: the gap, the midpoint, or their sum."""
    if objective == "gap":
        return separations(states, directions)
    if objective == "shift":
        return midpoints(states, directions)
    return separations(states, directions) + midpoints(states, directions)


def pair_logp_gap(logp: Tensor, mask: Tensor) -> Float[Tensor, " pair"]:
    """Per pair: mean token log-prob of the positive text − of the negative text."""
    per_text = (logp * mask).sum(-1) / mask.sum(-1).clamp_min(1)
    return per_text[0::2] - per_text[1::2]


def monotonic_loss(gap_plus: Tensor, gap_minus: Tensor, gap_ref: Tensor, margin: float) -> Tensor:
    """Mean over pairs of hinges that order each pair's gap c = −1 < 0 < +1 by ``margin``."""
    return (F.relu(margin + gap_ref - gap_plus) + F.relu(margin + gap_minus - gap_ref)).mean()


def preference_directions(
    reference: dict[str, Tensor], model: Any, loss_layers: list[int], config: ReprPOConfig, paths: list[str]
) -> dict[str, Tensor]:
    """Frozen direction per loss layer: PC of the reference pair differences (sign-calibrated),
    optionally in the layer's U basis, optionally the best-aligned of the top-k components."""
    found = {}
    for layer, path in zip(loss_layers, paths):
        hs = reference[path].double()  # [texts, tokens, d]
        positive, negative = hs[0::2].flatten(0, 1), hs[1::2].flatten(0, 1)
        basis = None
        if config.direction_space == "uspace":
            basis = probes.weight_svd(model, layer, "down", rank=min(config.direction_rank, positive.shape[-1]))
            U = basis.U.double()  # [d, r]: the top-r output directions of the loss layer's MLP
            positive, negative = positive @ U, negative @ U
        states = StateSet(positive, negative, layer, "resid")
        diffs = states.diffs.numpy()
        if config.direction_topk:
            from sklearn.decomposition import PCA

            components = PCA(n_components=min(config.direction_topk, len(diffs))).fit(diffs).components_
            mean = states.diffs.mean(0)
            vector = torch.from_numpy(components[int(abs(torch.from_numpy(components) @ unit(mean)).argmax())])
        else:
            vector = first_component(diffs)[0]
        vector = vector if sign_vote(vector, states) >= 0.5 else -vector
        if basis is not None:
            vector = basis.U.double() @ vector
        found[path] = unit(vector).float()
    return found


def learning_rate(step: int, config: ReprPOConfig) -> float:
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def projection_loss(gap_c: Tensor, gap_ref: Tensor, scale: Tensor, c: float, config: ReprPOConfig) -> Tensor:
    if config.projection == "raw":
        return -(c * (gap_c - gap_ref) / scale).mean()
    if config.projection == "logsigmoid":
        return -F.logsigmoid(config.beta * c * (gap_c - gap_ref) / scale).mean()
    if config.projection == "softplus":
        return F.softplus(1 - c * gap_c / scale).mean()
    raise ValueError(f"projection={config.projection!r}: use 'raw', 'logsigmoid' or 'softplus'.")


def coherence_loss(logp_c: Tensor, logp_ref: Tensor, mask: Tensor, config: ReprPOConfig) -> Tensor:
    """Per-token bound: squared excess of the log-prob drop beyond the margin, averaged over tokens."""
    excess = F.relu(logp_ref - config.coherence_margin - logp_c) * mask
    return (excess**2).sum() / mask.sum().clamp_min(1)


@dataclass
class Reference:
    """What the loss compares with, for one set of pairs: the c = 0 gaps and midpoints along the frozen
    directions (``[layer, pair]``) and each text's target log-probs."""

    gaps: Tensor
    logp: list[Tensor]
    mids: Tensor


def batch_loss(
    model: Any,
    adapter: AdapterHandle,
    encoded: Encoded,
    index: list[int],
    reference: Reference,
    directions: dict[str, Tensor],
    scale: Tensor,
    paths: list[str],
    config: ReprPOConfig,
    grad: bool,
) -> tuple[Tensor, dict[str, float]]:
    """The ReprPO loss of the pairs ``index`` (forwards at c = +1 and −1) and its parts as numbers."""
    batch = encoded.batch(index, config.tokens)
    ref_gap, ref_mid = reference.gaps[:, index], reference.mids[:, index]
    gaps, mids, logp_gaps, losses = {}, {}, {}, []
    parts = {"projection": 0.0, "coherence": 0.0}
    for c in (1.0, -1.0):
        with adapter.coeff(c):
            states, logp, mask = forward_states(model, batch, paths, grad=grad)
        gaps[c], mids[c] = separations(states, directions), midpoints(states, directions)
        logp_gaps[c] = pair_logp_gap(logp, mask)
        device = gaps[c].device
        projection = torch.zeros((), device=device)
        if config.objective in ("gap", "both"):
            projection = projection + projection_loss(gaps[c], ref_gap.to(device), scale.to(device), c, config)
        if config.objective in ("shift", "both"):  # the midpoint in units of the typical pair gap (a mean_diff c = 1 moves it 1)
            projection = projection + projection_loss(mids[c], ref_mid.to(device), scale.to(device), c, config)
        coherence = coherence_loss(logp, aligned_reference(reference.logp, batch, mask), mask, config)
        losses.append((projection, coherence))
        parts["projection"] += projection.item()
        parts["coherence"] += coherence.item()
    ref_logp_gap = torch.stack([(reference.logp[2 * p].mean() - reference.logp[2 * p + 1].mean()) for p in index])
    monotonic = monotonic_loss(logp_gaps[1.0], logp_gaps[-1.0], ref_logp_gap.to(logp_gaps[1.0].device), config.monotonic_margin)
    loss = sum(p + config.coherence_weight * c for p, c in losses) + config.monotonic_weight * monotonic
    parts = {"loss": float(loss.item()), **parts, "monotonic": monotonic.item()}
    for name, c in (("gain_pos", 1.0), ("gain_neg", -1.0)):
        gain = (gaps[c].detach() - ref_gap.to(gaps[c].device)) / scale.to(gaps[c].device)
        parts[name] = gain.mean().item()
    for name, c in (("shift_pos", 1.0), ("shift_neg", -1.0)):
        shift = (mids[c].detach() - ref_mid.to(mids[c].device)) / scale.to(mids[c].device)
        parts[name] = shift.mean().item()
    return torch.as_tensor(loss), parts


@torch.no_grad()
def evaluate_loss(
    model: Any,
    adapter: AdapterHandle,
    encoded: Encoded,
    reference: Reference,
    directions: dict[str, Tensor],
    scale: Tensor,
    paths: list[str],
    config: ReprPOConfig,
) -> dict[str, float]:
    """The loss and its parts over every pair of ``encoded`` (batches weighted by their pairs), no gradient."""
    n_pairs = len(encoded.ids) // 2
    total: dict[str, float] = {}
    for start in range(0, n_pairs, config.batch_pairs * 2):
        index = list(range(start, min(n_pairs, start + config.batch_pairs * 2)))
        _, parts = batch_loss(model, adapter, encoded, index, reference, directions, scale, paths, config, grad=False)
        for name, value in parts.items():
            total[name] = total.get(name, 0.0) + value * len(index) / n_pairs
    return total


def direction_checks(reference: dict[str, Tensor], directions: dict[str, Tensor], gaps: Tensor) -> tuple[list[float], list[float]]:
    """Per loss layer: the share of pairs with a positive gap (``gaps`` ``[layer, pair]``) and the direction's
    cosine with the mean positive − negative difference of the read states."""
    votes = [float((row > 0).double().mean()) for row in gaps]
    cosines = []
    for path, direction in directions.items():
        hs = reference[path].double()  # [texts, tokens, d]
        mean_diff = (hs[0::2] - hs[1::2]).mean((0, 1))
        cosines.append(float(mean_diff @ direction.double() / (mean_diff.norm() * direction.double().norm()).clamp_min(1e-30)))
    return votes, cosines


def reference_pass(model: Any, adapter: AdapterHandle, encoded: Encoded, n_pairs: int, paths: list[str], config: ReprPOConfig):
    """States and token log-probs of every training text at c = 0 (the base model), computed once."""
    states: dict[str, list[Tensor]] = {path: [] for path in paths}
    token_logp: list[Tensor] = [torch.empty(0)] * (2 * n_pairs)
    with adapter.coeff(0.0):
        for start in range(0, n_pairs, config.batch_pairs * 2):
            index = list(range(start, min(n_pairs, start + config.batch_pairs * 2)))
            batch = encoded.batch(index, config.tokens)
            found, logp, mask = forward_states(model, batch, paths, grad=False)
            for path in paths:
                states[path].append(found[path].detach().float().cpu())
            for row, text in enumerate(batch.text_index.tolist()):
                token_logp[text] = logp[row][mask[row].bool()].detach().cpu()
    return {path: torch.cat(parts) for path, parts in states.items()}, token_logp


def aligned_reference(token_logp: list[Tensor], batch, mask: Tensor) -> Tensor:
    """Reference log-probs placed where the (left-padded) batch has its real targets."""
    out = torch.zeros_like(mask)
    for row, text in enumerate(batch.text_index.tolist()):
        values = token_logp[text].to(mask.device)
        out[row, mask.shape[1] - len(values) :] = values
    return out


def train_reprpo(
    model: Any,
    adapter: AdapterHandle,
    pairs: Sequence[Any],
    config: ReprPOConfig | None = None,
    *,
    val_pairs: Sequence[Any] | None = None,
    **overrides: Any,
) -> TrainResult:
    """Train ``adapter`` on ``pairs`` with the ReprPO loss; see the module docstring.

    With ``val_pairs`` (held-out pairs) the loss is measured on them before training and every
    ``eval_every`` steps, training stops after ``patience`` steps without a better one, and the
    adapter keeps the parameters of the best validation step. Returns a `TrainResult` (history
    DataFrame, budget used, losses, direction checks, whether the sign was flipped, seconds);
    plot the history with ``analysis.plots.training_curves``. After training, a sign check on
    the training pairs flips the adapter if c = +1 separates the wrong way.
    """
    if not isinstance(adapter, AdapterHandle):
        raise TypeError(
            f"train_reprpo trains an adapter (steering.attach_innerpissa or steering.attach_lora), not a {type(adapter).__name__}."
        )
    unknown = sorted(set(overrides) - {f.name for f in fields(ReprPOConfig)})
    if unknown:
        raise ValueError(f"Unknown training option(s) {unknown}; ReprPOConfig has: {', '.join(f.name for f in fields(ReprPOConfig))}.")
    config = ReprPOConfig(**(asdict(config or ReprPOConfig()) | overrides))
    pairs = probes.as_pairs(pairs)
    encoded = encode(model, pairs, config.tokens, config.max_length)
    if len(pairs) < 2:
        raise ValueError("ReprPO needs at least 2 pairs (the preference direction is a PCA of their differences).")
    held_out = None
    if val_pairs is not None:
        val_pairs = probes.as_pairs(val_pairs)
        shared = {tuple(p) for p in val_pairs} & {tuple(p) for p in pairs}
        if shared:
            warnings.warn(
                f"{len(shared)} of the {len(val_pairs)} validation pairs are also training pairs: the budget chosen on them "
                "is not a held-out choice.",
                stacklevel=2,
            )
        held_out = encode(model, val_pairs, config.tokens, config.max_length)
    torch.manual_seed(config.seed)
    order_rng = random.Random(config.seed)
    loss_layers = sl.resolve_layers(
        model, config.loss_layers if config.loss_layers is not None else [default_loss_layer(sl.n_layers(model))]
    )
    check_loss_after_adapter(loss_layers, adapter)
    paths = [sl.resolve(model, layer, "resid").path for layer in loss_layers]
    started = time.time()

    reference_states, ref_logp = reference_pass(model, adapter, encoded, len(pairs), paths, config)
    directions = preference_directions(reference_states, model, loss_layers, config, paths)
    reference = Reference(separations(reference_states, directions), ref_logp, midpoints(reference_states, directions))
    scale = reference.gaps.abs().mean(-1, keepdim=True).clamp_min(1e-6)
    votes, cosines = direction_checks(reference_states, directions, reference.gaps)
    val_reference = None
    if held_out is not None:
        val_states, val_logp = reference_pass(model, adapter, held_out, len(held_out.ids) // 2, paths, config)
        val_reference = Reference(separations(val_states, directions), val_logp, midpoints(val_states, directions))

    parameters = adapter.trainable_parameters()
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    history, validation = [], []
    best, since_best = float("inf"), 0
    best_step, kept = 0, list[Tensor]()

    def validate(steps_taken: int) -> None:
        nonlocal best, best_step, kept, since_best
        assert held_out is not None and val_reference is not None
        parts = evaluate_loss(model, adapter, held_out, val_reference, directions, scale, paths, config)
        validation.append({"step": steps_taken, **{f"val_{name}": value for name, value in parts.items()}})
        if parts["loss"] < best:
            best, best_step, since_best = parts["loss"], steps_taken, 0
            kept = [p.detach().clone() for p in parameters]
        else:
            since_best = steps_taken - best_step

    if held_out is not None:
        validate(0)
    bar = tqdm(range(config.steps), desc="ReprPO", disable=not config.progress)
    schedule: list[int] = []
    steps_run = 0
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, config)
        optimizer.zero_grad(set_to_none=True)
        parts = dict.fromkeys(("loss", "projection", "coherence", "monotonic", "gain_pos", "gain_neg", "shift_pos", "shift_neg"), 0.0)
        for _ in range(config.grad_accum):
            if len(schedule) < config.batch_pairs:
                schedule += order_rng.sample(range(len(pairs)), len(pairs))
            index, schedule = schedule[: config.batch_pairs], schedule[config.batch_pairs :]
            loss, found = batch_loss(model, adapter, encoded, index, reference, directions, scale, paths, config, grad=True)
            (loss / config.grad_accum).backward()
            for name, value in found.items():
                parts[name] += value / config.grad_accum
        if config.clip_grad:
            torch.nn.utils.clip_grad_norm_(parameters, config.clip_grad)
        optimizer.step()
        steps_run = step + 1
        history.append({"step": step, "lr": optimizer.param_groups[0]["lr"], **parts, "seconds": time.time() - started})
        bar.set_postfix(
            loss=f"{parts['loss']:.3f}",
            proj=f"{parts['projection']:.3f}",
            coh=f"{parts['coherence']:.3f}",
            up=f"{parts['gain_pos']:+.2f}",
            down=f"{parts['gain_neg']:+.2f}",
        )
        if held_out is not None:
            if steps_run % config.eval_every == 0 or steps_run == config.steps:
                validate(steps_run)
                if config.patience is not None and since_best >= config.patience:
                    break
            continue
        if parts["loss"] < best - 1e-4:
            best, since_best = parts["loss"], 0
        else:
            since_best += 1
            if config.patience is not None and since_best >= config.patience:
                break
    bar.close()

    val_loss = None
    if held_out is not None:
        if validation[-1]["step"] != steps_run:  # the last parameters compete too
            validate(steps_run)
        with torch.no_grad():
            for parameter, saved in zip(parameters, kept, strict=True):
                parameter.copy_(saved)
        val_loss = best
    else:
        best_step = steps_run
    train_loss = evaluate_loss(model, adapter, encoded, reference, directions, scale, paths, config)["loss"]

    check = separation_check(model, adapter, encoded, min(len(pairs), config.check_pairs), paths, directions, config)
    flipped = check["c=+1"] < check["c=0"]
    if flipped:
        adapter.flip_sign()
        check = {"c=+1": check["c=-1"], "c=0": check["c=0"], "c=-1": check["c=+1"]}
    return TrainResult(
        pd.DataFrame(history),
        flipped,
        time.time() - started,
        config,
        {layer: directions[path] for layer, path in zip(loss_layers, paths)},
        check,
        steps_run=steps_run,
        best_step=best_step,
        lr=config.lr,
        train_loss=train_loss,
        val_loss=val_loss,
        validation=pd.DataFrame(validation) if held_out is not None else None,
        direction_vote=dict(zip(loss_layers, votes)),
        direction_mean_diff_cos=dict(zip(loss_layers, cosines)),
        weight_change=adapter.weight_change_norm(1.0),
    )


@torch.no_grad()
def separation_check(
    model: Any,
    adapter: AdapterHandle,
    encoded: Encoded,
    n_pairs: int,
    paths: list[str],
    directions: dict[str, Tensor],
    config: ReprPOConfig,
) -> dict[str, float]:
    """Mean of what the objective moves (the gap, the midpoint or both) along the frozen directions on the training
    pairs at c = −1, 0, +1."""
    out = {}
    for name, c in (("c=-1", -1.0), ("c=0", 0.0), ("c=+1", 1.0)):
        gaps = []
        with adapter.coeff(c):
            for start in range(0, n_pairs, config.batch_pairs * 2):
                batch = encoded.batch(list(range(start, min(n_pairs, start + config.batch_pairs * 2))), config.tokens)
                states, _, _ = forward_states(model, batch, paths, grad=False)
                gaps.append(moved(states, directions, config.objective).mean(0).cpu())
        out[name] = float(torch.cat(gaps).mean())
    return out
