"""remote=True: collect, steer and dose-response hand their traces to nnsight's remote execution, checked twice.

Each remote test runs twice (`remote_setup`):

- against the stand-in, `tests.ndif_double`: nnsight's own RemoteBackend with only
  its network hop replaced, running each serialized request the way the server
  would (steerscope unimportable, first on a meta-device twin so that any copy to
  the CPU inside the block fails, then on a real twin whose saves come back);
- against a real NDIF on this machine (ndif 0.1.2 from PyPI, started once for the
  module by `steerscope ndif up` on loopback ports, CPU model actors, float32):
  nnsight's own client over HTTP and the websocket, NDIF's queue, controller,
  model deployment and object store. It needs the NDIF environment
  (`bash scripts/setup_ndif.sh`, which setup.sh runs) and redis-server; without
  them those cases skip and say why (pytest -ra).

Results are compared with the same functions run locally, which use plain forward
hooks for steering.
"""

from __future__ import annotations

import subprocess
import warnings
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import nnsight
import nnsight.intervention.backends.remote as nnsight_remote
import nnsight.modeling.huggingface as nnsight_hf
import psutil
import pytest
import torch

import analysis
import probes
from probes import ndif_versions
from probes import sublayers as sl
from steering import Direction, calibrate, steer
from steering.adapters.innerpissa import attach_innerpissa
from steering.adapters.lora import attach_lora
from steering.directions.fisher import text_gradients
from steerscope import cli, ndif_local
from tests.ndif_double import ndif_double, recording_backend, server_twins
from tests.tiny import saved_folder, tiny_model

REPO_ID = "steerscope-tests/tiny"
PAIRS = [
    ("I always tell the truth.", "I often tell lies."),
    ("Honest answers only.", "Deceive them all."),
    ("Say what is so.", "Say what sells."),
]


SERVERS = ("stand-in", "ndif")
# Redis's pub/sub limit for the real NDIF here: results over min(soft, hard/2) = 64 KiB go through its object
# store instead of the websocket (stock Redis: 8 MiB), so both routes are exercised by small models.
SMALL_PUBSUB = "256kb 64kb 60"


@dataclass
class RemoteSetup:
    """A client model loaded with remote=True, the same model local, the requests sent, and how the server names it."""

    client: Any
    local: Any
    requests: list
    repo_id: str
    server: str

    def __iter__(self):
        return iter((self.client, self.local, self.requests))


@pytest.fixture(scope="module")
def ndif_server(tmp_path_factory):
    """A real NDIF (Redis, moto, Ray with NDIF's controller, NDIF's API) on loopback ports for this module.

    Started and stopped through the CLI (`steerscope ndif up|down`); stopping must end every process it
    started, by id, and leave another Redis on the machine running.
    """
    missing = ndif_local.missing_requirements()
    if missing:
        pytest.skip("the real-NDIF tier needs " + "; ".join(missing))
    home = tmp_path_factory.mktemp("ndif")
    decoy_port = ndif_local.free_port()
    decoy = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(decoy_port), "--save", ""],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        while not ndif_local.port_open(decoy_port):  # listening before NDIF picks its free ports
            assert decoy.poll() is None, "the decoy redis-server did not start"
        assert cli.main(["ndif", "up", "--home", str(home), "--device", "cpu", "--redis-pubsub-limit", SMALL_PUBSUB]) == 0
        server = ndif_local.LocalNDIF.load(home)
        yield server
        family = [p for service in server.services for p in ndif_local.members(service)]  # actors, client servers too
        assert len(family) > 20
        assert cli.main(["ndif", "down", "--home", str(home)]) == 0
        assert not [p.pid for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert not [m for service in server.services for m in ndif_local.members(service)]  # nothing left in their sessions
        assert not Path(server.ray_dir).exists()
        assert decoy.poll() is None  # stopped by id, not by name: the other redis-server still runs
    finally:
        if (home / "state.json").exists():
            ndif_local.down(home)
        decoy.terminate()
        decoy.wait(10)


@pytest.fixture(scope="module")
def ndif_folders(tmp_path_factory):
    """The tiny models saved once for the real NDIF (it deploys a model per folder on the first request)."""
    root = tmp_path_factory.mktemp("ndif-models")
    return {family: saved_folder(tiny_model(family), root / family) for family in ("llama", "gpt2")}


@pytest.fixture(
    params=[
        pytest.param((family, server), marks=[pytest.mark.ndif] if server == "ndif" else [])
        for server in SERVERS
        for family in ("llama", "gpt2")
    ],
    ids="-".join,
)
def remote_setup(request, tmp_path, monkeypatch):
    """The same remote test against the in-process stand-in and against a real NDIF on this machine."""
    family, server = request.param
    local = tiny_model(family)
    monkeypatch.setattr(nnsight.CONFIG.API, "APIKEY", "key-from-nnsight-config")
    monkeypatch.setattr(ndif_versions, "checked", {})
    requests: list = []
    if server == "stand-in":
        folder = str(tmp_path / "tiny")
        saved_folder(local, folder)
        repo_id = REPO_ID
        monkeypatch.setitem(nnsight_hf._ID_CACHE, folder, REPO_ID)  # the Hub's canonical id, offline
        monkeypatch.setattr(nnsight_remote, "RemoteBackend", ndif_double(server_twins(local), requests))
        same_nnsight = {"packages": {"nnsight": version("nnsight")}}  # the stand-in runs this process's nnsight
        monkeypatch.setattr(ndif_versions, "server_env", lambda host: same_nnsight)
    else:
        ndif = request.getfixturevalue("ndif_server")
        folder = repo_id = str(request.getfixturevalue("ndif_folders")[family])
        monkeypatch.setattr(nnsight.CONFIG.API, "HOST", ndif.api_url)
        monkeypatch.setattr(nnsight_remote, "RemoteBackend", recording_backend(requests))
    client = probes.load_model(folder, remote=True)
    return RemoteSetup(client, local, requests, repo_id, server)


def test_load_model_remote_keeps_weights_off_this_machine(remote_setup):
    client, local, _ = remote_setup
    assert {p.device.type for p in sl.unwrap(client).parameters()} == {"meta"}
    assert sl.n_layers(client) == sl.n_layers(local)
    assert client.tokenizer.padding_side == "left" and client.tokenizer.pad_token is not None


def test_remote_collect_equals_local_collect_and_sends_one_request_per_batch(remote_setup):
    client, local, requests = remote_setup
    kinds = ("resid", "o", "q")
    remote = probes.collect(client, PAIRS, layers=[0, 2], sublayers=kinds, batch_size=4, progress=False)
    here = probes.collect(local, PAIRS, layers=[0, 2], sublayers=kinds, batch_size=4, progress=False)
    for key in here:
        torch.testing.assert_close(remote[key], here[key], rtol=1e-5, atol=1e-5)
    assert len(requests) == 2  # 6 texts in batches of 4
    for request in requests:
        assert f'"repo_id": "{remote_setup.repo_id}"' in request.model_key and request.model_key.startswith("nnsight.modeling")
        assert request.api_key == "key-from-nnsight-config"  # nnsight's config; steerscope passes none
        assert request.host == nnsight.CONFIG.API.HOST
        assert request.edits == 0
        assert request.via_object_store is (False if remote_setup.server == "ndif" else None)  # small results: the websocket


def test_remote_dose_response_equals_hook_steering(remote_setup):
    client, local, requests = remote_setup
    torch.manual_seed(1)
    d = sl.config_of(local).hidden_size
    direction = Direction(torch.nn.functional.normalize(torch.randn(d), dim=0), 3.0, 1, "resid", "test")
    items = analysis.dilemmas()[:3]
    neutral = ["The river runs past the mill.", "Bread rises in a warm kitchen."]
    kwargs = dict(coeffs=(-1.0, 0.0, 2.0), batch_size=4, neutral_texts=neutral)
    remote = analysis.dose_response(client, direction, items, **kwargs)
    here = analysis.dose_response(local, direction, items, **kwargs)
    assert here.groupby("coeff")["logratio"].mean().nunique() == 3  # the steering does move the scores
    cols = ["logratio", "pmass", "readout", "nll"]
    torch.testing.assert_close(torch.tensor(remote[cols].to_numpy()), torch.tensor(here[cols].to_numpy()), rtol=1e-4, atol=1e-4)
    steered = [r for r in requests if r.edits]
    assert steered and all(r.edits == 1 for r in steered)  # the edit travelled with those traces
    assert not client._edits  # and was removed afterwards


def test_remote_refuses_what_needs_local_weights_or_hooks(remote_setup):
    client, local, _ = remote_setup
    direction = Direction(torch.ones(sl.config_of(local).hidden_size), 1.0, 1, "resid", "test")
    for needs_weights in (
        lambda: probes.weight_svd(client, 1, "o"),
        lambda: attach_innerpissa(client, layers=[1], kinds=["o"]),
        lambda: attach_lora(client, [1], ["o"]),
        lambda: calibrate(client, direction),
        lambda: text_gradients(client, PAIRS, 1, "resid"),
    ):
        with pytest.raises(NotImplementedError, match="loaded for remote execution"):
            needs_weights()
    adapter = attach_innerpissa(local, layers=[1], kinds=["o"], rank=4)
    with pytest.raises(NotImplementedError, match="do not travel"):
        analysis.dose_response(
            local, adapter, analysis.dilemmas()[:2], coeffs=(-1.0, 1.0), remote="local", neutral_texts=["A plain sentence."]
        )


def test_steer_as_nnsight_edit_matches_hooks_in_generation_and_per_row():
    model = tiny_model("llama")
    torch.manual_seed(2)
    direction = Direction(torch.nn.functional.normalize(torch.randn(32), dim=0), 4.0, 1, "resid", "test")
    ids = torch.tensor([[1, 70, 71, 72, 73]])
    torch_model = sl.unwrap(model)
    with steer(model, direction, 1.5, remote=False):
        by_hooks = torch_model.generate(ids, max_new_tokens=6, do_sample=False)
    with steer(model, direction, 1.5, remote="local"):
        assert not torch_model._forward_hooks and len(model._edits) == 1
        with torch.inference_mode(), model.generate(ids, max_new_tokens=6, do_sample=False, remote="local") as tracer:
            by_edits = tracer.result.save()
    assert torch.equal(by_edits, by_hooks)
    assert not torch.equal(by_hooks, torch_model.generate(ids, max_new_tokens=6, do_sample=False))
    coeffs = torch.tensor([-2.0, 0.0, 3.0])
    batch = {"input_ids": ids.repeat(3, 1), "attention_mask": torch.ones(3, 5, dtype=torch.long)}
    with steer(model, direction, coeffs, remote=False), torch.no_grad():
        expected = torch_model(**batch).logits
    with steer(model, direction, coeffs, remote="local"), torch.no_grad(), model.trace(batch, remote="local"):
        logits = model.output.logits.save()
    torch.testing.assert_close(logits, expected)
    assert not model._edits


def test_remote_argument_errors(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="Hugging Face id"):
        probes.load_model(None, remote=True)
    with pytest.raises(ValueError, match="remote='ndif'"):
        probes.collect(tiny_model("llama"), PAIRS, layers=[0], remote="ndif")
    saved_folder(tiny_model("llama"), tmp_path)
    monkeypatch.setattr(nnsight.CONFIG.API, "APIKEY", None)
    with pytest.warns(UserWarning, match="NDIF_API_KEY"):
        probes.load_model(str(tmp_path), remote=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        probes.load_model(str(tmp_path), remote="local")  # a dry run needs no key


def test_cli_passes_remote_and_gpu_options_to_load_model(monkeypatch):
    from steerscope import cli

    seen = {}

    class Loaded(Exception):
        pass

    def fake_load_model(name, **options):
        seen.update(options, name=name)
        raise Loaded

    monkeypatch.setattr(probes, "load_model", fake_load_model)
    with pytest.raises(Loaded):
        cli.main(["sweep", "--model", "meta-llama/Llama-3.1-8B", "--remote"])
    assert seen == {"name": "meta-llama/Llama-3.1-8B", "dtype": None, "device_map": None, "remote": True}
    with pytest.raises(Loaded):
        cli.main(["train", "--model", "Qwen/Qwen3-8B", "--dtype", "bfloat16", "--device-map", "auto"])
    assert seen == {"name": "Qwen/Qwen3-8B", "dtype": "bfloat16", "device_map": "auto", "remote": False}
    with pytest.raises(SystemExit):  # adapters train locally: no --remote on train
        cli.main(["train", "--remote"])


def test_a_whole_sweep_follows_a_remote_model(remote_setup, tmp_path):
    client, local, requests = remote_setup
    pairs = probes.honesty_pairs(n=6, tokenizer=local.tokenizer, chat=True)
    options = dict(
        layers=[1, 2],
        kinds=("resid",),
        methods=("mean_diff",),
        coeffs=(-1, 0, 1),
        top_k=1,
        stride=1,
        progress=False,
        min_pmass=0.0,
    )
    remote = analysis.sweep_steerability(client, pairs, analysis.dilemmas()[:3], out=tmp_path / "remote", **options)
    here = analysis.sweep_steerability(local, pairs, analysis.dilemmas()[:3], out=tmp_path / "here", **options)
    numbers = ["slope", "r2", "valid_frac", "delta_nll"]
    torch.testing.assert_close(
        torch.tensor(remote.results[numbers].to_numpy()), torch.tensor(here.results[numbers].to_numpy()), rtol=1e-4, atol=1e-5
    )
    assert any(r.edits for r in requests) and len(requests) >= 4


@pytest.mark.parametrize(
    "family, kind, space",
    [
        ("gpt2", "q", "activation"),
        ("gpt_neox", "v", "activation"),
        ("llama", "o", "uspace"),
        ("gpt2", "k", "uspace"),
        ("gpt_neox", "q", "uspace"),
    ],
)
def test_nnsight_edits_equal_hooks_for_fused_and_weight_space_directions(family, kind, space):
    model = tiny_model(family)
    torch.manual_seed(3)
    basis = probes.weight_svd(model, 1, kind)
    if space == "uspace":
        coords = torch.nn.functional.normalize(torch.randn(basis.rank), dim=0)
        direction = Direction(basis.U @ coords, 2.0, 1, kind, "test", space="uspace", coords=coords)
    else:
        direction = Direction(torch.nn.functional.normalize(torch.randn(basis.U.shape[0]), dim=0), 2.0, 1, kind, "test")
    batch = {"input_ids": torch.tensor([[1, 70, 71, 72], [1, 80, 81, 82]]), "attention_mask": torch.ones(2, 4, dtype=torch.long)}
    coeffs = torch.tensor([1.5, -1.0])
    with torch.no_grad():
        plain = sl.unwrap(model)(**batch).logits
        with steer(model, direction, coeffs, remote=False):
            by_hooks = sl.unwrap(model)(**batch).logits
        with steer(model, direction, coeffs, remote="local"), model.trace(batch, remote="local"):
            by_edits = model.output.logits.save()
    assert (by_hooks - plain).abs().max() > 1e-3
    torch.testing.assert_close(by_edits, by_hooks, rtol=1e-5, atol=1e-5)


def test_remote_dose_response_of_a_plan_with_every_mode_equals_hooks(remote_setup):
    """A plan (ablate at one layer, conditional clamp at chosen positions at another) travels to the
    NDIF stand-in as nnsight edits and scores exactly like forward hooks here."""
    from steering import Condition, Steering

    client, local, requests = remote_setup
    torch.manual_seed(4)
    d = sl.config_of(local).hidden_size
    unit = lambda: torch.nn.functional.normalize(torch.randn(d), dim=0)  # noqa: E731
    ablated, clamped, gate = (Direction(unit(), 3.0, layer, "resid", name) for layer, name in ((0, "a"), (1, "b"), (1, "gate")))
    plan = Steering([ablated, clamped], modes=["ablate", "clamp"], targets=[None, 2.0], condition=None, positions=2)
    gated = Steering([clamped], modes=["clamp"], targets=[2.0], condition=Condition(gate, 0.0))
    items = analysis.dilemmas()[:3]
    kwargs = dict(coeffs=(-1.0, 0.0, 1.0), batch_size=4, neutral_texts=["The river runs past the mill."])
    for intervention in (plan, gated):
        requests.clear()
        remote = analysis.dose_response(client, intervention, items, **kwargs)
        here = analysis.dose_response(local, intervention, items, **kwargs)
        assert here.groupby("coeff")["logratio"].mean().nunique() == 3
        cols = ["logratio", "pmass", "readout", "nll"]
        torch.testing.assert_close(torch.tensor(remote[cols].to_numpy()), torch.tensor(here[cols].to_numpy()), rtol=1e-4, atol=1e-4)
        assert any(r.edits for r in requests) and not client._edits


@pytest.mark.ndif
def test_a_collect_larger_than_one_message_comes_back_through_the_object_store(ndif_server, ndif_folders, monkeypatch):
    """Every layer and kind of many texts at once: over the pub/sub limit, NDIF stages the result in its object
    store (moto here) and nnsight downloads it; it must arrive intact."""
    monkeypatch.setattr(nnsight.CONFIG.API, "HOST", ndif_server.api_url)
    monkeypatch.setattr(ndif_versions, "checked", {})
    requests: list = []
    monkeypatch.setattr(nnsight_remote, "RemoteBackend", recording_backend(requests))
    local = tiny_model("llama")
    client = probes.load_model(ndif_folders["llama"], remote=True)
    pairs = [(f"Statement {i} is true.", f"Statement {i} is false.") for i in range(64)]
    options = dict(layers="all", sublayers=sl.available_kinds(local), batch_size=128, progress=False)
    remote = probes.collect(client, pairs, **options)
    here = probes.collect(local, pairs, **options)
    size = sum(here[key].numel() * here[key].element_size() for key in here)
    assert size > 4 * 64 * 1024 and len(requests) == 1 and requests[0].via_object_store  # one request, 4x the inline cap
    assert set(remote) == set(here)
    for key in here:
        torch.testing.assert_close(remote[key], here[key], rtol=1e-5, atol=1e-5)


@pytest.mark.ndif
def test_the_real_servers_nnsight_is_checked_before_the_first_trace(ndif_server, ndif_folders, monkeypatch):
    """A client with another minor nnsight than the server's is stopped before any trace and told what to install;
    one of the same minor series is warned, and its traces go."""
    monkeypatch.setattr(nnsight.CONFIG.API, "HOST", ndif_server.api_url)
    monkeypatch.setattr(ndif_versions, "checked", {})
    server_python = ndif_local.ndif_python()
    on_server = subprocess.run(
        [str(server_python), "-c", "from importlib.metadata import version; print(version('nnsight'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert ndif_versions.check_server() == on_server == version("nnsight")  # the same nnsight: traces go
    client = probes.load_model(ndif_folders["gpt2"], remote=True)
    here = probes.collect(tiny_model("gpt2"), PAIRS[:1], layers=[0], progress=False)
    monkeypatch.setattr(ndif_versions, "checked", {})
    monkeypatch.setattr(ndif_versions, "version", lambda package: "0.7.2")  # as if this process had another nnsight
    requests: list = []
    monkeypatch.setattr(nnsight_remote, "RemoteBackend", recording_backend(requests))
    with pytest.raises(ndif_versions.NnsightVersionMismatch, match=rf"runs nnsight {on_server}.*pip install nnsight=={on_server}"):
        probes.collect(client, PAIRS[:1], layers=[0], progress=False)
    assert requests == []  # stopped before any trace was sent
    monkeypatch.setenv(ndif_versions.ALLOW_SKEW, "1")
    with pytest.warns(UserWarning, match=rf"runs nnsight {on_server}; this process has nnsight 0.7.2"):
        acts = probes.collect(client, PAIRS[:1], layers=[0], progress=False)
    torch.testing.assert_close(acts[(0, "resid")], here[(0, "resid")], rtol=1e-5, atol=1e-5)
    monkeypatch.delenv(ndif_versions.ALLOW_SKEW)
    monkeypatch.setattr(ndif_versions, "checked", {})
    monkeypatch.setattr(ndif_versions, "version", lambda package: "0.8.99")  # the same minor series: a warning only
    with pytest.warns(UserWarning, match=rf"pip install nnsight=={on_server}"):
        probes.collect(client, PAIRS[:1], layers=[0], progress=False)


def test_a_server_that_cannot_say_its_versions_is_let_through_with_a_warning(monkeypatch):
    monkeypatch.setattr(ndif_versions, "checked", {})
    closed = f"http://127.0.0.1:{ndif_local.free_port()}"
    with pytest.warns(UserWarning, match="Could not read the NDIF server's versions"):
        assert ndif_versions.check_server(closed) is None
    assert ndif_versions.checked == {closed: None}  # asked once per server


def test_a_local_ndif_names_what_is_missing_and_never_signals_a_process_it_did_not_start(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("STEERSCOPE_NDIF_PYTHON", str(tmp_path / "no-venv" / "bin" / "python"))
    with pytest.raises(FileNotFoundError, match="bash scripts/setup_ndif.sh"):
        ndif_local.up(tmp_path / "home", device="cpu")
    with pytest.raises(SystemExit):
        cli.main(["ndif", "down", "--home", str(tmp_path / "nothing")])
    assert "No local NDIF recorded" in capsys.readouterr().err
    me = psutil.Process()
    reused = ndif_local.Service("redis", me.pid, me.create_time() - 3600.0, "redis.log")  # the id now names another process
    assert not ndif_local.alive(reused)
    assert ndif_local.stop(ndif_local.LocalNDIF(str(tmp_path), "http://127.0.0.1:1", {}, "cpu", [reused])) == []


def test_a_folder_is_named_by_its_path_unless_the_public_ndif_knows_it_by_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for folder in ("meta-llama/Llama-3.1-8B", "models/mine", "plain"):
        Path(folder).mkdir(parents=True)
    monkeypatch.setattr(nnsight_hf, "_ID_CACHE", {})
    monkeypatch.setattr(nnsight.CONFIG.API, "HOST", "https://api.ndif.us")
    for name in ("meta-llama/Llama-3.1-8B", "./models/mine", str(tmp_path / "plain")):
        probes.remote.name_folder_by_its_path(name)
    assert {"./models/mine": str(tmp_path / "models/mine"), str(tmp_path / "plain"): str(tmp_path / "plain")} == nnsight_hf._ID_CACHE
    monkeypatch.setattr(nnsight.CONFIG.API, "HOST", "http://127.0.0.1:8001")  # a local NDIF loads the path
    probes.remote.name_folder_by_its_path("meta-llama/Llama-3.1-8B")
    assert nnsight_hf._ID_CACHE["meta-llama/Llama-3.1-8B"] == str(tmp_path / "meta-llama/Llama-3.1-8B")
