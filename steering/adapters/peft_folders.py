"""Adapters as standard PEFT LoRA folders (``adapter_config.json`` + ``adapter_model.safetensors``).

At a fixed coefficient c an InnerPiSSA target changes its weight by exactly

    ΔW(c) = U_r [R_u(c) S(c) R_v(c)ᵀ − S] V_rᵀ        (rank ≤ r, `InnerPiSSALayer.delta`)

so it is a LoRA update ``B A`` with ``A = V_rᵀ`` (``[r, d_in]``) and ``B = U_r M(c)``
(``[d_out, r]``), written with ``lora_alpha = r`` (PEFT's ``scaling = alpha / r = 1``) and
no rsLoRA. The sign (`flip_sign`) is folded into c. A fused q/k/v projection (GPT-2's
``c_attn``, GPT-NeoX's ``query_key_value``) gets its slice's rows of ``B`` (zeros
elsewhere); several kinds on one fused module stack their factors (rank ``n·r``, given
per module in ``rank_pattern``/``alpha_pattern``). The LoRA baseline exports its own
factors, with ``c · sign`` folded into ``B``.

Target modules are full module paths of the transformers model (``model.layers.3.self_attn.o_proj``),
matched exactly by PEFT; tensors are keyed as PEFT saves them
(``base_model.model.<path>.lora_A.weight``).

Example:
    export_peft(adapter, "runs/honest-lora", c=1.0)
    peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), "runs/honest-lora")
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from probes import sublayers as sl
from probes.files import write_atomic
from probes.model_handle import model_handle

from .base import AdapterHandle


def export_peft(
    adapter: AdapterHandle,
    path: str | Path,
    *,
    c: float = 1.0,
    base_model: str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Write ``adapter`` at coefficient ``c`` as a PEFT LoRA folder that ``PeftModel.from_pretrained`` loads.

    ``base_model`` (default: the model's ``name_or_path``) becomes ``base_model_name_or_path``.
    Raises ``ValueError`` for a non-finite c, a merged adapter or one with no targets.
    """
    from peft import LoraConfig

    if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c):
        raise ValueError(f"c={c!r}: a LoRA folder holds the adapter at one finite coefficient (e.g. c=1.0).")
    if not isinstance(adapter, AdapterHandle):
        raise TypeError(f"export_peft writes an adapter (InnerPiSSA or LoRA: an AdapterHandle), not a {type(adapter).__name__}.")
    factors, alpha_of = adapter.peft_factors(c), adapter.peft_alpha()
    if not factors:
        raise ValueError("The adapter has no targets to export.")
    torch_model = sl.unwrap(adapter.model)
    conv1d = {p for p in factors if type(torch_model.get_submodule(p)).__name__ == "Conv1D"}
    if conv1d and len(conv1d) != len(factors):  # PEFT's fan_in_fan_out is one flag for the whole adapter
        raise ValueError(f"{sorted(conv1d)} are Conv1D and {sorted(set(factors) - conv1d)} are not: PEFT cannot hold both in one adapter.")
    ranks = {p: a.shape[0] for p, (a, _) in factors.items()}
    rank = max(ranks.values(), key=list(ranks.values()).count)  # the most common rank; the others by pattern
    alpha: Any = float(alpha_of) if alpha_of is not None else rank  # PEFT types it int; a trained LoRA's may be fractional
    alpha = int(alpha) if float(alpha).is_integer() else alpha
    tensors = {}
    for module_path, (A, B) in factors.items():
        if not (torch.isfinite(A).all() and torch.isfinite(B).all()):
            raise ValueError(f"{module_path}: the adapter's change at c={c} is not finite.")
        tensors[f"base_model.model.{module_path}.lora_A.weight"] = A.to("cpu", dtype).contiguous()
        tensors[f"base_model.model.{module_path}.lora_B.weight"] = B.to("cpu", dtype).contiguous()
    odd = {p: r for p, r in ranks.items() if r != rank}
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=0.0,
        bias="none",
        use_rslora=False,
        fan_in_fan_out=bool(conv1d),
        target_modules=sorted(factors),
        rank_pattern=odd,
        alpha_pattern=dict(odd) if alpha_of is None else {},
        task_type="CAUSAL_LM",
        base_model_name_or_path=base_model or model_handle(adapter.model).model_id,
    )
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    write_atomic(path / "adapter_model.safetensors", lambda temporary: save_file(tensors, str(temporary), metadata={"format": "pt"}))
    config.save_pretrained(str(path))
    return path
