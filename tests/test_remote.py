"""remote=True: collect, steer and dose-response hand their traces to nnsight's remote execution.

Nothing here reaches NDIF: `tests.ndif_double` replaces only the network hop of
nnsight's own RemoteBackend, and runs each serialized request the way the server
would (steerscope unimportable, first on a meta-device twin so that any copy to
the CPU inside the block fails, then on a real twin whose saves come back).
Results are compared with the same functions run locally, which use plain
forward hooks for steering.
"""

from __future__ import annotations

import warnings

import nnsight
import nnsight.intervention.backends.remote as nnsight_remote
import nnsight.modeling.huggingface as nnsight_hf
import pytest
import torch

import analysis
import probes
from probes import sublayers as sl
from steering import Direction, calibrate, steer
from steering.adapters.innerpissa import attach_innerpissa
from steering.adapters.lora import attach_lora
from steering.directions.fisher import text_gradients
from tests.ndif_double import ndif_double, server_twins
from tests.tiny import saved_folder, tiny_model

REPO_ID = "steerscope-tests/tiny"
PAIRS = [
    ("I always tell the truth.", "I often tell lies."),
    ("Honest answers only.", "Deceive them all."),
    ("Say what is so.", "Say what sells."),
]


@pytest.fixture(params=["llama", "gpt2"])
def remote_setup(request, tmp_path, monkeypatch):
    """(client model loaded with remote=True, the same model local, log of requests sent)."""
    local = tiny_model(request.param)
    folder = tmp_path / "tiny"
    saved_folder(local, folder)
    monkeypatch.setitem(nnsight_hf._ID_CACHE, str(folder), REPO_ID)  # the Hub's canonical id, offline
    monkeypatch.setattr(nnsight.CONFIG.API, "APIKEY", "key-from-nnsight-config")
    requests: list = []
    monkeypatch.setattr(nnsight_remote, "RemoteBackend", ndif_double(server_twins(local), requests))
    client = probes.load_model(str(folder), remote=True)
    return client, local, requests


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
        assert f'"repo_id": "{REPO_ID}"' in request.model_key and request.model_key.startswith("nnsight.modeling")
        assert request.api_key == "key-from-nnsight-config"  # nnsight's config; steerscope passes none
        assert request.host == nnsight.CONFIG.API.HOST
        assert request.edits == 0


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
