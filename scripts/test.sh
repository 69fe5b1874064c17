#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite. GPU and TensorRT tests skip with their reason.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/pip install -q -r requirements-dev.txt
.venv/bin/pip install -q --no-deps tensorrt-stubs==10.13.0.35.1
# checkov in its own environment: its pins (networkx<2.7, packaging<24) conflict with requirements.lock.
[ -x .cache/tools/checkov/bin/pip ] || .venv/bin/python -m venv .cache/tools/checkov
.cache/tools/checkov/bin/pip install -q -r requirements-checkov.txt
exec .venv/bin/python -m pytest -ra "$@"
