"""Per-module overhead of capture where a forward is cheap: batch size 1 on the CPU, embedded model.

On a GPU a batched forward of a 4B model takes ~40 ms, so per-module Python work
dominates capture; on this CPU the same shows at batch size 1. Interleaved rounds
in one process, best of each, all as ratios to a plain no-head forward of the same
single texts:

- raw hooks: forward hooks that gather the last row and concatenate once per forward
  (the physical floor of a hook-based capture);
- collect (hooks): `probes.collect` on its local fast path;
- collect (nnsight): `probes.collect(..., engine="nnsight")`, the traced path remote runs use.

Target (issue "As fast as plain hooks on a GPU"): collect ≤ 1.3× the plain forward.

    python bench/bench_overhead.py            # prints one line per measurement and the ratios
"""

from __future__ import annotations

import time
import warnings

import torch

import probes
from probes.batching import plan_batches, tokenize

warnings.filterwarnings("ignore")
KINDS = ("q", "k", "v", "o", "gate", "up", "down")
ROUNDS = 3


def main() -> None:
    torch.set_num_threads(2)
    model = probes.load_model()
    hf = probes.torch_module(model)
    pairs = probes.honesty_pairs(n=8, tokenizer=model.tokenizer, chat=True, seed=1)
    texts = [t for p in pairs for t in p]
    batches = plan_batches(tokenize(model.tokenizer, texts), 1, model.tokenizer.pad_token_id, "left", 1)
    modules = [
        getattr(getattr(layer, part), name)
        for layer in hf.model.layers
        for part, name in (
            ("self_attn", "q_proj"),
            ("self_attn", "k_proj"),
            ("self_attn", "v_proj"),
            ("self_attn", "o_proj"),
            ("mlp", "gate_proj"),
            ("mlp", "up_proj"),
            ("mlp", "down_proj"),
        )
    ]

    def plain() -> None:
        with torch.inference_mode():
            for batch in batches:
                hf.model(**batch.model_inputs("cpu"))

    def raw_hooks() -> None:
        store: list[torch.Tensor] = []
        handles = [m.register_forward_hook(lambda m, i, o: store.append(o[:, -1].clone())) for m in modules]
        try:
            with torch.inference_mode():
                for batch in batches:
                    hf.model(**batch.model_inputs("cpu"))
                    torch.cat(store, -1)
                    store.clear()
        finally:
            for handle in handles:
                handle.remove()

    def collect(engine: str):
        return lambda: probes.collect(model, pairs, layers="all", sublayers=KINDS, batch_size=1, progress=False, engine=engine)

    runs = {"plain": plain, "raw hooks": raw_hooks, "collect (hooks)": collect("hooks"), "collect (nnsight)": collect("nnsight")}
    for fn in runs.values():  # warm-up: a fresh process's first passes are slower
        fn()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(ROUNDS):
        for name, fn in runs.items():
            started = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - started)
    best = {name: min(values) for name, values in times.items()}
    print(f"batch size 1, {len(texts)} texts, {len(modules)} modules, best of {ROUNDS} interleaved rounds")
    print(f"plain no-head forward: {best['plain']:.2f} s")
    for name in ("raw hooks", "collect (hooks)", "collect (nnsight)"):
        print(f"{name}: {best[name]:.2f} s = {best[name] / best['plain']:.2f}x plain")


if __name__ == "__main__":
    main()
