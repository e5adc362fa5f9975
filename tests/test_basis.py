"""weight_svd / project against torch.linalg.svd of the weights, read independently."""

from __future__ import annotations

import pytest
import torch

import probes
import probes.basis
from probes import sublayers as sl
from tests.tiny import tiny_model


def independent_weight(model, layer: int, kind: str) -> torch.Tensor:
    """The [d_out, d_in] weight, read straight off the module by family (no steerscope code)."""
    torch_model = sl.unwrap(model)
    name = type(torch_model).__name__
    if name.startswith("GPT2"):
        block = torch_model.transformer.h[layer]
        d = block.attn.c_proj.weight.shape[0]
        fused = block.attn.c_attn.weight.T  # Conv1D stores [d_in, d_out]
        modules = {
            "o": block.attn.c_proj.weight.T,
            "up": block.mlp.c_fc.weight.T,
            "down": block.mlp.c_proj.weight.T,
            "q": fused[:d],
            "k": fused[d : 2 * d],
            "v": fused[2 * d :],
        }
        return modules[kind]
    if name.startswith("GPTNeoX"):
        attention = torch_model.gpt_neox.layers[layer].attention
        heads = torch_model.config.num_attention_heads
        w = attention.query_key_value.weight  # rows laid out per head as [q_h | k_h | v_h]
        per_head = w.view(heads, 3, -1, w.shape[-1])
        return per_head[:, "qkv".index(kind)].reshape(-1, w.shape[-1])
    block = torch_model.model.layers[layer]
    return {
        "q": block.self_attn.q_proj,
        "k": block.self_attn.k_proj,
        "v": block.self_attn.v_proj,
        "o": block.self_attn.o_proj,
        "gate": block.mlp.gate_proj,
        "up": block.mlp.up_proj,
        "down": block.mlp.down_proj,
    }[kind].weight


def aligned(reference: torch.Tensor, candidate: torch.Tensor) -> torch.Tensor:
    """Flip candidate columns to the reference's sign (singular vectors are defined up to sign)."""
    signs = torch.sign((reference * candidate).sum(0))
    return candidate * signs


@pytest.mark.parametrize(
    "family, kind",
    [
        ("llama", "q"),
        ("llama", "gate"),
        ("llama", "down"),
        ("gpt2", "up"),
        ("gpt2", "o"),
        ("gpt2", "k"),
        ("gpt_neox", "v"),
        ("gpt_neox", "q"),
        ("qwen3", "k"),
    ],
)
def test_weight_svd_reconstructs_the_weight_and_matches_linalg_svd(family, kind):
    model = tiny_model(family)
    weight = independent_weight(model, 1, kind).detach()
    basis = probes.weight_svd(model, 1, kind)
    torch.testing.assert_close(basis.reconstruct(), weight, atol=1e-5, rtol=1e-4)
    U, S, Vh = torch.linalg.svd(weight, full_matrices=False)
    torch.testing.assert_close(basis.S, S, atol=1e-5, rtol=1e-5)
    assert torch.all(basis.S[:-1] >= basis.S[1:])
    hs = torch.randn(6, weight.shape[0])
    # singular vectors are defined up to sign: match each column's sign to linalg's, then compare
    torch.testing.assert_close(probes.project(hs, basis), hs @ aligned(basis.U, U), atol=1e-4, rtol=1e-4)
    x = torch.randn(6, weight.shape[1])
    torch.testing.assert_close(probes.project(x, basis, side="in", rank=3).abs(), (x @ Vh.T[:, :3]).abs(), atol=1e-4, rtol=1e-4)


def test_project_of_captured_states_equals_hs_times_u():
    model = tiny_model("llama")
    acts = probes.collect(model, [("An honest view", "A dishonest view")], layers=[2], sublayers="up", progress=False)
    U = torch.linalg.svd(independent_weight(model, 2, "up").detach(), full_matrices=False).U
    coords = probes.project(acts[2, "up"], probes.weight_svd(model, 2, "up"))
    assert coords.shape == (1, 2, 1, U.shape[1])
    torch.testing.assert_close(coords.abs(), (acts[2, "up"] @ U).abs(), atol=1e-4, rtol=1e-4)


def test_block_output_kinds_use_the_projection_that_writes_them():
    model = tiny_model("llama")
    torch.testing.assert_close(
        probes.weight_svd(model, 0, "mlp").reconstruct(), independent_weight(model, 0, "down").detach(), atol=1e-5, rtol=1e-4
    )
    torch.testing.assert_close(
        probes.weight_svd(model, 0, "attn").reconstruct(), independent_weight(model, 0, "o").detach(), atol=1e-5, rtol=1e-4
    )


def test_top_rank_keeps_the_largest_components():
    model = tiny_model("llama")
    full = probes.weight_svd(model, 0, "gate")
    top = probes.weight_svd(model, 0, "gate", rank=5)
    assert top.U.shape == (48, 5) and top.V.shape == (32, 5) and top.S.shape == (5,)
    torch.testing.assert_close(top.S, full.S[:5])


def test_cache_is_reused_from_disk_and_invalidated_by_a_weight_change(monkeypatch):
    model = tiny_model("llama")
    calls = []
    original = probes.basis.compute_svd
    monkeypatch.setattr(probes.basis, "compute_svd", lambda *a, **k: calls.append(1) or original(*a, **k))
    first = probes.weight_svd(model, 1, "v")
    probes.basis.memory_cache.clear()
    second = probes.weight_svd(model, 1, "v")  # from disk
    assert len(calls) == 1 and torch.equal(first.U, second.U)
    with torch.no_grad():
        sl.unwrap(model).model.layers[1].self_attn.v_proj.weight.mul_(2)
    third = probes.weight_svd(model, 1, "v")
    assert len(calls) == 2
    torch.testing.assert_close(third.S, 2 * first.S)


def test_lowrank_svd_stays_within_one_percent_on_a_decaying_spectrum():
    torch.manual_seed(0)
    U, _ = torch.linalg.qr(torch.randn(400, 200))
    V, _ = torch.linalg.qr(torch.randn(300, 200))
    S = 10 * torch.exp(-torch.arange(200) / 40.0)
    weight = (U * S) @ V.T + 0.01 * torch.randn(400, 300)
    _, approx, _ = probes.basis.compute_svd(weight, rank=16, lowrank=True)
    exact = torch.linalg.svdvals(weight)[:16]
    assert ((approx - exact).abs() / exact).max() < 0.01
    _, default, _ = torch.svd_lowrank(weight, q=16)
    assert ((default - exact).abs() / exact).max() > 0.01  # why the oversampling is needed


def test_bad_basis_requests_raise_clear_errors():
    model = tiny_model("llama")
    with pytest.raises(ValueError, match="no weight of its own.*'o'.*'down'"):
        probes.weight_svd(model, 0, "resid")
    with pytest.raises(ValueError, match="rank=33 is out of range"):
        probes.weight_svd(model, 0, "q", rank=33)
    with pytest.raises(ValueError, match="side='out' and inputs with side='in'"):
        probes.project(torch.randn(2, 32), probes.weight_svd(model, 0, "up"))
