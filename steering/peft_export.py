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
    >>> export_peft(adapter, "runs/honest-lora", c=1.0)
    >>> peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), "runs/honest-lora")
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from safetensors.torch import save_file
from torch import Tensor

from probes import sublayers as sl
from probes.files import write_atomic

from .adapter import InnerPiSSA
from .intervene import fused_delta
from .lora import LoraHandle

Factors = tuple[Float[Tensor, "r d_in"], Float[Tensor, "d_out r"]]


def innerpissa_factors(adapter: InnerPiSSA, c: float) -> dict[str, Factors]:
    """Module path -> ``(A, B)`` with ``B @ A`` = the adapter's weight change at c (fused kinds stacked)."""
    by_module: dict[str, list[Factors]] = {}
    for target in adapter.targets:
        layer = adapter.layer(target)
        with torch.no_grad():
            # rows of delta(V_rᵀ) are Mᵀ U_rᵀ, since V_rᵀ V_r = I: that is (U_r M)ᵀ
            B = layer.delta(layer.V.T[None], torch.tensor(float(c) * adapter.config.sign, dtype=layer.V.dtype))[0].T
            A = layer.V.T
        if target.sublayer.fused is not None:  # this slice's rows of the fused output, zeros elsewhere
            B = fused_delta(torch.zeros(B.shape[1], 3 * B.shape[0], dtype=B.dtype), target.sublayer.fused, B.T).T
        by_module.setdefault(sl.weight_path_of(target.sublayer), []).append((A, B))
    return {path: (torch.cat([a for a, _ in parts]), torch.cat([b for _, b in parts], dim=1)) for path, parts in by_module.items()}


def lora_factors(handle: LoraHandle, c: float) -> dict[str, Factors]:
    """Module path -> the LoRA baseline's ``(A, B · c · sign)`` (PEFT's scaling alpha / r is kept)."""
    found = {}
    for path, layer in zip(handle.paths, handle.lora_layers(), strict=True):
        A = layer.lora_A["default"].weight.detach()
        B = layer.lora_B["default"].weight.detach() * (float(c) * handle.sign)
        found[path] = (A, B)
    return found


def export_peft(
    adapter: InnerPiSSA | LoraHandle,
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
    if isinstance(adapter, InnerPiSSA):
        if adapter.merged:
            raise ValueError("The adapter is merged into the weights: unmerge() it before exporting its change as LoRA.")
        factors, alpha_of = innerpissa_factors(adapter, c), None
    elif isinstance(adapter, LoraHandle):
        factors, alpha_of = lora_factors(adapter, c), adapter.alpha
    else:
        raise TypeError(f"export_peft writes an InnerPiSSA or LoRA adapter, not a {type(adapter).__name__}.")
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
        base_model_name_or_path=base_model or getattr(sl.config_of(adapter.model), "name_or_path", None) or None,
    )
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    write_atomic(path / "adapter_model.safetensors", lambda temporary: save_file(tensors, str(temporary), metadata={"format": "pt"}))
    config.save_pretrained(str(path))
    return path
