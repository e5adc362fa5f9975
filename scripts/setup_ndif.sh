#!/usr/bin/env bash
# Set up the NDIF environment: NDIF's own server (ndif 0.1.2 from PyPI) with Ray, Redis's client, boto3 and
# moto (an S3-compatible object store that runs from PyPI), for `steerscope ndif up|down` and the real-server
# tier of tests/test_remote.py. From requirements-ndif.lock by default (idempotent: a second run with the same
# lock installs nothing). It is not .venv: NDIF's server pulls in Ray, FastAPI and gunicorn, which steerscope's
# client has no use for; nnsight, transformers and torch are pinned to requirements.lock's versions, so the
# server runs the same nnsight as the client (what tests/test_remote.py compares with the stand-in).
#   VENV    the environment (default: .venv-ndif; steerscope.ndif_local looks there, or at $STEERSCOPE_NDIF_PYTHON)
#   LOCK    requirements-ndif.lock (default): installed as it is, without resolving anything; or "latest":
#           resolve ndif==0.1.2's server dependencies afresh (nnsight, transformers and torch at
#           requirements.lock's versions) and rewrite the lock
#   PYTHON  the interpreter that creates the environment (default: python3, 3.11 or newer)
#   TORCH_SPEC  the torch build (default: the lock's CPU wheel); a GPU server sets the CUDA build of the same
#           version, e.g. TORCH_SPEC="torch==2.13.0+cu128 --index-url https://download.pytorch.org/whl/cu128"
#           (setup.sh passes its own on)
# ndif 0.1.2 declares Python >= 3.12; its code runs on 3.11 (tests/test_remote.py checks what it does), so it is
# installed without that check. Redis itself is a Debian package (redis-server), installed here when run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv-ndif}
LOCK=${LOCK:-requirements-ndif.lock}
TORCH_SPEC=${TORCH_SPEC:-skip}
NDIF=ndif==0.1.2

"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
  || { echo "steerscope needs Python 3.11 or newer; $PYTHON is $("$PYTHON" --version 2>&1). Set PYTHON=python3.11." >&2; exit 1; }
[ "$LOCK" = latest ] || [ -f "$LOCK" ] || { echo "No lock file $LOCK: run LOCK=latest bash scripts/setup_ndif.sh." >&2; exit 1; }
if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get install -y -qq redis-server >/dev/null 2>&1 \
      || (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq redis-server >/dev/null 2>&1) \
      || { echo "Could not install redis-server (apt-get install redis-server)." >&2; exit 1; }
  else
    echo "NDIF needs redis-server on the PATH: sudo apt-get install redis-server (or your system's package)." >&2; exit 1
  fi
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PY="$VENV/bin/python"
pip_install() { "$PY" -m pip install --disable-pip-version-check --root-user-action=ignore -q "$@"; }

stamp="$VENV/.steerscope-ndif-setup"
wanted=$({ echo "$LOCK $TORCH_SPEC"; [ "$LOCK" = latest ] || cat "$LOCK"; } | sha256sum | cut -c1-16)
install_torch() {  # TORCH_SPEC's build, else the version the lock (or requirements.lock) names, CPU wheel
  if [ "$TORCH_SPEC" != skip ]; then
    read -r -a TORCH_ARGS <<< "$TORCH_SPEC"
    pip_install "${TORCH_ARGS[@]}"
  else
    pip_install "$(grep -E '^torch==' "$1" | sed 's/+cpu$//')"
  fi
}
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  rm -f "$stamp"  # written back only once everything below worked (the real-server tests skip without it)
  if [ "$LOCK" = latest ]; then
    # What the server shares with steerscope's client, at requirements.lock's versions. Only these: the rest of
    # that lock (python-dateutil 4, for one) conflicts with botocore.
    grep -iE '^(torch|nnsight|transformers|accelerate|peft|numpy|zstandard|safetensors|tokenizers|huggingface[-_]hub|pydantic|pydantic_core|psutil|cloudpickle)==' \
      requirements.lock > "$VENV/shared-pins.txt"
    install_torch requirements.lock
    # ndif's extras `api` and `ray` and its core dependencies (its metadata, less the Python check), and moto's server.
    pip_install -c "$VENV/shared-pins.txt" nnsight transformers accelerate peft numpy zstandard psutil pydantic redis \
      click python-dotenv pyyaml boto3 "ray[default]" fastapi "uvicorn[standard]" gunicorn python-multipart "moto[server]"
    pip_install --no-deps --ignore-requires-python "$NDIF"
  else
    grep -vE '^torch==' "$LOCK" > "$VENV/lock-without-torch.txt"
    install_torch "$LOCK"
    pip_install --no-deps --ignore-requires-python -r "$VENV/lock-without-torch.txt"
  fi
  PYTHONPATH=steerscope/ndif_plugin "$PY" -c 'import ndif.services.api.app, ray, moto, steerscope_ndif' \
    || { echo "The NDIF environment $VENV does not import NDIF's API, Ray, moto and steerscope_ndif (see above)." >&2; exit 1; }
  if [ "$LOCK" = latest ]; then
    {
      echo "# The NDIF environment (scripts/setup_ndif.sh installs these as they are, pip install --no-deps -r):"
      echo "# ndif's server with Ray, moto and the client's nnsight/transformers/torch. Written by LOCK=latest"
      echo "# bash scripts/setup_ndif.sh on $(date -u +%Y-%m-%d) with $("$PY" --version)."
      "$PY" -m pip freeze --disable-pip-version-check --exclude-editable
    } > requirements-ndif.lock
    echo "wrote requirements-ndif.lock ($(grep -vc '^#' requirements-ndif.lock) packages)"
  fi
  echo "$wanted" > "$stamp"
fi
