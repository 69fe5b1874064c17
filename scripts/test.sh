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
# Debian's chromium for the report's browser test (tests/test_report.py), installed once when missing.
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi
exec .venv/bin/python -m pytest -ra "$@"
