"""Plans, directions and adapters as Hugging Face-style folders: `save_pretrained`, `from_pretrained`, `push_to_hub`.

A folder holds what `Steerable.save` writes (``steerable.json`` + ``directions.safetensors`` for a
plan; ``adapter.json`` + ``adapter.safetensors`` for InnerPiSSA; ``lora.safetensors`` for LoRA) and
a model card ``README.md`` whose metadata names ``base_model`` (Hugging Face's model-card schema).
An adapter folder is also a PEFT LoRA folder (``adapter_config.json``, ``adapter_model.safetensors``,
at the coefficient given, `steering.adapters.peft_folders`), so ``PeftModel.from_pretrained`` loads it too.

Layer convention (written into every card): layer L is decoder block L, counted from 0; ``resid``
at L is that block's output (transformers' ``hidden_states[L + 1]``, TransformerLens'
``blocks.L.hook_resid_post``); a projection kind (``o``, ``down``, ...) is that module's output
in block L. A direction adds ``c · scale · vector`` there.

`push_to_hub` uploads a folder with ``huggingface_hub`` (network and a token needed); nothing
else here uses the network, and `from_pretrained` downloads only a name that is not a local folder.

Example:
    save_pretrained(plan, "runs/honesty-plan", model=model)
    plan = from_pretrained("runs/honesty-plan")                     # a Steering plan
    adapter = from_pretrained("runs/innerpissa", model)             # attaches to model
    push_to_hub("runs/honesty-plan", "me/honesty-smollm2")          # optional
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from probes.files import write_atomic
from probes.model_handle import model_handle

from ..adapters.innerpissa import InnerPiSSA
from ..adapters.lora import LoraHandle
from ..adapters.peft_folders import export_peft
from ..directions import Direction
from ..plans import Prompting, Steering
from ..steerable import load_steerable

CONVENTION = (
    "Layer L is decoder block L, counted from 0. `resid` at L is that block's output (transformers' "
    "`hidden_states[L + 1]`, TransformerLens' `blocks.L.hook_resid_post`, llama.cpp's `direction.L`); "
    "a projection kind (`q`, `k`, `v`, `o`, `gate`, `up`, `down`) is that module's output in block L. "
    "A direction is applied as `h + c · scale · vector` at its place."
)


def save_pretrained(
    steerable: Steering | Prompting | InnerPiSSA | LoraHandle | Direction | Sequence[Direction],
    folder: str | Path,
    *,
    model: Any = None,
    base_model: str | None = None,
    c: float = 1.0,
) -> Path:
    """Write ``steerable`` and a model card into ``folder`` (directions are saved as a plan of weight 1 each).

    ``base_model`` defaults to the model's (or adapter's) ``name_or_path``; ``c`` is the coefficient of
    an adapter's PEFT copy. Raises ``ValueError`` when no base model can be named.
    """
    if isinstance(steerable, Direction) or (isinstance(steerable, Sequence) and not isinstance(steerable, str)):
        steerable = Steering(list(steerable) if not isinstance(steerable, Direction) else [steerable])
    owner = steerable.model if isinstance(steerable, (InnerPiSSA, LoraHandle)) else model
    base = base_model or (model_handle(owner).model_id if owner is not None else None)
    if not base:
        raise ValueError("Name the base model: pass base_model='org/name' (or model=...), which the model card records.")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(steerable, Steering):
        steerable.save(folder, model)
    elif isinstance(steerable, (InnerPiSSA, LoraHandle)):
        steerable.save(folder)  # a LoRA handle writes its PEFT copy at c = 1 itself
        if isinstance(steerable, InnerPiSSA) or c != 1.0:
            export_peft(steerable, folder, c=c, base_model=base)
    elif isinstance(steerable, Prompting):
        steerable.save(folder)
    else:
        raise TypeError(f"save_pretrained writes a steering plan, directions or an adapter, not a {type(steerable).__name__}.")
    write_atomic(folder / "README.md", model_card(steerable, str(base), c))
    return folder


def model_card(steerable: Any, base: str, c: float) -> str:
    """The README.md: metadata (``base_model``, ``library_name``, tags) and what the folder holds."""
    adapter = isinstance(steerable, (InnerPiSSA, LoraHandle))
    lines = ["---", f"base_model: {base}", f"library_name: {'peft' if adapter else 'steerscope'}", "tags:", "- steerscope", "- steering"]
    lines += ["- lora", "---", ""] if adapter else ["---", ""]
    lines += [
        f"# {getattr(steerable, 'name', None) or type(steerable).__name__}",
        "",
        f"A steerscope {type(steerable).__name__} for `{base}`.",
        "",
    ]
    if isinstance(steerable, Steering):
        lines += ["| layer | kind | method | scale | weight | mode |", "|---|---|---|---|---|---|"]
        for d, w, m in zip(steerable.directions, steerable.weights or [], steerable.modes or [], strict=False):
            lines.append(f"| {d.layer} | {d.kind} | {d.method} | {d.scale:.4g} | {w:g} | {m} |")
        lines += [
            "",
            "```python",
            "import steering",
            "plan = steering.from_pretrained(FOLDER)",
            "with steering.applied(model, plan, 1.0):",
            "    ...",
            "```",
        ]
    if adapter:
        lines += [
            f"The PEFT files (`adapter_config.json`, `adapter_model.safetensors`) hold the adapter at c = {c:g}:",
            "",
            "```python",
            "from peft import PeftModel",
            f'model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("{base}"), FOLDER)',
            "```",
            "",
            "`steering.from_pretrained(FOLDER, model)` attaches the steerscope adapter, whose coefficient stays free.",
        ]
    lines += ["", "## Layer convention", "", CONVENTION, ""]
    return "\n".join(lines)


def from_pretrained(folder: str | Path, model: Any = None) -> Any:
    """Read a folder `save_pretrained` wrote (a Hub repo id is downloaded first): a plan without ``model``,
    or anything with it (adapters attach themselves to ``model``)."""
    path = Path(folder)
    if not path.is_dir():
        from huggingface_hub import snapshot_download

        path = Path(snapshot_download(str(folder)))
    if model is None:
        return Steering.load(path)
    return load_steerable(path, model)


def push_to_hub(folder: str | Path, repo_id: str, *, private: bool = True, token: str | None = None) -> str:
    """Upload ``folder`` to the Hugging Face Hub repository ``repo_id`` (created if missing); returns its URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    api.upload_folder(folder_path=str(folder), repo_id=repo_id)
    return f"https://huggingface.co/{repo_id}"
