"""Capture last-token hidden states for every requested (layer, sublayer) in one pass.

Each batch is one forward: every requested module's output is read at the last
real (non-padded) positions of each text, gathered on the model's device (so the
full ``[batch, seq, d]`` output is freed as the forward goes on), copied to the host
once per batch and written into preallocated result tensors. The forward stops
after the last requested module, so the LM head never runs. A local run uses plain
forward hooks (`probes.hooks`: no per-module tracing cost); a remote run expresses
the same reads as an nnsight trace that travels to NDIF (``engine="nnsight"`` forces
it locally; tests check both give identical tensors).

Example:
    import probes
    model = probes.load_model()
    pairs = probes.honesty_pairs(n=64, tokenizer=model.tokenizer, chat=True)
    acts = probes.collect(model, pairs, layers="all", sublayers=("resid", "o", "down"))
    acts[-1, "resid"].shape
    # torch.Size([64, 2, 1, 576])
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import nnsight
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from . import hooks, shards, tracing
from . import sublayers as sl
from .activations import Activations
from .batching import Batch, check_batch_size, encode, plan_batches
from .call_order import execution_order
from .fingerprint import model_fingerprint
from .model_handle import model_handle
from .pairs import PairLike, as_pairs
from .remote import Remote, resolve_remote

Engine = Literal["auto", "hooks", "nnsight"]


def normalize_kinds(kinds: str | Sequence[str]) -> tuple[str, ...]:
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    if not kinds:
        raise ValueError("sublayers is empty: pass kinds such as ('resid',) or ('q', 'k', 'v', 'o').")
    return tuple(dict.fromkeys(kinds))


def require_nnsight(model: Any) -> None:
    if not hasattr(model, "trace"):
        raise TypeError(
            f"collect needs an nnsight model, got {type(model).__name__}. Load one with "
            "probes.load_model(...) or wrap a transformers model with probes.wrap(model, tokenizer)."
        )


def collect(
    model: Any,
    pairs: Iterable[PairLike],
    layers: int | Iterable[int] | str = "all",
    sublayers: str | Sequence[str] = ("resid",),
    tokens: int = 1,
    batch_size: int = 32,
    progress: bool = True,
    dtype: torch.dtype = torch.float32,
    out: str | Path | None = None,
    remote: Remote | None = None,
    engine: Engine = "auto",
) -> Activations:
    """Capture the last ``tokens`` real positions of each sublayer for both sides of each pair.

    Args:
        model: an nnsight model from `probes.load_model` (any padding side).
        pairs: `ContrastivePair` s or ``(positive, negative)`` tuples.
        layers: an int (negative counts from the end), a list or range of ints, or ``"all"``.
        sublayers: kinds from `probes.sublayers.KINDS` the model has, or dotted
            module-path templates with ``{layer}``.
        tokens: how many last real tokens to keep per text.
        batch_size: texts per forward pass (texts of similar length are batched together).
        progress: show a progress bar (pairs/s).
        dtype: dtype of the returned tensors (on CPU).
        out: stream each batch to a shard in this folder instead of keeping results in
            memory (see `probes.shards`); a rerun skips finished shards. The returned
            `Activations` then loads one (layer, kind) at a time.
        remote: run each batch's trace on NDIF (``True``) or through nnsight's local
            dry run of it (``"local"``); ``None`` follows ``load_model(..., remote=)``.
        engine: ``"auto"`` (plain hooks locally, an nnsight trace remotely), ``"hooks"`` or
            ``"nnsight"``.

    Returns:
        `Activations` with ``acts[layer, kind]`` of shape ``[pair, side, token, d]``.

    Example:
        acts = collect(model, [("I love cheese;", "I hate cheese;")], layers=[-1], sublayers="resid")
    """
    require_nnsight(model)
    remote = resolve_remote(model, remote)
    if engine not in ("auto", "hooks", "nnsight"):
        raise ValueError(f"engine={engine!r}: use 'auto', 'hooks' or 'nnsight'.")
    if engine == "hooks" and remote:
        raise ValueError("engine='hooks' runs in this process: a remote capture needs engine='nnsight' (or 'auto').")
    use_hooks = engine == "hooks" or (engine == "auto" and not remote)
    pairs = as_pairs(pairs)
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
        raise ValueError(f"tokens={tokens!r}: give how many last tokens to keep per text, a whole number ≥ 1 (e.g. tokens=1).")
    batch_size = check_batch_size(batch_size)
    layer_ids = sl.resolve_layers(model, layers)
    targets = [sl.resolve(model, layer, kind) for layer in layer_ids for kind in normalize_kinds(sublayers)]
    by_path: dict[str, list[sl.Sublayer]] = {}
    for target in targets:
        by_path.setdefault(target.path, []).append(target)
    paths = execution_order(model, by_path)

    tokenizer = model.tokenizer
    texts = [text for pair in pairs for text in pair]
    token_ids = encode(model, texts)
    too_short = [i for i, ids in enumerate(token_ids) if len(ids) < tokens]
    if too_short:
        i = too_short[0]
        raise ValueError(
            f"{len(too_short)} text(s) have fewer than tokens={tokens} tokens, e.g. pair {i // 2} "
            f"({'positive' if i % 2 == 0 else 'negative'}: {texts[i]!r}). Use fewer tokens or longer texts."
        )
    batches = plan_batches(token_ids, batch_size, tokenizer.pad_token_id, tokenizer.padding_side, tokens)

    name = model_handle(model).model_id
    keys = [(t.layer, t.kind) for t in targets]
    folder = Path(out) if out is not None else None
    if folder is not None:
        manifest = {
            "format": "steerscope.shards/1",
            "keys": keys,
            "tokens": tokens,
            "n_pairs": len(pairs),
            "n_batches": len(batches),
            "batch_size": batch_size,
            "dtype": str(dtype).replace("torch.", ""),
            "texts": shards.texts_digest(pairs),
            "n_layers": sl.n_layers(model),
            "model_name": name,
            "weights": model_fingerprint(model),
        }
        shards.prepare(folder, manifest, pairs)
    results: dict[tuple[int, str], Tensor] = {}
    bar = tqdm(total=len(pairs), unit="pair", desc="collect", disable=not progress, smoothing=0.1)
    try:
        for index, batch in enumerate(batches):
            if folder is not None and shards.finished_shard(folder, index, batch.text_index):  # by an earlier run
                bar.update(len(batch.text_index) / 2)
                continue
            found = hook_batch(model, batch, by_path, paths) if use_hooks else trace_batch(model, batch, by_path, paths, remote)
            captured = {key: values.to("cpu", dtype) for key, values in found.items()}
            for (layer, kind), values in captured.items():
                check_finite(values, layer, kind, batch)
            if folder is not None:
                shards.save_shard(folder, index, captured, batch.text_index)
            else:
                for key, values in captured.items():
                    if key not in results:
                        results[key] = torch.empty((len(pairs), 2, tokens, values.shape[-1]), dtype=dtype)
                    results[key].view(len(texts), tokens, -1)[batch.text_index] = values
            bar.update(len(batch.text_index) / 2)
    finally:
        bar.close()
    if folder is not None:
        return shards.open_activations(folder)
    return Activations({key: results[key] for key in keys}, pairs=pairs, n_layers=sl.n_layers(model), model_name=name)


def check_finite(values: Tensor, layer: int, kind: str, batch: Batch) -> None:
    if not torch.isfinite(values).all():
        bad = batch.text_index[~torch.isfinite(values).flatten(1).all(1)].tolist()
        raise ValueError(
            f"Non-finite (NaN/inf) activations at layer {layer}, kind {kind!r}, for pair(s) "
            f"{sorted({i // 2 for i in bad})[:10]}. Check the model's dtype (float16 overflows "
            "easily; use float32 or bfloat16) and those texts."
        )


def hook_batch(
    model: Any, batch: Batch, by_path: dict[str, list[sl.Sublayer]], paths: list[str]
) -> dict[tuple[int, str], Float[Tensor, "b tokens d"]]:
    """The local fast path of `trace_batch`: plain hooks, one copy to the host for the whole batch."""
    dtype = next(sl.unwrap(model).parameters()).dtype
    gathered = hooks.gather_to_host(hooks.gather_last(model, batch, paths), dtype)
    return {(target.layer, target.kind): target.split(values) for path, values in zip(paths, gathered) for target in by_path[path]}


def trace_batch(
    model: Any,
    batch: Batch,
    by_path: dict[str, list[sl.Sublayer]],
    paths: list[str],
    remote: Remote = False,
) -> dict[tuple[int, str], Float[Tensor, "b tokens d"]]:
    """One traced forward; returns the gathered last-token states per (layer, kind).

    The block below is what nnsight ships when ``remote`` is set, so it uses only
    torch and the model's envoys (the server has no steerscope) and moves nothing
    to the CPU: gathering happens on the model's device, and only the gathered
    ``[b, tokens, d]`` rows travel back.
    """
    rows = torch.arange(len(batch.text_index))[:, None]
    positions = batch.last_positions
    with torch.inference_mode(), tracing.trace(model, batch.model_inputs(), remote) as tracer:
        gathered = []
        for path in paths:
            output = model.get(path).output
            hidden = output[0] if isinstance(output, tuple) else output
            # Advanced indexing copies, so what is kept does not hold the whole
            # [batch, seq, d] output alive (a slice view would).
            gathered.append(hidden[rows.to(hidden.device), positions.to(hidden.device)])
        gathered = nnsight.save(gathered)  # inside the block: only torch and nnsight travel to NDIF
        # Nothing after the last captured module is needed: skip the rest of the
        # forward (later blocks and the LM head's [batch, seq, vocab] logits).
        tracer.stop()
    # The stop unwinds the forward with an exception whose traceback forms a
    # reference cycle with the model's frames; free that batch's activations now
    # rather than at some later garbage collection (measured: -120 MB peak).
    gc.collect(1)
    return {(target.layer, target.kind): target.split(values) for path, values in zip(paths, gathered) for target in by_path[path]}
