"""Exported adapters, loaded by PEFT's own reader, give steerscope's logits at that c."""

from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file

import steering
from probes import sublayers as sl
from steering.adapters.peft_folders import export_peft
from tests.tiny import tiny_model

TEXTS = ["The quick brown fox", "jumps over the lazy dog."]


def logits(model, adapter=None, c=0.0):
    batch = model.tokenizer(TEXTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        if adapter is None:
            return sl.unwrap(model)(**batch).logits
        with adapter.coeff(c):
            return sl.unwrap(model)(**batch).logits


def peft_logits(model, folder):
    """Load ``folder`` with PEFT into the (adapter-free) base model and run the same batch."""
    batch = model.tokenizer(TEXTS, return_tensors="pt", padding=True)
    peft_model = PeftModel.from_pretrained(sl.unwrap(model), str(folder))
    try:
        with torch.no_grad():
            return peft_model(**batch).logits
    finally:
        peft_model.unload()  # the original modules back


def trained_innerpissa(model, kinds, layers=(0, 2), **options):
    adapter = steering.attach_innerpissa(model, layers=list(layers), kinds=kinds, rank=4, **({"rotate_u": True} | options))
    with torch.no_grad():  # trained-looking parameters, not the tiny init
        for parameter in adapter.trainable_parameters():
            parameter.normal_(0, 0.3, generator=torch.Generator().manual_seed(parameter.numel()))
    return adapter


CASES = [
    ("llama", ("q", "k", "v", "o", "gate", "up", "down"), {}),
    ("qwen3", ("o", "down", "v"), {"scale_mode": "mult"}),
    ("gemma2", ("q", "up"), {"scale_mode": "tanh", "rotate_u": False}),
    ("gpt2", ("q", "k", "v"), {}),  # Conv1D, fused q/k/v in concat layout: one stacked LoRA per c_attn
    ("gpt2", ("o", "up", "down"), {"basis": "random"}),
    ("gpt_neox", ("q", "v", "o", "up", "down"), {"scale_mode": "none"}),  # fused q/k/v in the per-head layout
]


@pytest.mark.parametrize(("family", "kinds", "options"), CASES, ids=[f"{f}-{'.'.join(k)}" for f, k, _ in CASES])
@pytest.mark.parametrize("c", [1.0, -0.7])
def test_innerpissa_as_lora_gives_the_same_logits_in_peft(tmp_path, family, kinds, options, c):
    model = tiny_model(family)
    base = logits(model)
    adapter = trained_innerpissa(model, kinds, **options)
    expected = logits(model, adapter, c)
    assert (expected - base).abs().max() > 1e-2  # the adapter does something at this c
    folder = export_peft(adapter, tmp_path / "lora", c=c, base_model="tiny/base")
    adapter.detach()
    got = peft_logits(model, folder)
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(logits(model), base, atol=0, rtol=0)  # PEFT unloaded, base untouched

    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["base_model_name_or_path"] == "tiny/base"
    assert config["use_rslora"] is False and config["lora_alpha"] == config["r"]
    tensors = load_file(str(folder / "adapter_model.safetensors"))
    assert all(key.startswith("base_model.model.") and key.endswith((".lora_A.weight", ".lora_B.weight")) for key in tensors)


def test_flipped_sign_is_exported(tmp_path):
    model = tiny_model("llama")
    adapter = trained_innerpissa(model, ("o",))
    adapter.flip_sign()
    expected = logits(model, adapter, 1.0)
    folder = export_peft(adapter, tmp_path / "lora", c=1.0)
    adapter.detach()
    torch.testing.assert_close(peft_logits(model, folder), expected, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_lora_baseline_exports_and_saves_as_peft(tmp_path, family):
    model = tiny_model(family)
    lora = steering.attach_lora(model, layers=[0, 1], kinds=("o", "down"), rank=4, alpha=8.0)
    with torch.no_grad():
        for parameter in lora.trainable_parameters():
            parameter.normal_(0, 0.3, generator=torch.Generator().manual_seed(parameter.numel()))
    lora.flip_sign()
    at_half = logits(model, lora, 0.5)
    at_one = logits(model, lora, 1.0)
    export_peft(lora, tmp_path / "half", c=0.5)
    lora.save(tmp_path / "saved")  # the saved folder is a PEFT folder at c = 1 too
    lora.detach()
    torch.testing.assert_close(peft_logits(model, tmp_path / "half"), at_half, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(peft_logits(model, tmp_path / "saved"), at_one, atol=2e-5, rtol=1e-5)
    reloaded = steering.load_lora(tmp_path / "saved", model)  # steerscope's own reader still works
    torch.testing.assert_close(logits(model, reloaded, 1.0), at_one, atol=1e-6, rtol=0)


def test_export_refuses_what_it_cannot_write_exactly(tmp_path):
    model = tiny_model("llama")
    adapter = trained_innerpissa(model, ("o",))
    with pytest.raises(ValueError, match="one finite coefficient"):
        export_peft(adapter, tmp_path / "x", c=float("nan"))
    adapter.merge(1.0)
    with pytest.raises(ValueError, match="unmerge"):
        export_peft(adapter, tmp_path / "x")
    adapter.unmerge()
    with pytest.raises(TypeError, match="InnerPiSSA or LoRA"):
        export_peft(object(), tmp_path / "x")  # type: ignore[arg-type]
