"""Benchmark: a remote collect on a real NDIF on this machine, next to the same collect run locally.

Starts NDIF (`steerscope ndif up`, CPU model actors, float32) and times, on the embedded SmolLM2
(its Hugging Face folder, as the server loads it): the cold start; the first remote trace (NDIF
deploys the model); then small collects (resid at every layer, one batch) and one large collect
(every kind at every layer, over Redis's 8 MiB pub/sub limit, so it comes back through the object
store), each remote and local in turn, interleaved, after a warm-up. Remote results are checked
against the local ones. The ratio is remote / local wall time: what NDIF's round trip costs when
the server's hardware is no faster than this machine.

    python bench/bench_ndif.py [--pairs 16] [--large-pairs 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
import warnings
from typing import Any

warnings.filterwarnings("ignore")


def stack_rss(server: Any) -> int:
    """Proportional resident memory (PSS) of every process the local NDIF started, children included."""
    import psutil

    total = 0
    for service in server.services:
        root = psutil.Process(service.pid)
        for process in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                total += process.memory_full_info().pss  # proportional: shared pages (torch, Ray's object store) once
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--large-pairs", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import nnsight.intervention.backends.remote as nnsight_remote
    import torch

    import probes
    from probes.models import embedded_model_dir
    from probes.sublayers import available_kinds
    from steerscope import ndif_local

    folder = str(embedded_model_dir())
    local = probes.load_model(folder)
    pairs = probes.honesty_pairs(n=max(args.pairs, args.large_pairs), tokenizer=local.tokenizer, chat=True)
    small = dict(layers="all", sublayers="resid", batch_size=2 * args.pairs, progress=False)
    large = dict(layers="all", sublayers=available_kinds(local), batch_size=2 * args.large_pairs, progress=False)

    downloads: list[bool] = []

    class Recording(nnsight_remote.RemoteBackend):
        def download_result(self, url):
            downloads.append(isinstance(url, str) and bool(url))
            return super().download_result(url)

    nnsight_remote.RemoteBackend = Recording
    with tempfile.TemporaryDirectory() as home:
        started = time.perf_counter()
        server = ndif_local.up(home, device="cpu")
        cold_start = time.perf_counter() - started
        try:
            server.point_nnsight()
            client = probes.load_model(folder, remote=True)
            started = time.perf_counter()
            probes.collect(client, pairs[: args.pairs], **small)
            first = time.perf_counter() - started
            times: dict[str, list[float]] = {"small remote": [], "small local": [], "large remote": [], "large local": []}
            for _ in range(args.repeats):
                for name, model, options, n in (
                    ("small remote", client, small, args.pairs),
                    ("small local", local, small, args.pairs),
                    ("large remote", client, large, args.large_pairs),
                    ("large local", local, large, args.large_pairs),
                ):
                    started = time.perf_counter()
                    result = probes.collect(model, pairs[:n], **options)
                    times[name].append(time.perf_counter() - started)
                    if name.endswith("remote"):
                        expected = probes.collect(local, pairs[:n], **options)
                        worst = max(float((result[key] - expected[key]).abs().max()) for key in expected)
                        assert worst < 1e-3, f"{name}: remote differs from local by {worst}"
            size = sum(result[key].numel() * result[key].element_size() for key in result)
            rss = stack_rss(server)
        finally:
            ndif_local.stop(server)
    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"cold start (ndif up): {cold_start:.1f} s; first remote trace (deploys the model): {first:.1f} s")
    print(
        f"small collect ({args.pairs} pairs, resid x all layers): remote {median['small remote']:.2f} s, "
        f"local {median['small local']:.2f} s, ratio {median['small remote'] / median['small local']:.2f}"
    )
    print(
        f"large collect ({args.large_pairs} pairs, {len(list(result))} (layer, kind), {size / 2**20:.1f} MiB float32): "
        f"remote {median['large remote']:.2f} s, local {median['large local']:.2f} s, "
        f"ratio {median['large remote'] / median['large local']:.2f}; through the object store: {downloads[-1]}"
    )
    print(
        f"the stack's memory (PSS) with the model deployed: {rss / 2**30:.2f} GiB; torch threads {torch.get_num_threads()}; medians of {args.repeats}"
    )


if __name__ == "__main__":
    main()
