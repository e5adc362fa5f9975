"""Scoring readout items with the model as it is now, and NLL on neutral text.

Each item is rendered with the chat template, the assistant turn prefilled, and
the next-token distribution read once (see `analysis.readouts.items`):

    logratio = log P(positive words) − log P(negative words),   readout = sign · logratio

``pmass`` = P(positive) + P(negative); items below ``min_pmass`` are marked
invalid (the model is not answering in those words). Steering hooks and
adapters active around the call apply. `signed_readouts` is the one place this
formula is computed (scoring, and the first-order effects and logit lens of
`analysis.measures.predict`).

Example:
    table = score_items(model, analysis.eval_items("honesty"))   # item, logratio, pmass, valid, readout
    signed_readouts(logprobs, items, model.tokenizer).readout     # the same, from log-probabilities in hand
    text_nll(model)                                               # mean NLL per token of neutral paragraphs
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any, NamedTuple
from weakref import WeakKeyDictionary

import nnsight
import pandas as pd
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int

from probes import tracing
from probes.batching import Batch, check_batch_size, encode, pad_batch
from probes.remote import Remote, resolve_remote

from .items import ReadoutItem, check_items
from .sets import neutral_texts

token_index: WeakKeyDictionary[Any, dict[str, list[int]]] = WeakKeyDictionary()
warned_missing_words: set[tuple[str, ...]] = set()


def words_index(tokenizer: Any) -> dict[str, list[int]]:
    """Every token id by the word it decodes to (stripped, lower case); built once per tokenizer."""
    index = token_index.get(tokenizer)
    if index is None:
        index = {}
        for token_id in range(len(tokenizer)):
            index.setdefault(tokenizer.decode([token_id]).strip().lower(), []).append(token_id)
        token_index[tokenizer] = index
    return index


def word_token_ids(tokenizer: Any, words: Sequence[str]) -> list[int]:
    """Ids of every token that decodes to one of ``words`` (any case, with or without a leading space).

    Words with no single-token form are left out with a warning (once per word set); a set with
    none at all is an error, since its probability could not be read.
    """
    index = words_index(tokenizer)
    found = {w: index.get(w.strip().lower(), []) for w in words}
    missing = [w for w, ids in found.items() if not ids]
    if len(missing) == len(found):
        raise ValueError(
            f"None of the words {list(words)} is a single token for this tokenizer, so their probability "
            "cannot be read from one next-token distribution. Choose words that are."
        )
    if missing and tuple(words) not in warned_missing_words:
        warned_missing_words.add(tuple(words))
        warnings.warn(f"Words {missing} are not single tokens for this tokenizer and are left out of the readout.", stacklevel=3)
    return sorted({i for ids in found.values() for i in ids})


def render_prompt(tokenizer: Any, prompt: str, prefill: str = "", persona: str | None = None) -> str:
    """A user turn in the chat template, then the assistant turn opened with ``prefill`` (``persona`` first)."""
    content = f"{persona}\n\n{prompt}" if persona else prompt
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": content}]
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) + prefill
    return f"Question: {content}\nAnswer: {prefill}"


def render_item(tokenizer: Any, item: ReadoutItem, persona: str | None = None) -> str:
    """The chat-templated prompt, ending in the prefilled assistant turn (``persona`` before the prompt)."""
    return render_prompt(tokenizer, item.prompt, item.prefill, persona)


BatchContext = Callable[[list[int]], AbstractContextManager[Any]]


def no_context(index: list[int]) -> AbstractContextManager[Any]:
    return nullcontext()


def padded_batches(model: Any, texts: Sequence[str], batch_size: int):
    """Left-padded batches of ``texts`` with their row indices."""
    tokenizer = model.tokenizer
    batch_size = check_batch_size(batch_size)
    ids = encode(model, texts)
    for start in range(0, len(ids), batch_size):
        index = list(range(start, min(start + batch_size, len(ids))))
        yield index, pad_batch([ids[i] for i in index], index, tokenizer.pad_token_id, "left", 1)


def last_logprobs(
    model: Any, texts: Sequence[str], batch_size: int = 16, context: BatchContext = no_context, remote: Remote | None = None
) -> torch.Tensor:
    """Next-token log-probabilities after each text, ``[len(texts), vocab]``.

    ``context(rows)`` wraps each batch's forward, e.g. steering with one
    coefficient per row, so a whole dose sweep shares batched forwards.
    ``remote`` runs each batch's trace on NDIF (``None``: the model's setting).
    """
    remote = resolve_remote(model, remote)
    rows = []
    for index, batch in padded_batches(model, texts, batch_size):
        with context(index):
            found = traced_last_logprobs(model, batch, remote) if remote else local_last_logprobs(model, batch)
            rows.append(found.cpu())
    return torch.cat(rows)


def local_last_logprobs(model: Any, batch: Batch) -> Float[torch.Tensor, "b vocab"]:
    """The local path of `traced_last_logprobs`: a plain forward that computes logits at the last position
    only (the batch is left-padded, so that is every row's last real token)."""
    torch_model = tracing.torch_module(model)
    device = next(torch_model.parameters()).device
    inputs = batch.model_inputs(device)
    # an index (not the int 1): the kept rows are copied into a fresh tensor, so the LM head's result does not
    # depend on where the hidden states happen to sit in memory (c = 0 stays the base model bit for bit)
    last = torch.tensor([inputs["input_ids"].shape[1] - 1], device=device)
    with torch.no_grad():
        logits = torch_model(**inputs, logits_to_keep=last).logits[:, -1]
    return F.log_softmax(logits.float(), -1)


def traced_last_logprobs(model: Any, batch: Batch, remote: Remote) -> Float[torch.Tensor, "b vocab"]:
    """One traced forward; log-softmax of the logits at each row's last real token.

    This block is what travels to NDIF: torch only, and nothing leaves the model's
    device until the trace returns its ``[b, vocab]`` result.
    """
    positions = batch.last_positions[:, 0]
    with torch.no_grad(), tracing.trace(model, batch.model_inputs(), remote):
        logits = model.output.logits
        rows = torch.arange(logits.shape[0], device=logits.device)
        last = logits[rows, positions.to(logits.device)]
        logprobs = nnsight.save(F.log_softmax(last.float(), -1))  # only torch and nnsight travel to NDIF
    return logprobs


class Readouts(NamedTuple):
    """Per row: the signed ``readout``, its ``logratio`` and the answer words' probability mass ``pmass``."""

    readout: Float[torch.Tensor, " n"]
    logratio: Float[torch.Tensor, " n"]
    pmass: Float[torch.Tensor, " n"]


def signed_readouts(logprobs: Float[torch.Tensor, "n vocab"], items: Sequence[ReadoutItem], tokenizer: Any) -> Readouts:
    """The signed readout of row ``i`` for ``items[i]``: ``sign · (log P(positive) − log P(negative))``, from
    next-token log-probabilities (logits give the same log-ratio; their ``pmass`` means nothing).

    The one place the readout is computed: scoring (`logratio_table`), the first-order effect (it is
    differentiable: `analysis.measures.predict` back-propagates through it) and the logit lens use it.
    Items that share their answer words are read together.
    """
    logratio = torch.empty(len(items), device=logprobs.device)
    pmass = torch.empty(len(items), device=logprobs.device)
    by_words: dict[tuple[tuple[str, ...], tuple[str, ...]], list[int]] = {}
    for row, item in enumerate(items):
        by_words.setdefault((item.positive, item.negative), []).append(row)
    for (positive, negative), rows in by_words.items():
        # the answer words' columns first, then the rows: a broadcast (expanded) logprobs is never copied whole
        log_pos = torch.logsumexp(logprobs[:, word_token_ids(tokenizer, positive)][rows], -1)
        log_neg = torch.logsumexp(logprobs[:, word_token_ids(tokenizer, negative)][rows], -1)
        logratio[rows] = (log_pos - log_neg).float()
        pmass[rows] = (log_pos.exp() + log_neg.exp()).float()
    signs = torch.tensor([item.sign for item in items], device=logprobs.device)
    return Readouts(logratio * signs, logratio, pmass)


def logratio_table(logprobs: torch.Tensor, items: Sequence[ReadoutItem], tokenizer: Any, min_pmass: float) -> pd.DataFrame:
    """Per item: ``logratio``, ``pmass``, ``valid`` and the signed ``readout`` from next-token log-probabilities."""
    if torch.isnan(logprobs).any():
        bad = [items[i].id for i in torch.isnan(logprobs).any(-1).nonzero().flatten().tolist()]
        raise ValueError(
            f"The model gave NaN log-probabilities for {len(bad)} item(s) (e.g. {bad[:3]}): its "
            "weights or this steering dose break it. Check the dtype (float16 overflows), or lower the coefficient."
        )
    read = signed_readouts(logprobs, items, tokenizer)
    return pd.DataFrame(
        {
            "item": [item.id for item in items],
            "logratio": read.logratio.numpy(),
            "pmass": read.pmass.numpy(),
            "valid": (read.pmass >= min_pmass).numpy(),
            "readout": read.readout.numpy(),
        }
    )


def score_items(
    model: Any,
    items: Iterable[ReadoutItem],
    *,
    persona: str | None = None,
    min_pmass: float = 0.1,
    batch_size: int = 16,
    remote: Remote | None = None,
) -> pd.DataFrame:
    """Score each item once with the model as it is now (steering hooks and adapters apply).

    Returns a DataFrame with columns ``item``, ``logratio``, ``pmass``, ``valid``, ``readout``.
    """
    items = check_items(items)
    texts = [render_item(model.tokenizer, item, persona) for item in items]
    return logratio_table(last_logprobs(model, texts, batch_size, remote=remote), items, model.tokenizer, min_pmass)


def token_nll(
    model: Any, texts: Sequence[str], batch_size: int = 8, context: BatchContext = no_context, remote: Remote | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token NLL and token count per text (``context`` and ``remote`` as in `last_logprobs`)."""
    remote = resolve_remote(model, remote)
    sums, counts = torch.zeros(len(texts), dtype=torch.float64), torch.zeros(len(texts), dtype=torch.long)
    for index, batch in padded_batches(model, texts, batch_size):
        with context(index):
            batch_sums, batch_counts = traced_token_nll(model, batch, remote) if remote else local_token_nll(model, batch)
        sums[index] = batch_sums.cpu()
        counts[index] = batch_counts.cpu()
    return sums, counts


def local_token_nll(model: Any, batch: Batch) -> tuple[Float[torch.Tensor, " b"], Int[torch.Tensor, " b"]]:
    """The local path of `traced_token_nll`: the same numbers from a plain forward."""
    torch_model = tracing.torch_module(model)
    device = next(torch_model.parameters()).device
    inputs = batch.model_inputs(device)
    with torch.no_grad():
        logits = torch_model(**inputs).logits
    targets = inputs["attention_mask"][:, 1:] * inputs["attention_mask"][:, :-1]
    nll = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), inputs["input_ids"][:, 1:], reduction="none")
    return (nll * targets).sum(-1).double(), targets.sum(-1)


def traced_token_nll(model: Any, batch: Batch, remote: Remote) -> tuple[Float[torch.Tensor, " b"], Int[torch.Tensor, " b"]]:
    """One traced forward; per-row summed NLL of each real next token, and how many there are.

    Reduced on the model's device (this block travels to NDIF), so only two
    numbers per text come back.
    """
    inputs = batch.model_inputs()
    with torch.no_grad(), tracing.trace(model, inputs, remote):
        logits = model.output.logits
        ids = inputs["input_ids"].to(logits.device)
        mask = inputs["attention_mask"].to(logits.device)
        targets = mask[:, 1:] * mask[:, :-1]
        nll = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), ids[:, 1:], reduction="none")
        sums = nnsight.save((nll * targets).sum(-1).double())
        counts = nnsight.save(targets.sum(-1))
    return sums, counts


def text_nll(model: Any, texts: Sequence[str] | None = None, batch_size: int = 8, remote: Remote | None = None) -> float:
    """Mean per-token negative log-likelihood of ``texts`` (default: the shipped neutral paragraphs)."""
    sums, counts = token_nll(model, list(texts) if texts is not None else neutral_texts(), batch_size, remote=remote)
    return float(sums.sum() / counts.sum())
