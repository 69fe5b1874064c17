#!/usr/bin/env bash
# Offline GPU host (no registry access): make a venv from wheels copied there beforehand.
#
#   bash scripts/gpu_host_env.sh STAGE_DIR VENV_DIR
#
# STAGE_DIR holds the wheels, or a tar of them split into parts named p* (split -b 60M), e.g.
# the cp312 wheels of: nvidia-dali-cuda130 and its nvImageCodec/nvJPEG/nvJPEG2k/nvTIFF/nvCOMP
# wheels, optree and what DALI's conditionals import (gast, astunparse, dill, six; without gast
# the GPU tests skip with "No module named 'gast'"), numpy 1.26.4, nvidia-pytriton, tritonclient
# + grpcio + protobuf + python-rapidjson, tritonclient's HTTP side (geventhttpclient, gevent, greenlet, zope.event,
# zope.interface, brotli, certifi, urllib3), pydantic (+ pydantic_core, annotated-types,
# typing-inspection, typing_extensions), ml_dtypes, nvtx, scikit-learn + scipy (versions:
# requirements.lock); the host's own torch, torchvision, Pillow, onnx, psutil, rich are used.
# The venv puts those first and the host's own site-packages (torch, torchvision, Pillow) after
# them, so numpy < 2 wins: Triton 2.51's python backend stub needs numpy 1.x. Run the project
# with VENV_DIR/bin/python and VENV_DIR/bin first on PATH (the stub finds packages through PATH).
# The project itself is installed into the venv (editable, with its tik-* commands), so
# `VENV_DIR/bin/python benchmarks/...` and `VENV_DIR/bin/tik-...` run from this checkout.
# A tritonclient 2.51.0 `perf_analyzer` binary in STAGE_DIR goes to VENV_DIR/bin (it runs with the
# libb64/libcudart that the nvidia-pytriton wheel carries).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
stage=${1:?stage folder}
venv=${2:?venv folder}
if compgen -G "$stage/p*" > /dev/null; then
    cat "$stage"/p* | tar xf - -C "$stage"
fi
host_site=$(python3 -c 'import site; print(site.getsitepackages()[0])')
pyver=$(python3 -c 'import sys; print(f"{sys.version_info.major}.{sys.version_info.minor}")')
python3 -m venv --without-pip "$venv"
site="$venv/lib/python$pyver/site-packages"
python3 -m pip install -q --no-index --no-deps --target "$site" "$stage"/*.whl
# After the venv's own packages: the host's torch, torchvision and Pillow.
echo "import site; site.addsitedir('$host_site')" > "$site/zz_host_site.pth"
# pip and setuptools come from the host's site-packages (the venv has no pip of its own).
"$venv/bin/python" -m pip install -q --no-index --no-deps --no-build-isolation -e "$repo" || {
    echo "gpu_host_env.sh: editable install failed (no pip/setuptools on this host?); putting $repo on the" \
         "venv's path instead (python -m works, the tik-* commands do not)" >&2
    echo "$repo" > "$site/triton_image_toolkit_checkout.pth"
}
if [ -f "$stage/perf_analyzer" ]; then
    # perf_analyzer needs libb64.so.0d and libcudart.so.12: the pytriton wheel carries both under
    # hashed names; link them under the names the binary asks for, in a folder of their own.
    pa_libs="$venv/lib/perf_analyzer"
    mkdir -p "$pa_libs"
    ln -sf "$(ls "$site"/nvidia_pytriton.libs/libb64-*.so.0d | head -1)" "$pa_libs/libb64.so.0d"
    ln -sf "$(ls "$site"/nvidia_pytriton.libs/libcudart-*.so.12* | head -1)" "$pa_libs/libcudart.so.12"
    install -m 0755 "$stage/perf_analyzer" "$pa_libs/perf_analyzer"
    printf '#!/bin/sh\nLD_LIBRARY_PATH="%s${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "%s/perf_analyzer" "$@"\n' \
        "$pa_libs" "$pa_libs" > "$venv/bin/perf_analyzer"
    chmod 0755 "$venv/bin/perf_analyzer"
fi
"$venv/bin/python" -c "import numpy, nvidia.dali, tritonclient.grpc, torch, serving.local_server; print('numpy', numpy.__version__, '| DALI', nvidia.dali.__version__, '| torch', torch.__version__)"
