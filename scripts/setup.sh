#!/usr/bin/env bash
# Create .venv with the pinned dependencies (CPU machine: no GPU, TensorRT or Docker needed).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -r requirements.lock
.venv/bin/pip install -q --no-deps -e .
