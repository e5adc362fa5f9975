#!/usr/bin/env bash
# Drift check: build a new virtual environment with the newest versions pyproject.toml's ranges
# allow (torch stays the CPU wheel of TORCH_SPEC), show how they differ from requirements.lock,
# and run the fast tests in it. A failure here means a release inside our ranges breaks
# steerscope: fix it, or exclude that release with an upper bound and a test.
#   TORCH_SPEC, PYTHON as for scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
VENV="$work/venv" LOCK=latest bash scripts/setup.sh
"$work/venv/bin/python" -m pip freeze --disable-pip-version-check --exclude-editable | sed -E 's/^(torch==[^+]+)\+.*/\1/' > "$work/latest.txt"
echo "== newest allowed versions that differ from requirements.lock =="
diff <(grep -v '^#' requirements.lock | sort) <(sort "$work/latest.txt") | grep -E '^[<>]' || echo "(none: the lock is the newest)"
for name in torch transformers nnsight peft accelerate numpy pandas; do grep -i "^$name==" "$work/latest.txt" || true; done
# Extra arguments go to pytest (e.g. `bash scripts/check_latest.sh tests/test_modes.py`).
STEERSCOPE_UNLOCKED=1 "$work/venv/bin/python" -m pytest -q -p no:cacheprovider -m "not slow" "$@"
