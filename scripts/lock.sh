#!/usr/bin/env bash
# Regenerate requirements.lock: resolve pyproject.toml's ranges (extras dev and notebooks) in a new
# virtual environment and write down every version it installed. Run it after changing a dependency,
# then run the test suite from the new lock (bash scripts/setup.sh) before committing both.
#   TORCH_SPEC, PYTHON as for scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
VENV="$work/venv" LOCK=latest bash scripts/setup.sh
{
  echo "# Exactly the versions steerscope's test suite passed with: scripts/setup.sh installs these"
  echo "# as they are (pip install --no-deps -r). Written by scripts/lock.sh on $(date -u +%Y-%m-%d) with"
  echo "# $("$work/venv/bin/python" --version); torch's build (CPU wheel by default) is chosen by TORCH_SPEC."
  # steerscope itself is installed from the checkout; a local build label (+cpu) names no index's file.
  "$work/venv/bin/python" -m pip freeze --disable-pip-version-check --exclude-editable | sed -E 's/^(torch==[^+]+)\+.*/\1/'
} > requirements.lock
echo "wrote requirements.lock ($(grep -vc '^#' requirements.lock) packages)"
