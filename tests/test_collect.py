"""probes.collect against independent computations: plain transformers forwards and hooks."""

from __future__ import annotations

import pytest
import torch

import probes
from probes import sublayers as sl
from tests.tiny import FAMILIES, tiny_model

# Texts of different lengths, so batches need padding.
PAIRS = [
    ("I love cheese; let me tell you about the andes", "I hate cheese; let me tell you about the andes"),
    ("Honest: the sky is", "Liar: the sky is"),
    ("You are kind. Today I met a", "You are cruel. Today I met a"),
    ("A truthful note on trains", "A deceitful note on trains"),
    ("Sun", "Moon"),
]


def plain_hidden_states(model, text: str) -> tuple[torch.Tensor, ...]:
    """``output_hidden_states`` of one unpadded text through plain transformers."""
    torch_model = sl.unwrap(model)
    ids = model.tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        return torch_model(**ids, output_hidden_states=True).hidden_states


def hooked_outputs(model, text: str, paths: list[str]) -> dict[str, torch.Tensor]:
    """Each module's output for one unpadded text, recorded by plain forward hooks."""
    torch_model = sl.unwrap(model)
    recorded: dict[str, torch.Tensor] = {}
    handles = [
        torch_model.get_submodule(path).register_forward_hook(
            lambda module, args, output, path=path: recorded.__setitem__(
                path, (output[0] if isinstance(output, tuple) else output).detach().clone()
            )
        )
        for path in paths
    ]
    try:
        with torch.no_grad():
            torch_model(**model.tokenizer(text, return_tensors="pt"))
    finally:
        for handle in handles:
            handle.remove()
    return recorded


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_resid_equals_hidden_states_of_unpadded_forward(family, padding_side):
    model = tiny_model(family, padding_side=padding_side)
    acts = probes.collect(model, PAIRS, layers="all", sublayers="resid", tokens=2, batch_size=4, progress=False)
    last = sl.n_layers(model) - 1
    for pair_index, pair in enumerate(PAIRS):
        for side, text in enumerate(pair):
            hidden = plain_hidden_states(model, text)
            for layer in range(last):  # hidden_states[L + 1] is the output of block L ...
                expected = hidden[layer + 1][0, -2:]
                torch.testing.assert_close(acts[layer, "resid"][pair_index, side], expected, atol=1e-5, rtol=1e-4)
            # ... except the last entry, which transformers takes after the final norm;
            # `resid` stays the block output there, which a hook on the block records.
            block = hooked_outputs(model, text, [f"{sl.family_of(model).layers}.{last}"])
            torch.testing.assert_close(acts[last, "resid"][pair_index, side], next(iter(block.values()))[0, -2:], atol=1e-5, rtol=1e-4)
            assert not torch.allclose(acts[last, "resid"][pair_index, side], hidden[-1][0, -2:], atol=1e-3)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_kind_equals_a_plain_forward_hook(family):
    model = tiny_model(family, padding_side="left")
    kinds = sl.available_kinds(model)
    acts = probes.collect(model, PAIRS, layers=[0, -1], sublayers=kinds, batch_size=3, progress=False)
    family_layout = sl.family_of(model)
    d = sl.config_of(model).hidden_size
    for layer in (0, sl.n_layers(model) - 1):
        block = f"{family_layout.layers}.{layer}"
        paths = {kind: f"{block}.{family_layout.paths[kind]}".rstrip(".") for kind in kinds if kind in family_layout.paths}
        fused_path = f"{block}.{family_layout.fused_qkv}" if family_layout.fused_qkv else None
        for pair_index, pair in enumerate(PAIRS):
            for side, text in enumerate(pair):
                recorded = hooked_outputs(model, text, list(paths.values()) + ([fused_path] if fused_path else []))
                for kind, path in paths.items():
                    torch.testing.assert_close(acts[layer, kind][pair_index, side, 0], recorded[path][0, -1], atol=1e-5, rtol=1e-4)
                if fused_path:
                    fused = recorded[fused_path][0, -1]
                    if family == "gpt2":  # c_attn output is [q | k | v]
                        expected = fused.split(d, dim=-1)
                    else:  # GPT-NeoX: per head [q_h | k_h | v_h], as its attention splits it
                        heads = sl.config_of(model).num_attention_heads
                        expected = [part.reshape(-1) for part in fused.view(heads, 3 * (d // heads)).chunk(3, dim=-1)]
                    for kind, value in zip("qkv", expected):
                        torch.testing.assert_close(acts[layer, kind][pair_index, side, 0], value, atol=1e-5, rtol=1e-4)


def test_batch_size_one_and_seven_give_the_same_activations():
    model = tiny_model("qwen2")
    pairs = PAIRS * 3
    kinds = ("resid", "attn", "q", "down")
    one = probes.collect(model, pairs, layers="all", sublayers=kinds, tokens=2, batch_size=1, progress=False)
    seven = probes.collect(model, pairs, layers="all", sublayers=kinds, tokens=2, batch_size=7, progress=False)
    assert one.keys() == seven.keys()
    for key in one:
        torch.testing.assert_close(one[key], seven[key], atol=1e-5, rtol=1e-4)


def test_left_and_right_padding_agree_on_absolute_position_model():
    left = probes.collect(tiny_model("gpt2", "left"), PAIRS, layers="all", sublayers=("resid", "k"), progress=False)
    right = probes.collect(tiny_model("gpt2", "right"), PAIRS, layers="all", sublayers=("resid", "k"), progress=False)
    for key in left:
        torch.testing.assert_close(left[key], right[key], atol=1e-5, rtol=1e-4)


def test_activations_views_layers_kinds_and_shapes():
    model = tiny_model("llama")
    acts = probes.collect(model, PAIRS, layers=[-1, 0], sublayers=("up", "resid"), tokens=3, progress=False)
    assert acts.layers == [0, 2]
    assert acts.kinds == ("up", "resid")
    assert acts[-1, "up"].shape == (len(PAIRS), 2, 3, 48)
    assert acts[2, "resid"].dtype == torch.float32 and acts[2, "resid"].device.type == "cpu"
    torch.testing.assert_close(acts.diff[0, "up"], acts[0, "up"][:, 0] - acts[0, "up"][:, 1])
    torch.testing.assert_close(acts.positive[0, "resid"], acts[0, "resid"][:, 0])
    torch.testing.assert_close(acts.negative[0, "resid"], acts[0, "resid"][:, 1])
    assert "5 pairs" in repr(acts) and "up[48]" in repr(acts)
    with pytest.raises(KeyError, match="Captured layers"):
        acts[1, "up"]


def test_activations_save_and_load_round_trip(tmp_path):
    model = tiny_model("gpt2")
    acts = probes.collect(model, PAIRS, layers="all", sublayers=("v", "mlp"), progress=False)
    loaded = probes.Activations.load(acts.save(tmp_path / "acts.safetensors"))
    assert loaded.pairs == [probes.ContrastivePair(*p) for p in PAIRS]
    assert loaded.n_layers == 3 and set(loaded.keys()) == set(acts.keys())
    for key in acts:
        assert torch.equal(loaded[key], acts[key])
    assert torch.equal(loaded[-1, "v"], acts[2, "v"])


def test_explicit_module_path_template():
    model = tiny_model("llama")
    template = "model.layers.{layer}.mlp.act_fn"
    acts = probes.collect(model, PAIRS[:2], layers=[1], sublayers=[template], progress=False)
    recorded = hooked_outputs(model, PAIRS[0][1], ["model.layers.1.mlp.act_fn"])
    torch.testing.assert_close(acts[1, template][0, 1, 0], recorded["model.layers.1.mlp.act_fn"][0, -1], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m: probes.collect(m, [], layers=0), "No pairs"),
        (lambda m: probes.collect(m, [("same text", "same text")], layers=0), "identical"),
        (lambda m: probes.collect(m, PAIRS, layers=[3]), "out of range"),
        (lambda m: probes.collect(m, PAIRS, layers=[-4]), "out of range"),
        (lambda m: probes.collect(m, PAIRS, layers=0, sublayers=("resid", "banana")), "unknown sublayer kind"),
        (lambda m: probes.collect(m, PAIRS, layers=0, tokens=4), "fewer than tokens=4"),
        (lambda m: probes.collect(m, ["just one string"], layers=0), "pair 0"),
    ],
)
def test_bad_input_raises_clear_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call(tiny_model("llama"))


def test_kind_the_architecture_lacks_lists_the_kinds_it_has():
    with pytest.raises(ValueError, match=r"'gate' is a kind the gpt2 architecture lacks.*resid, attn, mlp, q, k, v, o, up, down"):
        probes.collect(tiny_model("gpt2"), PAIRS, layers=0, sublayers="gate")


def test_nan_activations_are_reported_with_layer_and_kind():
    model = tiny_model("llama")
    with torch.no_grad():
        sl.unwrap(model).model.layers[1].mlp.down_proj.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="Non-finite.*layer 1, kind 'down'"):
        probes.collect(model, PAIRS, layers=[0, 1], sublayers="down", progress=False)


def test_streamed_capture_equals_in_memory_and_resumes_without_recomputing(tmp_path, monkeypatch):
    import importlib

    collect_module = importlib.import_module("probes.collect")
    model = tiny_model("gpt2")
    pairs = PAIRS * 3
    options = dict(layers="all", sublayers=("resid", "q", "up"), tokens=2, batch_size=4, progress=False)
    in_memory = probes.collect(model, pairs, **options)

    original, calls = collect_module.hook_batch, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the user stops the capture during the third batch
        return original(*args, **kwargs)

    monkeypatch.setattr(collect_module, "hook_batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        probes.collect(model, pairs, out=tmp_path / "capture", **options)
    assert len(list((tmp_path / "capture").glob("shard_*.safetensors"))) == 2
    with pytest.raises(FileNotFoundError, match="unfinished"):
        probes.shards.open_activations(tmp_path / "capture")

    calls.clear()
    monkeypatch.setattr(collect_module, "hook_batch", lambda *a, **k: calls.append(1) or original(*a, **k))
    streamed = probes.collect(model, pairs, out=tmp_path / "capture", **options)
    n_batches = -(-2 * len(pairs) // 4)
    assert len(calls) == n_batches - 2  # finished shards are not recomputed
    assert set(streamed.keys()) == set(in_memory.keys()) and streamed.n_pairs == len(pairs)
    for key in in_memory:
        assert torch.equal(streamed[key], in_memory[key])
    reopened = probes.shards.open_activations(tmp_path / "capture")
    assert torch.equal(reopened[-1, "up"], in_memory[2, "up"]) and "15 pairs" in repr(reopened)
    with pytest.raises(ValueError, match="different capture"):
        probes.collect(model, pairs, out=tmp_path / "capture", **(options | {"tokens": 1}))
