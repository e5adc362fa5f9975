"""The cost of each way to apply a direction in greedy generation, as a ratio to unsteered.

Embedded model, sentiment ``mean_diff`` at layer 15 ``resid``, 4 prompts × 32 new tokens,
best of interleaved rounds after a warm-up: add, ablate, clamp, conditional add, add at
generated positions only, and a two-layer plan.

    python bench/bench_modes.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import time
import warnings
from contextlib import nullcontext

import torch

import probes
import steering

warnings.filterwarnings("ignore")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    model = probes.load_model()
    hf = probes.torch_module(model)
    pairs = probes.concept_pairs("sentiment", n=32, tokenizer=model.tokenizer, chat=True)
    acts = probes.collect(model, pairs, layers=[15, 20], sublayers="resid", progress=False)
    d, d20 = (steering.compute("mean_diff", acts, layer, "resid") for layer in (15, 20))
    condition = steering.calibrate_condition(acts, d)
    batch = model.tokenizer(
        ["Tell me about your day.", "Describe the weather.", "What is a good book?", "Hello!"], return_tensors="pt", padding=True
    )
    variants = {
        "unsteered": lambda: nullcontext(),
        "add": lambda: steering.steer(model, d, 1.0),
        "ablate": lambda: steering.steer(model, d, 1.0, mode="ablate"),
        "clamp": lambda: steering.steer(model, d, 1.0, mode="clamp"),
        "conditional add": lambda: steering.steer(model, d, 1.0, condition=condition),
        "add, generated positions": lambda: steering.steer(model, d, 1.0, positions="generated"),
        "plan: L15 add + L20 ablate": lambda: steering.applied(model, steering.Steering([d, d20], modes=["add", "ablate"]), 1.0),
    }

    def generate(context) -> float:
        with context(), torch.no_grad():
            started = time.perf_counter()
            hf.generate(**batch, max_new_tokens=32, min_new_tokens=32, do_sample=False, pad_token_id=model.tokenizer.pad_token_id)
            return time.perf_counter() - started

    for context in variants.values():
        generate(context)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, context in variants.items():
            times[name].append(generate(context))
    plain = min(times["unsteered"])
    print(
        f"greedy generation, 4 prompts × 32 tokens, best of {args.repeats} interleaved rounds (torch {torch.__version__}, {torch.get_num_threads()} threads)"
    )
    for name, values in times.items():
        print(f"{name:28s} {min(values):6.2f} s  {min(values) / plain:5.2f}x unsteered")


if __name__ == "__main__":
    main()
