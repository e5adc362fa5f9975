"""Shared fixtures: tiny random models of each supported family, an offline byte tokenizer,
and the embedded SmolLM2 model for integration tests (marked slow)."""

from __future__ import annotations

import pytest

from tests.tiny import FAMILIES, tiny_model


@pytest.fixture(autouse=True)
def isolated_svd_cache(monkeypatch, tmp_path_factory):
    """Weight-SVD caches go to a per-session temp folder (the embedded model stays shared)."""
    import probes.basis

    monkeypatch.setattr(probes.basis, "svd_cache_dir", lambda: tmp_path_factory.getbasetemp() / "svd")
    yield


@pytest.fixture(params=FAMILIES)
def family_model(request):
    return tiny_model(request.param)


@pytest.fixture(scope="session")
def smollm():
    import probes

    return probes.load_model()
