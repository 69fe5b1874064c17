#!/usr/bin/env bash
# Create .venv with the pinned dependencies and test tools (CPU machine: no GPU, TensorRT or
# Docker needed), and this checkout's package installed editable with its tik-* commands.
#
# The dependencies live in a shared environment (scripts/shared_env.sh) made once per machine;
# .venv itself is a small venv that sees them through a .pth file, so every checkout has its own
# tik-* commands running its own code. The first run takes minutes, later checkouts seconds.
#   bash scripts/setup.sh            set up (idempotent)
#   bash scripts/setup.sh --env-key  print the shared environment's key and exit
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON="${PYTHON:-python3}"
# pyproject's requires-python: tomllib needs 3.11; the numpy 1.26 pin has no wheel for 3.13.
"$PYTHON" -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] < (3, 13))' || {
    echo "scripts/setup.sh: $PYTHON is Python $("$PYTHON" -c 'import platform; print(platform.python_version())'); this project needs 3.11 or 3.12 (set PYTHON=python3.12, say)" >&2
    exit 1
}
# shellcheck source=scripts/shared_env.sh
. scripts/shared_env.sh
KEY=$(env_key "$PYTHON" requirements.lock requirements-dev.txt)
if [ "${1:-}" = --env-key ]; then echo "$KEY"; exit 0; fi

install_deps() {    # the shared environment: requirements.lock, then the test tools (&&: see shared_env)
    "$1/bin/pip" install -q --upgrade pip &&
        "$1/bin/pip" install -q -r requirements.lock &&
        "$1/bin/pip" install -q -r requirements-dev.txt &&
        "$1/bin/pip" install -q --no-deps "$TRT_STUBS"
}

MARK=.venv/triton-image-toolkit-env
if [ -e .venv ] && [ ! -f "$MARK" ]; then
    # A .venv made some other way (an older setup.sh, or a link to another checkout's): brought up
    # to the pins in place, as before, rather than replaced.
    .venv/bin/pip install -q -r requirements.lock -r requirements-dev.txt
    .venv/bin/pip install -q --no-deps "$TRT_STUBS"
    # A linked .venv belongs to the checkout it links to: its editable install stays pointed there.
    [ -L .venv ] || .venv/bin/pip install -q --no-deps -e .
    exit 0
fi

SHARED=$(shared_env deps "$KEY" install_deps)
if [ "$(cat "$MARK" 2>/dev/null)" != "$SHARED $ROOT" ] || [ ! -x .venv/bin/tik-build ]; then
    rm -rf .venv
    "$PYTHON" -m venv --without-pip .venv
    site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    shared_site=$("$SHARED/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    # addsitedir (not a bare path) so the shared folder's own .pth files run too; it comes after
    # .venv's site-packages, so this checkout's editable install wins.
    echo "import site; site.addsitedir('$shared_site')" > "$site/_triton_image_toolkit_shared.pth"
    # The shared commands (pip, pytest, locust, docker-compose, hadolint...) in .venv/bin: Python
    # scripts re-pointed at .venv's interpreter (pip then installs into .venv), binaries linked.
    for tool in "$SHARED"/bin/*; do
        name=$(basename "$tool")
        [ -e ".venv/bin/$name" ] && continue
        if head -n1 "$tool" | grep -Eq "^#!$SHARED/bin/python[0-9.]*\$"; then
            sed "1s|.*|#!$ROOT/.venv/bin/python|" "$tool" > ".venv/bin/$name"
            chmod +x ".venv/bin/$name"
        else
            ln -s "$tool" ".venv/bin/$name"
        fi
    done
    .venv/bin/python -m pip install -q --no-deps -e .
    echo "$SHARED $ROOT" > "$MARK"
fi
prune_envs deps 3
