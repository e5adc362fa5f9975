"""Benchmark: streamed capture (``collect(..., out=folder)``) vs in-memory capture, peak memory.

2,000 honesty pairs × 10 layers × 4 kinds (resid, o, up, down) of the embedded model,
each variant in a fresh process with MALLOC_MMAP_THRESHOLD_=131072. Reports the extra
peak RSS over the loaded model, the size of the full result, and the ratio. The bound
stated for the streamed capture: its extra peak stays below one batch's forward
(the plain no-head forward's extra peak) plus 100 MB, whatever the number of pairs.

    python bench/bench_stream.py [--pairs 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings

warnings.filterwarnings("ignore")
LAYERS = list(range(10))
KINDS = ("resid", "o", "up", "down")


def child(variant: str, n_pairs: int) -> None:
    import torch

    import probes
    from probes.batching import plan_batches, tokenize

    model = probes.load_model()
    pairs = probes.honesty_pairs(n=n_pairs, truncate="words", min_length=3)
    probes.collect(model, pairs[:8], layers=LAYERS, sublayers=KINDS, progress=False)  # warm up
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    before = rss("VmRSS")
    start = time.perf_counter()
    if variant == "body":  # one plain forward of the largest batch, stopping before the LM head
        texts = [t for p in pairs for t in p]
        batch = max(
            plan_batches(tokenize(model.tokenizer, texts), 32, model.tokenizer.pad_token_id, "left", 1), key=lambda b: b.input_ids.numel()
        )
        with torch.inference_mode():
            probes.torch_module(model).model(**batch.model_inputs(torch.device("cpu")))
        result_mb = 0.0
    else:
        out = tempfile.mkdtemp(prefix="stream-bench-") if variant == "streamed" else None
        acts = probes.collect(model, pairs, layers=LAYERS, sublayers=KINDS, progress=False, out=out)
        result_mb = acts.nbytes() / 2**20
    seconds = time.perf_counter() - start
    print(json.dumps({"variant": variant, "extra_mb": (rss("VmHWM") - before) / 1024, "result_mb": result_mb, "seconds": seconds}))


def rss(field: str) -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.pairs)
        return
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", PYTHONWARNINGS="ignore")
    results = {}
    for variant in ("body", "in_memory", "streamed"):
        done = subprocess.run(
            [sys.executable, __file__, "--child", variant, "--pairs", str(args.pairs)], env=env, capture_output=True, text=True, check=True
        )
        results[variant] = json.loads(done.stdout.strip().splitlines()[-1])
    full = results["in_memory"]["result_mb"]
    print(f"{args.pairs} pairs x {len(LAYERS)} layers x {len(KINDS)} kinds; full result {full:.0f} MB")
    for variant, r in results.items():
        print(f"  {variant:10s} extra peak RSS {r['extra_mb']:8.1f} MB   {r['seconds']:6.1f} s")
    streamed, in_memory, body = (results[v]["extra_mb"] for v in ("streamed", "in_memory", "body"))
    print(
        f"streamed / in-memory extra peak: {streamed / in_memory:.3f}x; "
        f"bound (one batch forward + 100 MB = {body + 100:.0f} MB): {'met' if streamed <= body + 100 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
