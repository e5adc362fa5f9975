"""steerscope against plain forwards and peer libraries on a GPU, with a random model of a real shape.

Weights don't change timings, so a randomly initialised model of a named
architecture's shape (built from its config: nothing is downloaded) measures what a
user of that model waits for. The tokenizer is the embedded SmolLM2's. Every number
is a ratio to a plain forward (or a peer) measured in the same process, best of
interleaved rounds after a warm-up. One JSON line per measurement, to stdout and
``$OUT/bench_gpu.jsonl`` when ``OUT`` is set.

    python bench/bench_gpu.py                          # Qwen3-4B shape, bf16, on the GPU
    python bench/bench_gpu.py --arch qwen3-0.6b --device cpu --dtype float32 --pairs 16 --layers 4   # a smoke run

Measurements (the issue's table): capture of 7 projections × all layers vs the
no-head forward; resid-only capture vs the plain forward; ``pca_diff`` directions
for every inner layer vs repeng and steering-vectors (when installed); an InnerPiSSA
ReprPO step vs a PEFT LoRA step (rank 16, same targets and batch); steered vs
unsteered greedy generation; all weight SVDs cold and from the cache.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

warnings.filterwarnings("ignore")
ARCHS = {  # config fields of the shapes this script can build
    "qwen3-4b": dict(
        vocab_size=151936,
        hidden_size=2560,
        intermediate_size=9728,
        num_hidden_layers=36,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        max_position_embeddings=8192,
        tie_word_embeddings=True,
    ),
    "qwen3-0.6b": dict(
        vocab_size=151936,
        hidden_size=1024,
        intermediate_size=3072,
        num_hidden_layers=28,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=128,
        max_position_embeddings=8192,
        tie_word_embeddings=True,
    ),
    "llama-3.2-1b": dict(
        vocab_size=128256,
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        max_position_embeddings=8192,
        tie_word_embeddings=True,
    ),
}
KINDS = ("q", "k", "v", "o", "gate", "up", "down")


def record(name: str, **values) -> None:
    line = json.dumps({"name": name, **values})
    print(line, flush=True)
    if os.environ.get("OUT"):
        with open(Path(os.environ["OUT"]) / "bench_gpu.jsonl", "a") as handle:
            handle.write(line + "\n")


def build(arch: str, layers: int | None, dtype: str, device: str, folder: Path):
    """A random model of ``arch``'s shape saved with the embedded tokenizer, loaded through probes."""
    import transformers as T

    import probes

    fields = dict(ARCHS[arch]) | ({"num_hidden_layers": layers} if layers else {})
    config = (T.Qwen3Config if arch.startswith("qwen3") else T.LlamaConfig)(**fields)
    torch.manual_seed(0)
    T.AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype)).save_pretrained(folder)
    T.AutoTokenizer.from_pretrained(probes.models.embedded_model_dir()).save_pretrained(folder)
    return probes.load_model(str(folder), dtype=dtype, device=device)


def best_of(functions: dict, rounds: int, sync) -> dict[str, float]:
    for fn in functions.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(rounds):
        for name, fn in functions.items():
            sync()
            started = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - started)
    return {name: min(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="qwen3-4b", choices=sorted(ARCHS))
    parser.add_argument("--layers", type=int, default=None, help="fewer layers than the architecture has (smoke runs)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--pairs", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import probes
    import steering
    from probes.batching import plan_batches, tokenize
    from steering.adapters.lora import attach_lora

    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    folder = Path(tempfile.mkdtemp(prefix=f"{args.arch}-random-"))
    os.environ.setdefault("STEERSCOPE_CACHE", str(folder / "cache"))
    model = build(args.arch, args.layers, args.dtype, args.device, folder)
    hf = probes.torch_module(model)
    total = probes.sublayers.n_layers(model)
    record(
        "env",
        torch=torch.__version__,
        device=torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
        arch=args.arch,
        layers=total,
        dtype=args.dtype,
        params_b=sum(p.numel() for p in hf.parameters()) / 1e9,
    )
    pairs = probes.honesty_pairs(n=args.pairs, tokenizer=model.tokenizer, chat=True, seed=0)
    texts = [t for pair in pairs for t in pair]
    batches = plan_batches(tokenize(model.tokenizer, texts), args.batch, model.tokenizer.pad_token_id, "left", 1)

    def forward(body_only: bool):
        def run():
            with torch.inference_mode():
                for batch in batches:
                    (hf.model if body_only else hf)(**batch.model_inputs(args.device))

        return run

    capture = {
        "plain": forward(False),
        "no-head": forward(True),
        "collect 7 kinds": lambda: probes.collect(model, pairs, "all", KINDS, batch_size=args.batch, progress=False),
        "collect resid": lambda: probes.collect(model, pairs, "all", "resid", batch_size=args.batch, progress=False),
    }
    best = best_of(capture, args.rounds, sync)
    record(
        "capture",
        texts=len(texts),
        modules=7 * total,
        **{f"{k}_s": v for k, v in best.items()},
        projections_over_nohead=best["collect 7 kinds"] / best["no-head"],
        resid_over_plain=best["collect resid"] / best["plain"],
    )

    inner = list(range(1, total - 1))
    directions = {
        "steerscope": lambda: steering.directions.compute_many(
            "pca_diff", probes.collect(model, pairs, inner, "resid", batch_size=args.batch, progress=False), [(L, "resid") for L in inner]
        )
    }
    try:
        import numpy as np
        from repeng import ControlVector, DatasetEntry

        np.float_ = np.float64  # repeng still names it
        dataset = [DatasetEntry(positive=p, negative=n) for p, n in pairs]
        directions["repeng"] = lambda: ControlVector.train(hf, model.tokenizer, dataset, method="pca_diff", batch_size=args.batch)
    except ImportError:
        record("peer_missing", peer="repeng")
    try:
        from steering_vectors import train_steering_vector

        directions["steering-vectors"] = lambda: train_steering_vector(
            hf, model.tokenizer, [tuple(p) for p in pairs], layers=inner, batch_size=args.batch, show_progress=False
        )
    except ImportError:
        record("peer_missing", peer="steering-vectors")
    best = best_of(directions, max(1, args.rounds - 1), sync)
    record(
        "directions",
        layers=len(inner),
        **{f"{k}_s": v for k, v in best.items()},
        **{f"steerscope_over_{k}": best["steerscope"] / v for k, v in best.items() if k != "steerscope"},
    )

    layers, kinds = list(range(total // 4, 3 * total // 4, 2))[:9], ("o", "down")
    train_options = {"steps": 6, "batch_pairs": 8, "progress": False, "check_pairs": 4}
    steps: dict[str, list[float]] = {"InnerPiSSA": [], "LoRA": []}
    for _ in range(2):
        for name in steps:
            handle = steering.attach_innerpissa(model, layers, kinds, 16) if name == "InnerPiSSA" else attach_lora(model, layers, kinds, 16)
            history = steering.train_reprpo(model, handle, pairs[:64], **train_options).history["seconds"].tolist()
            steps[name] += [b - a for a, b in itertools.pairwise(history)]
            handle.detach()
    median = {name: statistics.median(values) for name, values in steps.items()}
    record(
        "train_step",
        targets=len(layers) * len(kinds),
        innerpissa_s=median["InnerPiSSA"],
        lora_s=median["LoRA"],
        ratio=median["InnerPiSSA"] / median["LoRA"],
    )

    acts = probes.collect(model, pairs[:64], layers=[total // 2], sublayers="resid", progress=False)
    direction = steering.compute("pca_diff", acts, total // 2, "resid")
    inputs = model.tokenizer(["Tell me about your day."] * 8, return_tensors="pt").to(args.device)

    def generate():
        hf.generate(**inputs, max_new_tokens=64, min_new_tokens=64, do_sample=False, pad_token_id=model.tokenizer.pad_token_id)

    def steered():
        with steering.steer(model, direction, 1.0):
            generate()

    best = best_of({"plain": generate, "steered": steered}, args.rounds, sync)
    record("generation_8x64", plain_s=best["plain"], steered_s=best["steered"], ratio=best["steered"] / best["plain"])

    pairs_of = [(layer, kind) for layer in range(total) for kind in KINDS]
    started = time.perf_counter()
    probes.basis.weight_svds(model, pairs_of)
    sync()
    cold = time.perf_counter() - started
    probes.basis.memory_cache.clear()
    started = time.perf_counter()
    for layer, kind in pairs_of:
        probes.weight_svd(model, layer, kind)
    record("weight_svd", weights=len(pairs_of), cold_s=cold, cached_lookups_s=time.perf_counter() - started)


if __name__ == "__main__":
    main()
