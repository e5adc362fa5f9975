"""Batched computations equal their one-at-a-time versions: directions for many layers, many weight SVDs."""

from __future__ import annotations

import pytest
import torch

import probes
import probes.basis as basis
from probes import sublayers as sl
from steering import directions
from tests.test_capture_faults import PAIRS
from tests.tiny import tiny_model


@pytest.mark.parametrize("method", ["mean_diff", "pca_diff", "logistic"])
def test_directions_for_every_layer_at_once_equal_one_at_a_time(method):
    model = tiny_model("llama")
    acts = probes.collect(model, PAIRS, layers="all", sublayers=("resid", "down", "gate"), tokens=2, progress=False)
    batched = directions.compute_many(method, acts)
    assert [(d.layer, d.kind) for d in batched] == list(acts.keys())
    for found in batched:
        alone = directions.compute(method, acts, found.layer, found.kind)
        torch.testing.assert_close(found.vector, alone.vector, atol=1e-5, rtol=1e-4)
        assert found.scale == pytest.approx(alone.scale) and found.meta["vote_share"] == pytest.approx(alone.meta["vote_share"])


def test_weight_svds_in_batches_equal_each_svd_and_fill_the_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(basis, "svd_cache_dir", lambda: tmp_path / "svd")
    basis.memory_cache.clear()
    model = tiny_model("gpt2")  # fused q/k/v slices too
    keys = [(layer, kind) for layer in range(3) for kind in ("q", "k", "o", "up", "down")]
    found = probes.basis.weight_svds(model, keys)
    for (layer, kind), svd in found.items():
        weight = sl.weight_matrix(model, sl.resolve(model, layer, kind)).float()
        torch.testing.assert_close(svd.S, torch.linalg.svdvals(weight), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(svd.reconstruct(), weight, atol=1e-5, rtol=1e-4)
        assert (svd.layer, svd.kind) == (layer, kind)
    assert len(list((tmp_path / "svd").glob("*.safetensors"))) == len(keys)
    basis.memory_cache.clear()
    again = probes.basis.weight_svds(model, keys)  # from the disk cache, validated
    assert all(torch.equal(again[key].S, found[key].S) for key in keys)
