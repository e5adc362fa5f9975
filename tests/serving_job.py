"""The vLLM side of tests/test_serving.py, run by the serving environment's python (``.venv-serve``).

    python tests/serving_job.py JOB.json OUT_FOLDER

JOB.json (written by the test) names the model folder, the prompts as token ids, a plan folder and
its c, a PEFT LoRA folder, contrastive pairs and layers. One vLLM engine does every offline check;
then one server starts on a free loopback port, answers one completion and is stopped by its pid.
Writes OUT_FOLDER/result.json (tokens, timings) and OUT_FOLDER/acts.safetensors (the capture).
Nothing here compares: the test does, against transformers and steerscope in the main environment.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def resident_mb() -> float:
    """This process's peak resident memory (VmHWM), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def process_tree_rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and its children now, in MB (the server and its engine core)."""
    total = 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
        except OSError:
            continue
        if int(fields.get("Pid", "0")) == pid or int(fields.get("PPid", "0").strip() or 0) == pid:
            total += int(fields.get("VmRSS", "0 kB").split()[0] or 0)
    return total / 1024


def main(job_path: str, out: str) -> None:
    from steering import serve

    job = json.loads(Path(job_path).read_text())
    out_dir = Path(out)
    result: dict = {}
    started = time.time()
    llm = serve.engine(job["model"], lora=job["lora_rank"])
    result["engine_start_s"] = time.time() - started

    prompts = job["prompts"]
    started = time.time()
    base = serve.generate(llm, prompts, max_tokens=job["max_tokens"])
    result["base_s"] = time.time() - started
    result["base"] = [c.token_ids for c in base]
    result["steered"] = [c.token_ids for c in serve.generate(llm, prompts, plan=job["plan"], c=job["c"], max_tokens=job["max_tokens"])]
    result["lora"] = [c.token_ids for c in serve.generate(llm, prompts, adapter=job["adapter"], max_tokens=job["max_tokens"])]
    acts = serve.capture(llm, [tuple(p) for p in job["pairs"]], layers=job["layers"])
    acts.save(out_dir / "acts.safetensors")
    result["offline_peak_rss_mb"] = resident_mb()

    with serve.start_server(job["model"], plan=job["plan"], c=job["c"], log=out_dir / "server.log") as server:
        result["server_start_s"] = server.started_in
        result["server_pid"] = server.pid
        result["endpoint"] = server.endpoint
        result["server_rss_mb"] = process_tree_rss_mb(server.pid)
        answer = serve.complete(server, prompts[job["server_prompt"]], max_tokens=job["max_tokens"])
        choice = answer["choices"][0]
        result["server_text"] = choice["text"]
        result["server_tokens"] = choice.get("token_ids")
        server.stop()
        result["server_returncode"] = server.process.returncode
    result["server_alive_after_stop"] = Path(f"/proc/{result['server_pid']}").exists()
    (out_dir / "result.json").write_text(json.dumps(result))
    print(json.dumps({k: v for k, v in result.items() if k.endswith(("_s", "_mb"))}))
    sys.stdout.flush()
    os._exit(0)  # the in-process engine has threads that need not be joined


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
