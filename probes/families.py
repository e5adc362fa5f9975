"""The module layouts steerscope knows: one table of sublayer kinds per architecture family.

A `Family` maps each kind (``resid``, ``attn``, ``mlp``, ``q k v``, ``o``, ``gate``,
``up``, ``down``; see `probes.sublayers`) to a module path relative to a decoder block;
`FusedSlice` says where q, k or v sit in a fused projection's output, and moves features
into (`FusedSlice.place`) and out of (`FusedSlice.features`) it. Pure data and formulas:
this module imports nothing of steerscope.

Example:
    >>> import torch
    >>> FAMILIES["qwen2"].paths["up"], FAMILIES["gpt2"].fused_qkv
    ('mlp.up_proj', 'attn.c_attn')
    >>> k = FusedSlice(index=1, layout="concat", n_heads=1)
    >>> fused = k.place(torch.ones(2), like=torch.zeros(6))
    >>> fused.tolist(), k.features(fused).tolist()
    ([0.0, 0.0, 1.0, 1.0, 0.0, 0.0], [1.0, 1.0])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from einops import rearrange
from jaxtyping import Float
from torch import Tensor, nn

KINDS: tuple[str, ...] = ("resid", "attn", "mlp", "q", "k", "v", "o", "gate", "up", "down")
QKV = ("q", "k", "v")


@dataclass(frozen=True)
class Family:
    """Module layout of one architecture family, relative to a decoder block."""

    name: str
    layers: str  # dotted path of the ModuleList of decoder blocks
    paths: dict[str, str]  # kind -> path relative to the block ("" is the block)
    fused_qkv: str | None = None  # relative path of a fused q/k/v projection
    fused_layout: Literal["concat", "heads"] = "concat"
    # Block-output kinds whose output equals a projection's output: their weight basis.
    weight_of: dict[str, str] = field(default_factory=lambda: {"attn": "o", "mlp": "down"})


LLAMA_LIKE = Family(
    name="llama",
    layers="model.layers",
    paths={
        "resid": "",
        "attn": "self_attn",
        "mlp": "mlp",
        "q": "self_attn.q_proj",
        "k": "self_attn.k_proj",
        "v": "self_attn.v_proj",
        "o": "self_attn.o_proj",
        "gate": "mlp.gate_proj",
        "up": "mlp.up_proj",
        "down": "mlp.down_proj",
    },
)
GPT2 = Family(
    name="gpt2",
    layers="transformer.h",
    paths={"resid": "", "attn": "attn", "mlp": "mlp", "o": "attn.c_proj", "up": "mlp.c_fc", "down": "mlp.c_proj"},
    fused_qkv="attn.c_attn",
    fused_layout="concat",
)
GPT_NEOX = Family(
    name="gpt_neox",
    layers="gpt_neox.layers",
    paths={
        "resid": "",
        "attn": "attention",
        "mlp": "mlp",
        "o": "attention.dense",
        "up": "mlp.dense_h_to_4h",
        "down": "mlp.dense_4h_to_h",
    },
    fused_qkv="attention.query_key_value",
    fused_layout="heads",
)
GEMMA3_MULTIMODAL = Family(name="gemma3", layers="model.language_model.layers", paths=LLAMA_LIKE.paths)

FAMILIES: dict[str, Family] = {
    **{t: LLAMA_LIKE for t in ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "olmo", "olmo2", "smollm3")},
    "gemma3": GEMMA3_MULTIMODAL,
    "gpt2": GPT2,
    "gpt_neox": GPT_NEOX,
}


@dataclass(frozen=True)
class FusedSlice:
    """Where q, k or v sit inside a fused projection's output features.

    ``concat`` (GPT-2 ``c_attn``): ``[q | k | v]``; ``heads`` (GPT-NeoX
    ``query_key_value``): per head ``[q_h | k_h | v_h]``.
    """

    index: int  # 0 = q, 1 = k, 2 = v
    layout: Literal["concat", "heads"]
    n_heads: int

    def features(self, out: Float[Tensor, "... f3"]) -> Float[Tensor, "... f"]:
        """Take this slice from the last dim of a fused output."""
        if self.layout == "concat":
            parts = rearrange(out, "... (three f) -> three ... f", three=3)
        else:
            parts = rearrange(out, "... (h three e) -> three ... (h e)", three=3, h=self.n_heads)
        return parts[self.index]

    def place(self, step: Float[Tensor, "... f"], like: Float[Tensor, "... f3"]) -> Float[Tensor, "... f3"]:
        """A zero tensor shaped like the fused output ``like`` with ``step`` in this slice (`features`' inverse)."""
        parts = [torch.zeros_like(like[..., : like.shape[-1] // 3]) for _ in range(3)]
        parts[self.index] = step.expand_as(parts[self.index]).to(like.dtype)
        if self.layout == "concat":
            return torch.cat(parts, dim=-1)
        per_head = [p.unflatten(-1, (self.n_heads, -1)) for p in parts]
        return torch.cat(per_head, dim=-1).flatten(-2)

    def rows(self, weight: Float[Tensor, "f3 d_in"]) -> Float[Tensor, "f d_in"]:
        """Take this slice's rows from a fused ``[d_out, d_in]`` weight."""
        return self.features(weight.T).T


def has_submodule(module: nn.Module, path: str) -> bool:
    try:
        module.get_submodule(path)
        return True
    except AttributeError:
        return False


def detect_family(module: nn.Module) -> Family | None:
    """The family of a transformers model, by ``config.model_type`` or by its module names (None: unknown)."""
    model_type = getattr(getattr(module, "config", None), "model_type", None)
    if model_type in FAMILIES and has_submodule(module, FAMILIES[model_type].layers):
        return FAMILIES[model_type]
    for family in (LLAMA_LIKE, GPT2, GPT_NEOX, GEMMA3_MULTIMODAL):
        if has_submodule(module, f"{family.layers}.0"):
            return family
    return None
