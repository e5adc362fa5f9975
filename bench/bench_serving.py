"""Benchmark: greedy generation on vLLM (CPU, `steering.serve`) next to transformers, same prompts, same machine.

transformers runs here (the main environment, one batch, left padding, float32); vLLM runs in the
serving environment (``bash scripts/setup_serve.sh``) on the same token ids, in a subprocess that
also times the engine's start, a steered batch (a direction through vllm-lens) and the server's
start, and reports peak resident memory. Tokens/s counts generated tokens (EOS included) over
the batch's wall time, after one warm-up batch on each side.

    python bench/bench_serving.py [--prompts 16] [--tokens 64]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")

VLLM_SIDE = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    job = json.loads(Path(sys.argv[1]).read_text())
    started = time.time()
    from steering import serve
    import torch
    llm = serve.engine(job["model"])
    result = {"engine_start_s": time.time() - started}
    serve.generate(llm, job["prompts"][:2], max_tokens=4)  # warm-up
    started = time.time()
    out = serve.generate(llm, job["prompts"], max_tokens=job["tokens"])
    result["seconds"] = time.time() - started
    result["generated"] = sum(len(c.token_ids) for c in out)
    d = serve.as_plan(job["plan"])
    started = time.time()
    out = serve.generate(llm, job["prompts"], plan=d, c=1.0, max_tokens=job["tokens"])
    result["steered_seconds"] = time.time() - started
    result["steered_generated"] = sum(len(c.token_ids) for c in out)
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            result["peak_rss_mb"] = int(line.split()[1]) / 1024
    with serve.start_server(job["model"], log=Path(sys.argv[1]).with_name("server.log")) as server:
        result["server_start_s"] = server.started_in
        rss = 0
        for status in Path("/proc").glob("[0-9]*/status"):
            try:
                fields = dict(l.split(":", 1) for l in status.read_text().splitlines() if ":" in l)
            except OSError:
                continue
            if fields["Pid"].strip() == str(server.pid) or fields["PPid"].strip() == str(server.pid):
                rss += int(fields.get("VmRSS", "0 kB").split()[0])
        result["server_rss_mb"] = rss / 1024
    print("RESULT " + json.dumps(result), flush=True)
    import os
    os._exit(0)
    """
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()

    import torch

    import probes
    import steering
    from probes.batching import tokenize
    from probes.models import embedded_model_dir
    from steering import serve

    python = serve.serve_python()
    if not python.exists():
        sys.exit(f"No serving environment ({python}): run `{serve.SETUP}` first.")
    model = probes.load_model()
    module = probes.torch_module(model)
    pairs = probes.honesty_pairs(n=args.prompts, tokenizer=model.tokenizer, chat=True)
    texts = [pair.positive for pair in pairs][: args.prompts]
    ids = tokenize(model.tokenizer, texts)

    def hf_batch(max_tokens: int) -> tuple[float, int]:
        width = max(len(i) for i in ids)
        pad = model.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(i)) + i for i in ids])
        mask = torch.tensor([[0] * (width - len(i)) + [1] * len(i) for i in ids])
        started = time.time()
        with torch.no_grad():
            out = module.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=max_tokens, do_sample=False, pad_token_id=pad)
        seconds = time.time() - started
        eos = module.generation_config.eos_token_id
        generated = 0
        for row in out[:, width:].tolist():
            generated += next((k + 1 for k, t in enumerate(row) if t == eos), len(row))
        return seconds, generated

    hf_batch(4)  # warm-up
    hf_seconds, hf_generated = hf_batch(args.tokens)
    hf_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    with tempfile.TemporaryDirectory() as work:
        vector = torch.nn.functional.normalize(torch.randn(576, generator=torch.Generator().manual_seed(0)), dim=0)
        steering.Steering([steering.Direction(vector, 4.0, 9, "resid", "random")]).save(Path(work) / "plan")
        job = {"model": str(embedded_model_dir()), "prompts": ids, "tokens": args.tokens, "plan": str(Path(work) / "plan")}
        (Path(work) / "job.json").write_text(json.dumps(job))
        (Path(work) / "vllm_side.py").write_text(VLLM_SIDE)
        run = subprocess.run(
            [str(python), str(Path(work) / "vllm_side.py"), str(Path(work) / "job.json")], capture_output=True, text=True, timeout=1800
        )
        lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
        if not lines:
            sys.exit(f"The vLLM side failed:\n{run.stdout[-2000:]}\n{run.stderr[-4000:]}")
        got = json.loads(lines[0][len("RESULT ") :])

    print(f"{args.prompts} prompts × up to {args.tokens} greedy tokens, float32, one batch")
    print("| engine | start (s) | generated | seconds | tokens/s | peak RSS (MB) |")
    print("|---|---|---|---|---|---|")
    print(f"| transformers | — | {hf_generated} | {hf_seconds:.1f} | {hf_generated / hf_seconds:.1f} | {hf_rss:.0f} |")
    print(
        f"| vLLM offline | {got['engine_start_s']:.1f} | {got['generated']} | {got['seconds']:.1f} | "
        f"{got['generated'] / got['seconds']:.1f} | {got['peak_rss_mb']:.0f} |"
    )
    print(
        f"| vLLM offline, steered (vllm-lens) | — | {got['steered_generated']} | {got['steered_seconds']:.1f} | "
        f"{got['steered_generated'] / got['steered_seconds']:.1f} | — |"
    )
    print(f"| vLLM server | {got['server_start_s']:.1f} | — | — | — | {got['server_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
