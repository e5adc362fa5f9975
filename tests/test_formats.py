"""Directions written for other tools, read back by those tools' readers (repeng, dialz) or by their
documented conventions, and applied the way each tool applies them: the logits equal steerscope's."""

from __future__ import annotations

import json
import sys
import types

import gguf
import numpy as np
import pytest
import torch

import steering
from probes import sublayers as sl
from steering.directions.direction import Direction
from steering.formats import export_easysteer, export_neuronpedia, import_easysteer, import_neuronpedia
from tests.tiny import saved_folder, tiny_model

TEXTS = ["The quick brown fox", "jumps over the lazy dog."]


def direction(layer: int, seed: int, scale: float = 1.5) -> Direction:
    vector = torch.nn.functional.normalize(torch.randn(32, generator=torch.Generator().manual_seed(seed)), dim=0)
    return Direction(vector=vector, scale=scale, layer=layer, kind="resid", method=f"test{seed}")


def run(model, hooks=()):
    """Logits of the batch with ``hooks`` ((block index, vector, "output"|"input")) added by plain torch hooks."""
    blocks = sl.unwrap(model).model.layers
    handles = []
    for layer, vector, where in hooks:
        if where == "output":  # llama.cpp / repeng / dialz / EasySteer: added to block L's output
            handles.append(blocks[layer].register_forward_hook(lambda m, a, out, v=vector: add(out, v)))
        else:  # TransformerLens' hook_resid_pre of block N: added to its input
            handles.append(blocks[layer].register_forward_pre_hook(lambda m, args, v=vector: (args[0] + v, *args[1:])))
    try:
        with torch.no_grad():
            return sl.unwrap(model)(**model.tokenizer(TEXTS, return_tensors="pt", padding=True)).logits
    finally:
        for handle in handles:
            handle.remove()


def add(output, vector):
    return (output[0] + vector, *output[1:]) if isinstance(output, tuple) else output + vector


def steered(model, directions, coeff):
    with steering.steer(model, directions, coeff):
        return run(model)


def repeng_or_skip(monkeypatch):
    # repeng 0.4.0 names np.float_ in an annotation at import; numpy 2 removed it (its reader does not use it)
    monkeypatch.setattr(np, "float_", np.float64, raising=False)
    return pytest.importorskip("repeng", reason="repeng is not installed (pip install --no-deps repeng)")


def test_gguf_read_by_repeng_with_the_models_type_and_applied_at_block_outputs(tmp_path, monkeypatch):
    repeng = repeng_or_skip(monkeypatch)
    model = tiny_model("qwen2")
    directions = [direction(1, 0), direction(2, 1, scale=0.8)]
    path = steering.export_gguf(directions, tmp_path / "cv.gguf", coeff=2.0, model=model)
    vector = repeng.ControlVector.import_gguf(str(path))
    assert vector.model_type == "qwen2"  # config.model_type, not a fixed "llama"
    assert sorted(vector.directions) == [1, 2]
    for d in directions:
        np.testing.assert_allclose(np.asarray(vector.directions[d.layer]), (2.0 * d.scale * d.vector).numpy(), rtol=0, atol=1e-6)
    hooks = [(layer, torch.from_numpy(np.array(v, dtype=np.float32)), "output") for layer, v in vector.directions.items()]
    torch.testing.assert_close(run(model, hooks), steered(model, directions, 2.0), atol=1e-5, rtol=1e-5)


def test_repengs_own_files_are_read_by_import_gguf(tmp_path, monkeypatch):
    repeng = repeng_or_skip(monkeypatch)
    written = {3: np.linspace(-1, 1, 32, dtype=np.float32), 5: np.sin(np.arange(32, dtype=np.float32))}
    repeng.ControlVector(model_type="mistral", directions=written).export_gguf(str(tmp_path / "repeng.gguf"))
    loaded = steering.import_gguf(tmp_path / "repeng.gguf")
    assert [d.layer for d in loaded] == [3, 5] and loaded[0].meta["model_hint"] == "mistral"
    for d in loaded:
        np.testing.assert_allclose((d.scale * d.vector).numpy(), written[d.layer], rtol=0, atol=1e-6)


def test_dialz_files_are_read_by_import_gguf(tmp_path, monkeypatch):
    if "dotenv" not in sys.modules:  # dialz imports python-dotenv at import time; its GGUF code does not use it
        try:
            import dotenv  # noqa: F401
        except ImportError:
            monkeypatch.setitem(sys.modules, "dotenv", types.SimpleNamespace(load_dotenv=lambda *a, **k: None))
    dialz_vector = pytest.importorskip("dialz.vector", reason="dialz is not installed (pip install --no-deps dialz)")
    written = {1: np.linspace(-1, 1, 32, dtype=np.float32), 2: np.cos(np.arange(32, dtype=np.float32))}
    dialz_vector.SteeringVector(model_type="llama", directions=written).export_gguf(str(tmp_path / "dialz.gguf"))
    loaded = steering.import_gguf(tmp_path / "dialz.gguf")
    assert [d.layer for d in loaded] == [1, 2] and loaded[0].meta["format"] == "steeringvector"
    assert loaded[0].meta["model_hint"] == "llama"
    for d in loaded:
        np.testing.assert_allclose((d.scale * d.vector).numpy(), written[d.layer], rtol=0, atol=1e-6)


def test_neuronpedia_vector_applied_at_hook_resid_pre_of_the_next_block_equals_steer(tmp_path):
    model = tiny_model("llama")
    d = direction(1, 3)
    path = export_neuronpedia(d, tmp_path / "np.json", model_id="tiny-llama", coeff=3.0, model=model)
    record = json.loads(path.read_text())
    assert record["hookType"] == "hook_resid_pre" and record["layerNumber"] == 2 and record["modelId"] == "tiny-llama"
    # Neuronpedia adds strength · vector to the input of block layerNumber
    added = record["vectorDefaultSteerStrength"] * torch.tensor(record["vector"])
    got = run(model, [(record["layerNumber"], added, "input")])
    torch.testing.assert_close(got, steered(model, d, 3.0), atol=1e-5, rtol=1e-5)
    (back,) = import_neuronpedia(path)
    assert back.layer == 1 and back.meta["strength"] == 3.0
    torch.testing.assert_close(back.scale * back.vector, d.scale * d.vector, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="hook_resid_pre of block 3"):
        export_neuronpedia(direction(2, 0), tmp_path / "last.json", model_id="tiny-llama", model=model)  # 3 layers: 0, 1, 2


def test_easysteer_folder_read_as_easysteer_reads_it_equals_steer(tmp_path):
    model = tiny_model("llama")
    directions = [direction(0, 5), direction(2, 6, scale=0.5)]
    folder = export_easysteer(directions, tmp_path / "es", coeff=-1.5, name="honesty", model=model)
    request = json.loads((folder / "steer_vector_request.json").read_text())
    assert request["algorithm"] == "direct" and request["target_layers"] == [0, 2] and request["scale"] == -1.5
    # EasySteer's direct loader: direction.L tensors of the GGUF, h' = h + scale · vector at those layers
    reader = gguf.GGUFReader(request["steer_vector_local_path"])
    payloads = {int(t.name.split(".")[1]): torch.from_numpy(np.array(t.data, copy=True)) for t in reader.tensors}
    hooks = [(layer, request["scale"] * v, "output") for layer, v in payloads.items() if layer in request["target_layers"]]
    expected = steered(model, directions, -1.5)
    torch.testing.assert_close(run(model, hooks), expected, atol=1e-5, rtol=1e-5)
    for layer in (0, 2):  # the .pt alternative: one tensor per file, for target_layers=[layer]
        pt = torch.load(folder / f"honesty.L{layer}.pt", weights_only=True)
        torch.testing.assert_close(pt, payloads[layer], atol=0, rtol=0)
    back = import_easysteer(folder)
    assert [d.layer for d in back] == [0, 2] and back[0].meta["coeff"] == -1.5


def test_formats_refuse_what_the_tools_cannot_apply(tmp_path):
    not_resid = Direction(torch.ones(32) / 32**0.5, 1.0, 1, "o", "x")
    with pytest.raises(ValueError, match="only kind 'resid'"):
        export_neuronpedia(not_resid, tmp_path / "a.json", model_id="m")
    with pytest.raises(ValueError, match="only kind 'resid'"):
        export_easysteer([not_resid], tmp_path / "b")
    with pytest.raises(ValueError, match="coeff=nan"):
        export_easysteer([direction(1, 0)], tmp_path / "c", coeff=float("nan"))
    (tmp_path / "other.json").write_text(json.dumps({"hookType": "hook_resid_post", "layerNumber": 3, "vector": [1.0]}))
    with pytest.raises(ValueError, match="only hook_resid_pre"):
        import_neuronpedia(tmp_path / "other.json")


# (context, continuation) pairs split at a space, where the byte tokenizer's merges never cross, so the
# tokens of context + continuation are the context's followed by the continuation's
REQUESTS = [("The quick brown", " fox"), ("jumps over the", " lazy dog."), ("Is it good? Yes or No:", " Yes")]


def steered_loglikelihoods(model, plan, coeff):
    """log P(continuation | context) summed over its tokens, and whether it is the greedy choice, by hand under steer()."""
    tokenizer, results = model.tokenizer, []
    for context, continuation in REQUESTS:
        ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
        cont = tokenizer(continuation, add_special_tokens=False)["input_ids"]
        with torch.no_grad(), steering.applied(model, plan, coeff):
            logits = sl.unwrap(model)(torch.tensor([ctx + cont])).logits[0].float()
        logprobs = torch.log_softmax(logits[len(ctx) - 1 : -1], dim=-1)
        target = torch.tensor(cont)
        results.append((float(logprobs[torch.arange(len(cont)), target].sum()), bool((logprobs.argmax(-1) == target).all())))
    return results


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_lm_eval_steered_model_reads_the_file_and_scores_as_steer_does(tmp_path, family):
    hf_steered = pytest.importorskip("lm_eval.models.hf_steered", reason="lm_eval is not installed (pip install --no-deps lm_eval)")
    from lm_eval.api.instance import Instance

    model = tiny_model(family)
    other = "down" if family == "llama" else "mlp"
    plan = steering.Steering(
        [direction(1, 0), direction(1, 1, scale=0.7), Direction(direction(0, 2).vector, 2.0, 0, other, "test2")], weights=[1.0, -0.5, 1.0]
    )
    path = steering.export_lm_eval(plan, tmp_path / "steer.pt", model=model, coeff=2.5)
    lm = hf_steered.SteeredModel(
        pretrained=saved_folder(model, tmp_path / "model"), steer_path=str(path), device="cpu", batch_size=1, dtype="float32"
    )
    requests = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(REQUESTS)]
    got = lm.loglikelihood(requests, disable_tqdm=True)
    expected = steered_loglikelihoods(model, plan, 2.5)
    np.testing.assert_allclose([g[0] for g in got], [e[0] for e in expected], rtol=1e-5, atol=1e-4)
    assert [bool(g[1]) for g in got] == [e[1] for e in expected]
    # the steering mattered: unsteered scores differ clearly
    base = steered_loglikelihoods(model, plan, 0.0)
    assert max(abs(g[0] - b[0]) for g, b in zip(got, base)) > 0.05


def test_lm_eval_export_refuses_what_its_steered_model_cannot_apply(tmp_path):
    model = tiny_model("llama")
    d = direction(1, 0)
    with pytest.raises(ValueError, match="mode 'clamp'"):
        steering.export_lm_eval(steering.Steering([d], modes=["clamp"]), tmp_path / "a.pt", model=model)
    with pytest.raises(ValueError, match="every position"):
        steering.export_lm_eval(steering.Steering([d], positions="prompt"), tmp_path / "b.pt", model=model)
    with pytest.raises(ValueError, match="condition"):
        steering.export_lm_eval(steering.Steering([d], condition=steering.Condition(d, 0.0)), tmp_path / "c.pt", model=model)
    with pytest.raises(ValueError, match=r"\.pt or \.pth"):
        steering.export_lm_eval(d, tmp_path / "d.csv", model=model)
    with pytest.raises(ValueError, match="coeff=nan"):
        steering.export_lm_eval(d, tmp_path / "e.pt", model=model, coeff=float("nan"))
    with pytest.raises(ValueError, match="needs model="):
        steering.export_lm_eval(d, tmp_path / "f.pt", model=None)
    assert not list(tmp_path.iterdir())
