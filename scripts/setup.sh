#!/usr/bin/env bash
# Create .venv with the pinned dependencies (CPU machine: no GPU, TensorRT or Docker needed).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
# pyproject's requires-python: tomllib needs 3.11; the numpy 1.26 pin has no wheel for 3.13.
"$PYTHON" -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] < (3, 13))' || {
    echo "scripts/setup.sh: $PYTHON is Python $("$PYTHON" -c 'import platform; print(platform.python_version())'); this project needs 3.11 or 3.12 (set PYTHON=python3.12, say)" >&2
    exit 1
}
"$PYTHON" -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -r requirements.lock
.venv/bin/pip install -q --no-deps -e .
