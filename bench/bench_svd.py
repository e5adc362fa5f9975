"""Weight SVDs of every projection of the embedded model: cold (batched by shape), from the
disk cache (fresh memory cache: read + validity check), and from memory; and how exact the
randomized ``lowrank=True`` SVD is against the full one at rank 64.

    python bench/bench_svd.py

Prints seconds and ratios; nothing is asserted (see tests/test_svd_cache.py for behaviour).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

import probes
import probes.basis
from probes import sublayers as sl

KINDS = ("q", "k", "v", "o", "gate", "up", "down")


def main() -> None:
    model = probes.load_model()
    total = sl.n_layers(model)
    keys = [(layer, kind) for layer in range(total) for kind in KINDS]
    with tempfile.TemporaryDirectory() as folder:
        probes.basis.svd_cache_dir = lambda: Path(folder)  # a cold cache, removed afterwards
        probes.basis.memory_cache.clear()
        started = time.perf_counter()
        probes.basis.weight_svds(model, keys)
        cold = time.perf_counter() - started

        probes.basis.memory_cache.clear()
        started = time.perf_counter()
        for layer, kind in keys:
            probes.weight_svd(model, layer, kind)
        disk = time.perf_counter() - started

        recent = keys[-probes.basis.MEMORY_CACHE_SIZE :]  # what the bounded memory cache holds now
        started = time.perf_counter()
        for layer, kind in recent:
            probes.weight_svd(model, layer, kind)
        memory = time.perf_counter() - started

        errors, lowrank_s, full_s = [], 0.0, 0.0
        for layer, kind in keys[:: len(KINDS) + 1][:8]:  # a spread of kinds and layers
            weight = sl.weight_matrix(model, sl.resolve(model, layer, kind)).float()
            started = time.perf_counter()
            low = probes.weight_svd(model, layer, kind, rank=64, lowrank=True, cache=False)
            lowrank_s += time.perf_counter() - started
            started = time.perf_counter()
            full = probes.weight_svd(model, layer, kind, rank=64, cache=False)
            full_s += time.perf_counter() - started
            errors.append(float(((low.S - full.S).abs() / full.S).max()))
            del weight
    print(f"{len(keys)} weights of {total} layers × {len(KINDS)} kinds (torch {torch.__version__}, {torch.get_num_threads()} threads)")
    print(f"cold, batched by shape:        {cold:7.2f} s")
    print(f"from the disk cache (checked): {disk:7.2f} s  ({disk / len(keys) * 1e3:.1f} ms a weight)")
    print(f"from memory ({len(recent)} held):          {memory:7.3f} s  ({memory / len(recent) * 1e3:.2f} ms a weight)")
    print(
        f"lowrank=True at rank 64 (8 weights): {lowrank_s:.2f} s vs full {full_s:.2f} s; "
        f"max relative error of the top-64 singular values {max(errors):.2e}"
    )


if __name__ == "__main__":
    main()
