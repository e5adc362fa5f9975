"""The environment the suite runs in is the locked one, and the lock, pyproject.toml and the import
checks of `probes.tracing` agree on what is supported."""

from __future__ import annotations

import os
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from probes import tracing

REPO = Path(__file__).resolve().parent.parent


def locked(lock: str = "requirements.lock") -> dict[str, str]:
    pins = {}
    for line in (REPO / lock).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, pinned = line.partition("==")
            assert pinned, f"{lock}: {line!r} is not a name==version pin"
            pins[canonicalize_name(name)] = pinned.strip()
    return pins


def declared() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    # readers: other tools installed with --no-deps for the format tests (pinned in the lock all the same)
    return [Requirement(r) for r in project["dependencies"] + extras["dev"] + extras["notebooks"] + extras["readers"]]


def test_every_locked_version_is_inside_the_declared_ranges():
    pins = locked()
    for requirement in declared():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is declared in pyproject.toml but not locked: run scripts/lock.sh"
        assert Version(pins[name]) in requirement.specifier, f"{name}=={pins[name]} is outside {requirement}"


@pytest.mark.parametrize("package, supported", [("nnsight", tracing.SUPPORTED), ("transformers", tracing.SUPPORTED_TRANSFORMERS)])
def test_the_import_check_states_the_range_pyproject_declares(package, supported):
    (requirement,) = [r for r in declared() if canonicalize_name(r.name) == package]
    low, high = supported
    assert {(s.operator, s.version) for s in requirement.specifier} == {(">=", low), ("<", high)}
    with pytest.raises(ImportError, match=rf"{package} >={low},<{high}.*pip install '{package}>={low},<{high}'"):
        tracing.check_version("0.1.0", package=package, supported=supported)
    assert tracing.check_version(low + ".3", package=package, supported=supported) == low + ".3"


@pytest.mark.skipif(
    bool(os.environ.get("STEERSCOPE_UNLOCKED")), reason="scripts/check_latest.sh runs the newest allowed versions on purpose"
)
def test_the_suite_runs_in_the_locked_environment():
    """CI builds its environment from requirements.lock: anything else installed there would hide a missing step."""
    differ = {}
    for name, pinned in locked().items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            installed = "missing"
        if installed.split("+")[0] != pinned:
            differ[name] = (pinned, installed)
    assert not differ, f"(locked, installed) differ: {differ}; run bash scripts/setup.sh"


def test_the_ndif_server_is_locked_with_the_clients_nnsight_transformers_and_torch():
    """A local NDIF (scripts/setup_ndif.sh) rebuilds traces with the nnsight this suite compares it to."""
    client, server = locked(), locked("requirements-ndif.lock")
    assert server["ndif"] == "0.1.2"
    shared = ["torch", "nnsight", "transformers", "accelerate", "peft", "numpy", "safetensors", "tokenizers", "huggingface-hub"]
    differ = {name: (client[name], server[name]) for name in shared if client[name] != server[name].split("+")[0]}
    assert not differ, f"(client, server) differ: {differ}; rebuild the server's lock: LOCK=latest bash scripts/setup_ndif.sh"
