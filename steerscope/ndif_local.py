"""A lab's own NDIF: start and stop NDIF's server stack on this machine, on loopback ports.

NDIF (``pip install ndif``, the server nnsight's ``remote=True`` talks to) is five
processes: Redis (the request queue and the pub/sub results ride on), an
S3-compatible object store (results too large for one message), a Ray head node
with NDIF's controller (which deploys one model actor per model), and NDIF's API
(FastAPI under gunicorn: ``/request``, the ``/subscribe`` websocket, ``/env``,
``/connected``). ``up`` starts them from the NDIF environment (``.venv-ndif``, built
by ``bash scripts/setup_ndif.sh``) with every address they serve on 127.0.0.1 (Ray's
internal gRPC servers listen on all interfaces: Ray has no option to restrict them),
waits until the API reports it is connected to Ray, and writes what it started (pids, ports, logs) to
``<home>/state.json``. ``down`` stops them by the process ids recorded there and
their children, never by name, so another Redis or Ray on the machine is untouched.

Without a GPU the model actors run on the CPU (``steerscope_ndif.CPUModelActor``,
see ``steerscope/ndif_plugin``); with one, NDIF's own GPU actor. Models are named by
their local folder (NDIF deploys a model on its first request): nnsight's key for a
model loaded from a folder carries that path, and the server loads the same folder.

Example:
    server = ndif_local.up("/tmp/my-ndif")          # about 25 s cold
    server.point_nnsight()                           # nnsight's CONFIG.API.HOST -> this server
    model = probes.load_model("/models/llama-3.1-8b", remote=True)
    ...
    ndif_local.down("/tmp/my-ndif")
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

NDIF_VENV = ".venv-ndif"
SETUP = "bash scripts/setup_ndif.sh"
SETUP_STAMP = ".steerscope-ndif-setup"  # written by the setup script once the environment imports NDIF
PLUGIN_DIR = Path(__file__).resolve().parent / "ndif_plugin"
CPU_ACTOR = "steerscope_ndif.CPUModelActor"
CONTROLLER = "steerscope_ndif.ControllerActor"  # NDIF's own, with PyPI's nnsight patched in its process
HOST = "127.0.0.1"
CPU_ACTOR_SLOTS = 16  # Ray's logical CPUs on a CPU-only NDIF: the controller plus up to 15 deployed models
SERVICES = ("redis", "objectstore", "ray", "api")  # start order; stopped in reverse
DEFAULT_HOME = Path("~/.steerscope/ndif").expanduser()
# Redis's own default for pub/sub clients: NDIF sends a result over the websocket when it fits
# min(soft, hard/2) of this (8 MiB here) and through the object store otherwise.
DEFAULT_PUBSUB_LIMIT = "32mb 8mb 60"


def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


def ndif_python() -> Path:
    """The NDIF environment's interpreter: ``$STEERSCOPE_NDIF_PYTHON``, else ``.venv-ndif/bin/python`` in the checkout."""
    chosen = os.environ.get("STEERSCOPE_NDIF_PYTHON")
    return Path(chosen) if chosen else repo_root() / NDIF_VENV / "bin" / "python"


def missing_requirements() -> list[str]:
    """What this machine lacks to run a local NDIF (empty when it can), each with its fix."""
    missing = []
    python = ndif_python()
    if not python.exists():
        missing.append(f"the NDIF environment ({python}): run `{SETUP}`")
    elif not (python.parent.parent / SETUP_STAMP).exists():
        missing.append(f"a finished NDIF environment ({python.parent.parent} has no {SETUP_STAMP}): run `{SETUP}` again")
    if shutil.which("redis-server") is None:
        missing.append("redis-server: `apt-get install redis-server` (scripts/setup_ndif.sh does it as root)")
    return missing


def has_gpu() -> bool:
    return shutil.which("nvidia-smi") is not None and subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class StartError(RuntimeError):
    """A local NDIF did not come up (what failed, and the log that says why)."""


@dataclass
class Service:
    """One process ``up`` started: its id, its start time (so a reused id is never signalled) and its log."""

    name: str
    pid: int
    started: float
    log: str


@dataclass
class LocalNDIF:
    """A running local NDIF: where it answers and what to stop."""

    home: str
    api_url: str
    ports: dict[str, int]
    device: str  # "cpu" or "gpu"
    services: list[Service] = field(default_factory=list)
    ray_dir: str = ""  # Ray's files: a short path under /tmp (its socket paths must stay under 108 bytes)

    def point_nnsight(self, api_key: str = "local-ndif") -> None:
        """Send this process's remote traces here: nnsight's ``CONFIG.API.HOST`` (and a key; a local NDIF checks none)."""
        from nnsight import CONFIG

        CONFIG.API.HOST = self.api_url
        if not CONFIG.API.APIKEY:
            CONFIG.API.APIKEY = api_key

    def connected(self) -> bool:
        return api_connected(self.api_url)

    def save(self) -> None:
        Path(self.home, "state.json").write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, home: str | Path) -> LocalNDIF:
        path = Path(home).expanduser() / "state.json"
        if not path.exists():
            raise FileNotFoundError(f"No local NDIF recorded in {path.parent} (nothing was started there, or it was stopped).")
        data = json.loads(path.read_text())
        data["services"] = [Service(**s) for s in data["services"]]
        return cls(**data)


def api_connected(api_url: str, timeout: float = 2.0) -> bool:
    """True once NDIF's API answers ``/connected`` (it does only while its dispatcher is connected to Ray)."""
    try:
        with urllib.request.urlopen(f"{api_url}/connected", timeout=timeout) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def server_environment(ports: dict[str, int], home: Path, device: str, dtype: str) -> dict[str, str]:
    """The NDIF_* settings every server process reads (all loopback), plus the CPU actor's when ``device="cpu"``."""
    store = f"http://{HOST}:{ports['objectstore']}"
    env = {
        **os.environ,
        "NDIF_HOME": str(home),
        "NDIF_REDIS_URL": f"redis://{HOST}:{ports['redis']}",
        "NDIF_OBJECT_STORE_URL": store,
        "NDIF_OBJECT_STORE_PUBLIC_URL": store,
        "NDIF_OBJECT_STORE_ACCESS_KEY": "steerscope",
        "NDIF_OBJECT_STORE_SECRET_KEY": "steerscope",
        "NDIF_OBJECT_STORE_REGION": "us-east-1",
        "NDIF_RAY_ADDRESS": f"ray://{HOST}:{ports['ray_client']}",
        "NDIF_API_URL": f"http://{HOST}:{ports['api']}",
        "NDIF_API_PORT": str(ports["api"]),
        "NDIF_DEFAULT_DTYPE": dtype,
        "NDIF_SANDBOX_POOL_SIZE": "1",
        "NDIF_CONTROLLER_IMPORT_PATH": CONTROLLER,
        "RAY_ADDRESS": f"{HOST}:{ports['ray']}",
        "RAY_USAGE_STATS_ENABLED": "0",
        "GRPC_ENABLE_FORK_SUPPORT": "0",  # NDIF's ray/start.sh: Ray client servers otherwise die at fork
        "PYTHONPATH": os.pathsep.join(filter(None, [str(PLUGIN_DIR), os.environ.get("PYTHONPATH")])),
    }
    env.pop("VIRTUAL_ENV", None)
    if device == "cpu":
        env["NDIF_MODEL_IMPORT_PATH"] = CPU_ACTOR
        # Ray gives an actor that asked for one CPU one OpenMP thread unless told otherwise: a model on the CPU
        # should use the machine's cores, as it does locally.
        env.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    return env


def ray_resources(device: str) -> dict[str, Any]:
    """The custom resources NDIF's controller schedules by: NDIF's own script on a GPU node, the RAM as GPU memory on the CPU."""
    if device == "gpu":
        script = [str(ndif_python()), "-m", "ndif.services.ray.resources", "--head"]
        return dict(json.loads(subprocess.run(script, capture_output=True, text=True, check=True).stdout))
    import psutil

    memory = int(psutil.virtual_memory().total)  # the controller places models by GPU memory: the RAM is one "GPU"
    return {"head": 10, "cuda_memory_bytes": memory, "cpu_memory_bytes": memory}


def commands(ports: dict[str, int], home: Path, ray_dir: str, device: str, pubsub_limit: str) -> dict[str, list[str]]:
    """The command line of each service, each serving on 127.0.0.1."""
    bin_dir = ndif_python().parent
    resources = ray_resources(device)
    ray = [
        str(bin_dir / "ray"),
        "start",
        "--head",
        "--block",
        "--disable-usage-stats",
        f"--node-ip-address={HOST}",
        f"--port={ports['ray']}",
        f"--ray-client-server-port={ports['ray_client']}",
        f"--node-manager-port={ports['node_manager']}",
        f"--object-manager-port={ports['object_manager']}",
        f"--dashboard-agent-grpc-port={ports['dashboard_agent_grpc']}",
        f"--dashboard-agent-listen-port={ports['dashboard_agent']}",
        f"--metrics-export-port={ports['metrics']}",
        f"--runtime-env-agent-port={ports['runtime_env_agent']}",
        f"--min-worker-port={ports['worker_min']}",
        f"--max-worker-port={ports['worker_min'] + 99}",
        "--include-dashboard=true",
        f"--dashboard-host={HOST}",
        f"--dashboard-port={ports['dashboard']}",
        f"--temp-dir={ray_dir}",
        f"--resources={json.dumps(resources)}",
    ]
    if device == "cpu":
        # Each model actor and the controller take one logical CPU in Ray's accounting; declare enough for several
        # models on a small machine (they share its cores), and one "GPU" for NDIF's scheduler to place them on.
        ray += ["--num-gpus=1", f"--num-cpus={CPU_ACTOR_SLOTS}"]
    return {
        "redis": [
            "redis-server",
            "--bind",
            HOST,
            "--port",
            str(ports["redis"]),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(home),
            "--client-output-buffer-limit",
            f"pubsub {pubsub_limit}",
        ],
        "objectstore": [str(bin_dir / "moto_server"), "-H", HOST, "-p", str(ports["objectstore"])],
        "ray": ray,
        "api": [
            str(bin_dir / "gunicorn"),
            "--config",
            "python:ndif.services.api.gunicorn_conf",
            "--bind",
            f"{HOST}:{ports['api']}",
            "--control-socket",
            str(home / "gunicorn.ctl"),
            "ndif.services.api.app:app",
        ],
    }


def choose_ports(api_port: int | None) -> dict[str, int]:
    names = (
        "redis",
        "objectstore",
        "ray",
        "ray_client",
        "node_manager",
        "object_manager",
        "dashboard_agent_grpc",
        "dashboard_agent",
        "metrics",
        "runtime_env_agent",
        "dashboard",
    )
    ports = {name: free_port() for name in names}
    # a block of 100 ports for Ray's workers, below the ephemeral range the ports above came from
    ports["worker_min"] = 10000 + (os.getpid() % 200) * 100
    ports["api"] = api_port or free_port()
    return ports


def spawn(name: str, command: list[str], env: dict[str, str], home: Path) -> Service:
    log = home / f"{name}.log"
    with open(log, "ab") as out:
        process = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, cwd=home
        )
    return Service(name, process.pid, process_start_time(process.pid), str(log))


def process_start_time(pid: int) -> float:
    import psutil

    return float(psutil.Process(pid).create_time())


def wait_until(check: Any, what: str, timeout: float, services: list[Service]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for service in services:
            if not alive(service):
                raise StartError(f"NDIF's {service.name} exited while waiting for {what}; its log: {service.log}\n" + tail(service.log))
        if check():
            return
        time.sleep(0.5)
    raise StartError(f"NDIF did not reach '{what}' within {timeout:.0f} s; logs in {Path(services[0].log).parent}")


def tail(log: str, lines: int = 30) -> str:
    try:
        return "\n".join(Path(log).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0


def up(
    home: str | Path = DEFAULT_HOME,
    *,
    device: str = "auto",
    api_port: int | None = None,
    dtype: str = "float32",
    pubsub_limit: str = DEFAULT_PUBSUB_LIMIT,
    timeout: float = 180.0,
) -> LocalNDIF:
    """Start NDIF on this machine (its addresses on 127.0.0.1) and wait until its API is connected to Ray.

    Args:
        home: where state.json and the logs go; one NDIF per folder (Ray's files go to a short folder under /tmp).
        device: "gpu" (NDIF's own model actor), "cpu" (steerscope's CPU actor) or "auto" (gpu when nvidia-smi sees one).
        api_port: the API's port (default: a free one); nnsight's ``CONFIG.API.HOST`` is ``http://127.0.0.1:<port>``.
        dtype: the dtype NDIF loads models in (float32: remote results then equal local float32 ones).
        pubsub_limit: Redis's ``client-output-buffer-limit pubsub`` (hard soft seconds); NDIF sends results larger
            than min(soft, hard/2) through the object store instead of the websocket.
    """
    if device not in ("auto", "cpu", "gpu"):
        raise ValueError(f"device={device!r}: use 'auto', 'cpu' or 'gpu'.")
    missing = missing_requirements()
    if missing:
        raise FileNotFoundError("A local NDIF needs " + "; ".join(missing) + ".")
    home = Path(home).expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    if (home / "state.json").exists():
        running = LocalNDIF.load(home)
        if any(members(s) for s in running.services):
            raise FileExistsError(
                f"A local NDIF is already running from {home} ({running.api_url}); stop it with `steerscope ndif down --home {home}`."
            )
    if device == "auto":
        device = "gpu" if has_gpu() else "cpu"
    ports = choose_ports(api_port)
    env = server_environment(ports, home, device, dtype)
    ray_dir = tempfile.mkdtemp(prefix="ndif-ray-", dir="/tmp")
    lines = commands(ports, home, ray_dir, device, pubsub_limit)
    server = LocalNDIF(str(home), f"http://{HOST}:{ports['api']}", ports, device, ray_dir=ray_dir)
    try:
        for name in ("redis", "objectstore", "ray"):
            server.services.append(spawn(name, lines[name], env, home))
            server.save()
            needed = {"redis": ["redis"], "objectstore": ["objectstore"], "ray": ["ray", "ray_client", "node_manager", "dashboard"]}[name]
            wait_until(lambda needed=needed: all(port_open(ports[p]) for p in needed), f"{name} listening", timeout, server.services)
        log = home / "controller.log"
        with open(log, "wb") as out:  # the launcher schedules NDIF's controller actor in Ray and exits
            launcher = [str(ndif_python()), "-m", "ndif.services.ray.deployments.controller.controller"]
            try:
                code = subprocess.run(launcher, env=env, cwd=home, stdout=out, stderr=subprocess.STDOUT, timeout=timeout).returncode
            except subprocess.TimeoutExpired:
                code = None
        if code != 0:
            raise StartError(f"NDIF's controller did not start ({'timed out' if code is None else f'exit {code}'}):\n{tail(str(log))}")
        server.services.append(spawn("api", lines["api"], env, home))
        server.save()
        wait_until(server.connected, "the API connected to Ray", timeout, server.services)
    except BaseException:
        stop(server)
        raise
    return server


def alive(service: Service) -> bool:
    import psutil

    try:
        process = psutil.Process(service.pid)
        return abs(process.create_time() - service.started) < 1.0 and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def members(service: Service) -> list[Any]:
    """The processes of a service: its own, its descendants, and what is left of its session (it was started as a
    session leader, so a child orphaned by a crash still carries its id); never a process older than the service."""
    import psutil

    found: dict[int, Any] = {}
    if alive(service):
        root = psutil.Process(service.pid)
        found = {p.pid: p for p in [root, *root.children(recursive=True)]}
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if process.pid not in found and os.getsid(process.pid) == service.pid and process.create_time() >= service.started - 1.0:
                found[process.pid] = process
    return list(found.values())


def stop(server: LocalNDIF, grace: float = 10.0) -> list[int]:
    """Stop every recorded service and all its processes, by process id (newest service first); returns the ids signalled."""
    import psutil

    stopped: list[int] = []
    for service in reversed(server.services):
        family = members(service)
        for process in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(signal.SIGTERM)
                stopped.append(process.pid)
        _, left = psutil.wait_procs(family, timeout=grace)
        for process in left:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        psutil.wait_procs(left, timeout=grace)
    if server.ray_dir:
        shutil.rmtree(server.ray_dir, ignore_errors=True)
    state = Path(server.home, "state.json")
    if state.exists():
        state.unlink()
    return stopped


def down(home: str | Path = DEFAULT_HOME) -> list[int]:
    """Stop the local NDIF started from ``home`` (by the process ids in its state.json)."""
    return stop(LocalNDIF.load(home))
