"""The weight-SVD cache: damaged or stale files are recomputed, never used; an unwritable cache
only costs time; the key follows the weight without hashing all of it."""

from __future__ import annotations

import warnings

import pytest
import torch
from safetensors.torch import save_file

import probes
import probes.basis as basis
from probes import sublayers as sl
from tests.tiny import tiny_model


def reference(model, layer, kind):
    weight = sl.weight_matrix(model, sl.resolve(model, layer, kind)).float()
    return torch.linalg.svdvals(weight)


def cached_files(folder):
    return sorted(folder.glob("*.safetensors"))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setattr(basis, "svd_cache_dir", lambda: tmp_path / "svd")
    basis.memory_cache.clear()
    yield tmp_path / "svd"
    basis.memory_cache.clear()


def test_a_corrupt_cache_file_is_recomputed_and_then_works(cache):
    model = tiny_model("llama")
    probes.weight_svd(model, 1, "down")
    (file,) = cached_files(cache)
    file.write_bytes(file.read_bytes()[:100])
    basis.memory_cache.clear()
    with pytest.warns(UserWarning, match="unreadable"):
        svd = probes.weight_svd(model, 1, "down")
    torch.testing.assert_close(svd.S, reference(model, 1, "down"), atol=1e-5, rtol=1e-5)
    basis.memory_cache.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rewritten file reads back cleanly
        probes.weight_svd(model, 1, "down")


@pytest.mark.parametrize("wrong", ["zero S", "another weight"])
def test_a_valid_looking_wrong_cache_file_is_not_used(cache, wrong):
    model = tiny_model("llama")
    svd = probes.weight_svd(model, 1, "down")
    (file,) = cached_files(cache)
    if wrong == "zero S":
        factors = {"U": svd.U, "S": torch.zeros_like(svd.S), "V": svd.V}
    else:
        other = probes.weight_svd(tiny_model("llama", seed=3), 1, "down")
        factors = {"U": other.U.contiguous(), "S": other.S.contiguous(), "V": other.V.contiguous()}
    save_file(factors, str(file))
    basis.memory_cache.clear()
    with pytest.warns(UserWarning, match="does not fit its weight"):
        again = probes.weight_svd(model, 1, "down")
    torch.testing.assert_close(again.S, reference(model, 1, "down"), atol=1e-5, rtol=1e-5)


def test_an_unwritable_cache_folder_warns_once_and_still_computes(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would go")  # even root cannot create a folder under it
    monkeypatch.setattr(basis, "svd_cache_dir", lambda: blocker / "svd")
    basis.memory_cache.clear()
    model = tiny_model("llama")
    with pytest.warns(UserWarning, match="Cannot write the SVD cache") as caught:
        svd = probes.weight_svd(model, 1, "down")
        probes.weight_svd(model, 2, "up")
        adapter = __import__("steering").attach_innerpissa(model, layers=[0], kinds=("o",), rank=2)
    adapter.detach()
    assert sum("Cannot write" in str(w.message) for w in caught) == 1
    torch.testing.assert_close(svd.S, reference(model, 1, "down"), atol=1e-5, rtol=1e-5)


def test_the_cache_key_changes_with_the_weight_and_the_module_only(cache):
    model = tiny_model("llama")
    target = sl.resolve(model, 1, "down")
    weight = sl.weight_matrix(model, target)
    key = basis.weight_key(model, target, weight, "full")
    assert key == basis.weight_key(model, target, weight.clone(), "full")
    assert key != basis.weight_key(model, sl.resolve(model, 2, "down"), weight, "full")
    assert key != basis.weight_key(model, target, weight, "lowrank8")
    tuned = weight + 1e-3 * torch.randn(weight.shape, generator=torch.Generator().manual_seed(0))  # a fine-tune moves every value
    assert key != basis.weight_key(model, target, tuned, "full")
    fused = tiny_model("gpt2")  # q, k and v share one fused weight: their keys differ by the slice
    q, k = sl.resolve(fused, 0, "q"), sl.resolve(fused, 0, "k")
    w = sl.weight_matrix(fused, q)
    assert basis.weight_key(fused, q, w, "full") != basis.weight_key(fused, k, w, "full")


def test_a_changed_weight_never_hits_the_old_entry(cache):
    model = tiny_model("llama")
    before = probes.weight_svd(model, 1, "down").S.clone()
    with torch.no_grad():
        sl.get_module(model, "model.layers.1.mlp.down_proj").weight.mul_(2.0)
    after = probes.weight_svd(model, 1, "down").S
    torch.testing.assert_close(after, 2 * before, atol=1e-5, rtol=1e-5)


def test_fingerprints_of_large_tensors_sample_inside_them():
    from probes.fingerprint import sample_indices, tensor_fingerprint

    big = torch.zeros(28_311_552, dtype=torch.uint8)  # an embedding matrix's size: float32 indices overshoot it
    assert int(sample_indices(big.numel()).max()) == big.numel() - 1
    before = tensor_fingerprint(big)
    big[-1] = 1  # the last value is sampled
    assert tensor_fingerprint(big) != before
