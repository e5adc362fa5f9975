"""Direction export (safetensors, GGUF read independently with the gguf package) and the baukit-style API."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch

import probes
from probes import sublayers as sl
from probes.hooks import trace_modules
from probes.module_output import module_hidden
from steering import Direction
from steering.directions import load_directions, save_directions
from steering.formats.gguf import export_gguf, import_gguf
from tests.tiny import tiny_model


def direction(layer: int, seed: int, kind: str = "resid") -> Direction:
    vector = torch.nn.functional.normalize(torch.randn(32, generator=torch.Generator().manual_seed(seed)), dim=0)
    return Direction(vector=vector, scale=2.5, layer=layer, kind=kind, method="pca_diff", meta={"vote_share": 0.9})


def test_gguf_control_vector_is_readable_by_the_gguf_package(tmp_path):
    path = export_gguf([direction(2, 0), direction(5, 1)], tmp_path / "cv.gguf", coeff=2.0, model_hint="llama")
    reader = gguf.GGUFReader(str(path))
    field = reader.fields["general.architecture"]
    assert bytes(field.parts[field.data[0]]).decode() == "controlvector"
    hint = reader.fields["controlvector.model_hint"]
    assert bytes(hint.parts[hint.data[0]]).decode() == "llama"
    assert int(reader.fields["controlvector.layer_count"].parts[-1][0]) == 5
    tensors = {t.name: np.array(t.data) for t in reader.tensors}
    assert sorted(tensors) == ["direction.2", "direction.5"]
    np.testing.assert_allclose(tensors["direction.5"], (2.0 * 2.5 * direction(5, 1).vector).numpy(), rtol=1e-6)


def test_gguf_round_trip(tmp_path):
    original = [direction(3, 4), direction(1, 2)]
    loaded = import_gguf(export_gguf(original, tmp_path / "cv.gguf"))
    assert [d.layer for d in loaded] == [1, 3]
    for a, b in zip(sorted(original, key=lambda d: d.layer), loaded):
        torch.testing.assert_close(b.vector, a.vector, atol=1e-6, rtol=1e-6)
        assert b.scale == pytest.approx(a.scale, rel=1e-6) and b.kind == "resid"


def test_gguf_refuses_what_llama_cpp_cannot_apply(tmp_path):
    with pytest.raises(ValueError, match="block 0"):
        export_gguf([direction(0, 0)], tmp_path / "a.gguf")
    with pytest.raises(ValueError, match="residual-stream"):
        export_gguf([direction(2, 0, kind="down")], tmp_path / "b.gguf")


def test_safetensors_round_trip_keeps_metadata(tmp_path):
    original = [direction(2, 0), direction(4, 1, kind="down")]
    loaded = load_directions(save_directions(original, tmp_path / "d.safetensors"))
    for a, b in zip(original, loaded):
        assert torch.equal(a.vector, b.vector) and (a.layer, a.kind, a.method, a.scale) == (b.layer, b.kind, b.method, b.scale)
        assert b.meta["vote_share"] == 0.9


def test_trace_modules_records_what_collect_records():
    model = tiny_model("llama")
    text = "The cat sat on the mat"
    acts = probes.collect(model, [(text, "The dog sat on the mat")], layers=[1], sublayers=("up", "resid"), progress=False)
    names = ["model.layers.1.mlp.up_proj", "model.layers.1"]
    with trace_modules(model, names, retain_input=True) as traces, torch.no_grad():
        sl.unwrap(model)(**model.tokenizer([text], return_tensors="pt"))
    torch.testing.assert_close(traces[names[0]].output[0, -1], acts[1, "up"][0, 0, 0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(module_hidden(traces[names[1]].output)[0, -1], acts[1, "resid"][0, 0, 0], atol=1e-5, rtol=1e-4)
    assert traces[names[0]].input.shape[-1] == 32


def test_trace_modules_edit_output_changes_the_model_output_and_retains_grad():
    model = tiny_model("llama")
    batch = model.tokenizer(["hello world"], return_tensors="pt")
    with torch.no_grad():
        base = sl.unwrap(model)(**batch).logits
    with trace_modules(model, ["model.layers.0.mlp"], edit_output=lambda output, name: output * 0), torch.no_grad():
        edited = sl.unwrap(model)(**batch).logits
    assert not torch.allclose(base, edited)
    with trace_modules(model, ["model.layers.1.mlp.down_proj"], retain_grad=True) as traces:
        sl.unwrap(model)(**batch).logits.sum().backward()
    assert traces["model.layers.1.mlp.down_proj"].output.grad is not None
    with torch.no_grad():  # hooks are gone after the block
        assert torch.equal(sl.unwrap(model)(**batch).logits, base)
