#!/usr/bin/env bash
# Create .venv and install quantzoo and every plugin under plugins/ in editable mode, torch pinned by
# constraints.txt. Idempotent: a second run only reinstalls when pyproject files changed.
set -euo pipefail
shopt -s nullglob
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.quantzoo-installed
want=$(cat pyproject.toml constraints.txt plugins/*/pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
args=(-e ".[dev]")
for p in plugins/*/; do args+=(-e "$p"); done
.venv/bin/python -m pip install -q -c constraints.txt "${args[@]}"
echo "$want" > "$stamp"
