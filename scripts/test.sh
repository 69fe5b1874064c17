#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite. GPU and TensorRT tests skip with their reason.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/pip install -q -r requirements-dev.txt
.venv/bin/pip install -q --no-deps tensorrt-stubs==10.13.0.35.1
exec .venv/bin/python -m pytest -ra "$@"
