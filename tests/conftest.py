"""Shared fixtures: tiny random models of each supported family, an offline byte tokenizer,
and the embedded SmolLM2 model for integration tests (marked slow).

Every function of the library is shape-checked at run time during the tests: jaxtyping's
import hook (installed before anything imports the packages) wraps them with
`tests.shapecheck.shapes_only`, so a tensor whose shape or dtype contradicts its
``Float[Tensor, "pair side d"]`` annotation fails, with named dimensions agreeing across
each call. Set STEERSCOPE_NO_SHAPE_CHECKS=1 to run without them.
"""

from __future__ import annotations

import os

from jaxtyping import install_import_hook

import tests.shapecheck  # noqa: F401  (the hook looks the checker up as tests.shapecheck.shapes_only)

if not os.environ.get("STEERSCOPE_NO_SHAPE_CHECKS"):
    install_import_hook(["probes", "steering", "analysis"], "tests.shapecheck.shapes_only")

import pytest

from tests.tiny import FAMILIES, tiny_model


@pytest.fixture(autouse=True)
def isolated_svd_cache(monkeypatch, tmp_path_factory):
    """Weight-SVD caches go to a per-session temp folder (the embedded model stays shared)."""
    import probes.basis

    monkeypatch.setattr(probes.basis, "svd_cache_dir", lambda: tmp_path_factory.getbasetemp() / "svd")
    yield


@pytest.fixture(autouse=True)
def fresh_memory_caches():
    """Each test starts with empty in-memory caches (weight SVDs, Fisher gradients), so no test
    passes only because an earlier one filled a cache with the right (or a wrong) answer."""
    import probes.basis
    import steering.directions.fisher

    probes.basis.memory_cache.clear()
    steering.directions.fisher.clear_gradient_cache()
    yield


@pytest.fixture(params=FAMILIES)
def family_model(request):
    return tiny_model(request.param)


@pytest.fixture(scope="session")
def smollm():
    import probes

    return probes.load_model()
