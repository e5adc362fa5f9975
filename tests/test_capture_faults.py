"""Capture that survives notebook habits and damaged files: repeated collects, killed or
corrupted streamed captures, mixed weights, truncated manifests."""

from __future__ import annotations

import json

import pytest
import torch

import probes
from probes import shards
from tests.tiny import tiny_model

PAIRS = [
    ("I love cheese; let me tell you about the andes", "I hate cheese; let me tell you about the andes"),
    ("Honest: the sky is", "Liar: the sky is"),
    ("You are kind. Today I met a", "You are cruel. Today I met a"),
    ("A truthful note on trains", "A deceitful note on trains"),
    ("Sun", "Moon"),
]


def assert_same(a, b):
    assert set(a.keys()) == set(b.keys())
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=1e-5)


def test_a_second_collect_that_adds_earlier_modules_works_and_matches_a_fresh_model():
    model = tiny_model("llama")
    first = probes.collect(model, PAIRS, layers="all", sublayers="resid", progress=False)
    second = probes.collect(model, PAIRS, layers="all", sublayers=("resid", "o"), progress=False)
    fresh = probes.collect(tiny_model("llama"), PAIRS, layers="all", sublayers=("resid", "o"), progress=False)
    assert_same(second, fresh)
    torch.testing.assert_close(first[1, "resid"], second[1, "resid"])


def test_collect_after_a_data_aware_adapter_reads_modules_in_forward_order():
    model = tiny_model("llama")
    adapter = steering_attach_data(model)
    acts = probes.collect(model, PAIRS, layers="all", sublayers=("q", "o", "up", "down", "resid"), progress=False)
    adapter.detach()
    assert_same(acts, probes.collect(tiny_model("llama"), PAIRS, layers="all", sublayers=("q", "o", "up", "down", "resid"), progress=False))


def steering_attach_data(model):
    import steering

    return steering.attach_innerpissa(model, layers=[1], kinds=("down",), rank=2, select="data", pairs=PAIRS)


def streamed(model, folder, **options):
    return probes.collect(model, PAIRS, layers="all", sublayers=("resid", "down"), batch_size=2, progress=False, out=folder, **options)


def test_resuming_a_capture_with_other_weights_is_refused(tmp_path):
    streamed(tiny_model("llama", seed=0), tmp_path)
    shards.shard_path(tmp_path, 2).unlink()  # as if killed before the last batch
    with pytest.raises(ValueError, match="weights"):
        streamed(tiny_model("llama", seed=1), tmp_path)


def test_a_truncated_shard_is_recomputed_on_rerun_and_the_capture_equals_an_uninterrupted_one(tmp_path):
    model = tiny_model("llama")
    streamed(model, tmp_path)
    shard = shards.shard_path(tmp_path, 1)
    shard.write_bytes(shard.read_bytes()[:-40])  # cut off mid-write by a crash outside steerscope
    with pytest.raises(ValueError, match="shard_00001"):
        shards.open_activations(tmp_path)[0, "resid"]
    with pytest.warns(UserWarning, match="shard_00001.*Recomputing"):
        resumed = streamed(model, tmp_path)
    assert_same(resumed, probes.collect(model, PAIRS, layers="all", sublayers=("resid", "down"), progress=False))


def test_garbled_shard_bytes_are_detected_by_their_digest(tmp_path):
    model = tiny_model("llama")
    streamed(model, tmp_path)
    shard = shards.shard_path(tmp_path, 0)
    data = bytearray(shard.read_bytes())
    data[-9] ^= 0xFF  # one flipped byte inside the tensor data; the file still parses
    shard.write_bytes(bytes(data))
    acts = shards.open_activations(tmp_path)
    with pytest.raises(ValueError, match="shard_00000.*digest"):
        for key in acts:  # whichever tensor holds the byte
            acts[key]
    with pytest.warns(UserWarning, match="Recomputing"):
        assert_same(streamed(model, tmp_path), probes.collect(model, PAIRS, layers="all", sublayers=("resid", "down"), progress=False))


def test_rows_no_shard_covers_are_an_error_not_uninitialised_memory(tmp_path):
    streamed(tiny_model("llama"), tmp_path)
    manifest = json.loads((tmp_path / shards.MANIFEST).read_text())
    manifest["n_pairs"] += 1
    manifest["pairs"].append(["x", "y"])
    (tmp_path / shards.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="no shard holds texts \\[10, 11\\]"):
        shards.open_activations(tmp_path)[0, "resid"]


def test_a_truncated_manifest_names_the_file(tmp_path):
    streamed(tiny_model("llama"), tmp_path)
    manifest = tmp_path / shards.MANIFEST
    manifest.write_text(manifest.read_text()[:50])
    with pytest.raises(ValueError, match="manifest.json is damaged"):
        shards.open_activations(tmp_path)
    with pytest.raises(ValueError, match="manifest.json is damaged"):
        streamed(tiny_model("llama"), tmp_path)
