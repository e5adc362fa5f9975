#!/usr/bin/env bash
# Lint and type-check the library: ruff (rules and formatting) and mypy, as configured in
# pyproject.toml. Part of the README's test command and of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m ruff check probes steering analysis steerscope tests bench
python3 -m ruff format --check probes steering analysis steerscope tests bench
python3 -m mypy probes steering analysis steerscope
