#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite. GPU and TensorRT tests skip with their reason.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh       # .venv with requirements.lock, the test tools and this checkout
PYTHON="${PYTHON:-python3}"
# shellcheck source=scripts/shared_env.sh
. scripts/shared_env.sh
# checkov in its own environment: its pins (networkx<2.7, packaging<24) conflict with
# requirements.lock. Shared between checkouts like .venv's dependencies; linked where
# tests/test_k8s.py looks for it.
install_checkov() { "$1/bin/pip" install -q -r requirements-checkov.txt; }
if [ -d .cache/tools/checkov ] && [ ! -L .cache/tools/checkov ]; then
    .cache/tools/checkov/bin/pip install -q -r requirements-checkov.txt     # made by an older test.sh
else
    checkov=$(shared_env checkov "$(env_key "$PYTHON" requirements-checkov.txt)" install_checkov)
    mkdir -p .cache/tools && ln -sfn "$checkov" .cache/tools/checkov
    prune_envs checkov 3
fi
# Debian's chromium for the report's browser test (tests/test_report.py), installed once when missing.
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi
exec .venv/bin/python -m pytest -ra "$@"
