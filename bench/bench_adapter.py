"""Benchmark: an InnerPiSSA training step vs a PEFT LoRA step, and adapter memory.

Both adapters get the same targets (every other middle layer × o, down), rank and
batch, and train with the same ReprPO loop (forward + backward at c = ±1 through
nnsight traces); the per-step wall time is the median over steps after the first.
Memory per adapted layer: the adapter's buffers (U_r, S_r, V_r) and parameters vs a
dense copy of the residual weight W − U_r S_r V_rᵀ that a non-factored version keeps.

    python bench/bench_adapter.py [--steps 6]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import warnings

warnings.filterwarnings("ignore")


def step_times(history) -> list[float]:
    seconds = history["seconds"].tolist()
    return [b - a for a, b in itertools.pairwise(seconds)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rank", type=int, default=16)
    args = parser.parse_args()

    import probes
    import steering
    from steering.adapters.lora import attach_lora

    model = probes.load_model()
    pairs = probes.honesty_pairs(n=32, tokenizer=model.tokenizer, chat=True)
    layers, kinds = list(range(8, 22, 2)), ("o", "down")
    options = {"steps": args.steps, "batch_pairs": 4, "progress": False, "check_pairs": 2}
    per_step = {}
    for round_ in range(2):  # interleaved twice
        for name in ("InnerPiSSA", "LoRA"):
            handle = (
                steering.attach_innerpissa(model, layers, kinds, args.rank)
                if name == "InnerPiSSA"
                else attach_lora(model, layers, kinds, args.rank)
            )
            result = steering.train_reprpo(model, handle, pairs, **options)
            per_step.setdefault(name, []).extend(step_times(result.history))
            params = handle.num_parameters()
            handle.detach()
            if round_ == 0:
                print(f"{name:10s} {params:7,d} trainable parameters")
    medians = {name: statistics.median(times) for name, times in per_step.items()}
    print(
        f"step   InnerPiSSA {medians['InnerPiSSA']:.2f} s, PEFT LoRA {medians['LoRA']:.2f} s "
        f"(rank {args.rank}, {len(layers) * len(kinds)} targets, 4 pairs, c = ±1): ratio {medians['InnerPiSSA'] / medians['LoRA']:.3f}x (target <= 1.5x)"
    )

    adapter = steering.attach_innerpissa(model, layers, kinds, args.rank)
    for target in adapter.targets[:2]:
        layer = adapter.layer(target)
        adapter_bytes = sum(t.numel() * t.element_size() for t in (layer.U, layer.S, layer.V, *layer.parameters()))
        weight = probes.sublayers.weight_matrix(model, target.sublayer)
        dense = weight.numel() * weight.element_size()
        print(
            f"memory {target.name:8s} adapter {adapter_bytes / 1024:7.1f} KiB vs dense residual weight {dense / 1024:7.1f} KiB: "
            f"{adapter_bytes / dense:.3f}x"
        )
    adapter.detach()


if __name__ == "__main__":
    main()
