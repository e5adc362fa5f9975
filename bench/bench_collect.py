"""Benchmark: capturing 210 sublayers of the embedded model vs a plain batched forward.

Time: `probes.collect` of all 7 projection kinds at all 30 layers for 256 texts,
vs a plain forward of the same padded batches, interleaved after a warm-up,
reported as a ratio (target ≤ 1.3×).

Memory: each variant runs in a fresh process with MALLOC_MMAP_THRESHOLD_=131072
(glibc's default threshold lets many small kept tensors fragment the heap);
the extra peak RSS over the loaded-model baseline is compared with the size of
the returned tensors (target: collect's extra over plain ≤ 1.5× that size).
"plain" is the full forward (its peak includes the [batch, seq, vocab] logits),
"body" stops before the LM head as collect does: the like-for-like baseline.
The naive nnsight pattern `module.output[:, -1].save()` (a view) is measured too.

    python bench/bench_collect.py              # everything (~3 min on 2 CPU cores)
    python bench/bench_collect.py --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings

import torch

warnings.filterwarnings("ignore")
N_TEXTS = 256
BATCH = 32
KINDS = ("q", "k", "v", "o", "gate", "up", "down")


def setup():
    import probes
    from probes.batching import plan_batches, tokenize

    model = probes.load_model()
    pairs = probes.honesty_pairs(n=N_TEXTS // 2, tokenizer=model.tokenizer, chat=True, seed=0)
    texts = [t for p in pairs for t in p]
    batches = plan_batches(tokenize(model.tokenizer, texts), BATCH, model.tokenizer.pad_token_id, "left", 1)
    return model, pairs, batches


def plain_forward(model, batches, head: bool = True) -> None:
    """A plain batched forward; ``head=False`` stops before the LM head, as collect does."""
    import probes

    torch_model = probes.torch_module(model) if head else probes.torch_module(model).model
    with torch.inference_mode():
        for batch in batches:
            torch_model(**batch.model_inputs(torch.device("cpu")))


def capture(model, pairs):
    import probes

    return probes.collect(model, pairs, layers="all", sublayers=KINDS, batch_size=BATCH, progress=False)


def naive_capture(model, batches):
    """The trap: saving a slice view keeps each module's whole output alive."""
    from probes import sublayers as sl

    paths = [sl.resolve(model, layer, kind).path for layer in range(30) for kind in KINDS]
    kept = []
    for batch in batches:
        with torch.inference_mode(), model.trace(batch.model_inputs(torch.device("cpu"))):
            for path in paths:
                kept.append(model.get(path).output[:, -1].save())
    return kept


def rss_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1])
    raise RuntimeError(field)


def memory_child(variant: str) -> None:
    model, pairs, batches = setup()
    plain_forward(model, batches[:1])  # warm the allocator and kernels once
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # reset the peak-RSS counter (VmHWM)
    before = rss_kb("VmRSS")
    result_bytes = 0
    if variant == "plain":
        plain_forward(model, batches)
    elif variant == "body":
        plain_forward(model, batches, head=False)
    elif variant == "collect":
        acts = capture(model, pairs)
        result_bytes = acts.nbytes()
    elif variant == "naive":
        kept = naive_capture(model, batches)
        result_bytes = sum(t.numel() * t.element_size() for t in kept)
    peak = rss_kb("VmHWM")
    print(json.dumps({"variant": variant, "extra_peak_mb": (peak - before) / 1024, "result_mb": result_bytes / 2**20}))


def measure_memory(variant: str) -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", PYTHONWARNINGS="ignore")
    out = subprocess.run([sys.executable, __file__, "--memory-child", variant], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-child")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-time", action="store_true")
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child)
        return

    if not args.skip_time:
        time_capture(args.repeats)
    if not args.skip_memory:
        memory_report()


def time_capture(repeats: int) -> None:
    model, pairs, batches = setup()
    print(
        f"embedded SmolLM2-135M, {N_TEXTS} texts in {len(batches)} batches of {BATCH}, "
        f"{len(KINDS) * 30} modules, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    plain_forward(model, batches[:2])
    capture(model, pairs[:16])  # warm-up
    runs = {"plain": [], "body": [], "collect": []}
    for _ in range(repeats):  # interleaved, so drift hits all alike
        for name, run in (
            ("plain", lambda: plain_forward(model, batches)),
            ("body", lambda: plain_forward(model, batches, head=False)),
            ("collect", lambda: capture(model, pairs)),
        ):
            start = time.perf_counter()
            run()
            runs[name].append(time.perf_counter() - start)
    plain, body, captured = (min(runs[name]) for name in ("plain", "body", "collect"))
    print(f"time   plain forward            {plain:6.2f} s ({N_TEXTS / plain:5.1f} texts/s)")
    print(f"time   plain forward, no head   {body:6.2f} s ({N_TEXTS / body:5.1f} texts/s)")
    print(f"time   collect 210 modules      {captured:6.2f} s ({N_TEXTS / 2 / captured:5.1f} pairs/s)")
    print(f"ratio  collect / plain forward  {captured / plain:.3f}x  (target <= 1.3x; collect skips the LM head)")
    print(f"ratio  collect / no-head forward {captured / body:.3f}x  (like for like)")
    print("       all runs (s): " + ", ".join(f"{k} {[round(t, 2) for t in v]}" for k, v in runs.items()))


def memory_report() -> None:
    results = {variant: measure_memory(variant) for variant in ("plain", "body", "collect", "naive")}
    returned = results["collect"]["result_mb"]
    for variant, r in results.items():
        print(f"memory {variant:8s} extra peak RSS {r['extra_peak_mb']:7.1f} MB   returned tensors {r['result_mb']:6.1f} MB")
    for baseline in ("plain", "body"):
        extra = results["collect"]["extra_peak_mb"] - results[baseline]["extra_peak_mb"]
        print(f"memory collect extra over {baseline:5s} {extra:7.1f} MB = {extra / returned:5.2f}x the returned tensors (target <= 1.5x)")
    naive_extra = results["naive"]["extra_peak_mb"] - results["plain"]["extra_peak_mb"]
    print(f"memory naive slice-view saving, extra over plain {naive_extra:.1f} MB = {naive_extra / returned:.1f}x the returned tensors")


if __name__ == "__main__":
    main()
