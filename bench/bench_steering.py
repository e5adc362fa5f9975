"""Benchmarks for steering on the embedded model, printed as ratios.

1. Batched coefficient sweep: scoring 64 dilemmas at 4 non-zero coefficients in
   shared forwards (one coefficient per batch row) vs one pass per coefficient.
2. Scoring through an nnsight trace (the one path that also runs on NDIF) vs a
   plain transformers forward; steering as nnsight edits (what travels to NDIF)
   vs forward hooks, same batched sweep.
3. Steered greedy generation vs unsteered, same prompts (target ≤ 1.2×).
4. (--sweep) the default `steerscope sweep`: wall time and peak RSS, in a child process.

    python bench/bench_steering.py [--repeats 3] [--sweep]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
import warnings

import torch

warnings.filterwarnings("ignore")


def best_of(repeats: int, *runs):
    """Interleave the runs ``repeats`` times after one warm-up each; return the best time of each."""
    for run in runs:
        run()
    times = [[] for _ in runs]
    for _ in range(repeats):
        for index, run in enumerate(runs):
            start = time.perf_counter()
            run()
            times[index].append(time.perf_counter() - start)
    return [min(t) for t in times]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sweep", action="store_true", help="also time the default steerscope sweep (~5 min)")
    args = parser.parse_args()

    import analysis
    import probes
    from analysis.readouts import score as sc
    from steering import directions, steer

    model = probes.load_model()
    pairs = probes.honesty_pairs(n=64, tokenizer=model.tokenizer, chat=True)
    acts = probes.collect(model, pairs, layers=[15], sublayers="resid", progress=False)
    direction = directions.compute("pca_diff", acts, 15, "resid")
    items = analysis.dilemmas()
    coeffs = [-2.0, -1.0, 1.0, 2.0]
    texts = [sc.render_item(model.tokenizer, item) for item in items]
    print(f"embedded SmolLM2-135M, torch {torch.__version__}, {torch.get_num_threads()} threads; direction {direction}")

    def looped():
        for c in coeffs:
            with steer(model, direction, c):
                sc.last_logprobs(model, texts, 16)

    def batched():  # what analysis.dose_response does for directions
        per_row = torch.tensor(coeffs).repeat_interleave(len(texts))
        sc.last_logprobs(model, texts * len(coeffs), 16, lambda index: steer(model, direction, per_row[index]))

    loop_time, batch_time = best_of(args.repeats, looped, batched)
    print(
        f"coeff sweep  {len(items)} items x {len(coeffs)} coeffs: one pass per coeff {loop_time:6.2f} s, "
        f"batched rows {batch_time:6.2f} s, ratio batched/looped {batch_time / loop_time:.3f}x"
    )

    torch_model = probes.torch_module(model)

    def plain_forward():  # what scoring did before it went through nnsight traces
        for index, batch in sc.padded_batches(model, texts, 16):
            with torch.no_grad():
                logits = torch_model(**batch.model_inputs()).logits
            torch.log_softmax(logits[torch.arange(len(index)), batch.last_positions[:, 0]].float(), -1)

    def traced():
        sc.last_logprobs(model, texts, 16)

    plain_time, traced_time = best_of(args.repeats, plain_forward, traced)
    print(
        f"scoring      {len(items)} items: plain forward {plain_time:6.2f} s, nnsight trace {traced_time:6.2f} s, "
        f"ratio {traced_time / plain_time:.3f}x"
    )

    def batched_edits():  # the same sweep with the steering registered as nnsight edits
        per_row = torch.tensor(coeffs).repeat_interleave(len(texts))
        sc.last_logprobs(
            model, texts * len(coeffs), 16, lambda index: steer(model, direction, per_row[index], remote="local"), remote=False
        )

    hook_time, edit_time = best_of(args.repeats, batched, batched_edits)
    print(
        f"steering     {len(items)} items x {len(coeffs)} coeffs: forward hooks {hook_time:6.2f} s, nnsight edits "
        f"{edit_time:6.2f} s, ratio {edit_time / hook_time:.3f}x"
    )

    prompts = ["The weather today is", "Tell me about your weekend.", "My favourite food is", "The best advice I ever got was"]
    inputs = model.tokenizer(prompts, return_tensors="pt", padding=True)

    def generate():
        with torch.no_grad():
            torch_model.generate(**inputs, max_new_tokens=32, do_sample=False, pad_token_id=model.tokenizer.pad_token_id)

    def steered_generate():
        with steer(model, direction, 1.0):
            generate()

    plain, steered = best_of(args.repeats, generate, steered_generate)
    print(
        f"generation   {len(prompts)} prompts x 32 tokens: unsteered {plain:6.2f} s, steered {steered:6.2f} s, "
        f"ratio {steered / plain:.3f}x (target <= 1.2x)"
    )

    if args.sweep:
        out = tempfile.mkdtemp(prefix="sweep-bench-")
        start = time.perf_counter()
        subprocess.run(["steerscope", "sweep", "--out", out], check=True, capture_output=True)
        wall = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(f"default sweep  wall {wall:6.1f} s, peak RSS {peak:.0f} MB (output in {out})")


if __name__ == "__main__":
    sys.exit(main())
