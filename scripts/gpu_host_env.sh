#!/usr/bin/env bash
# Offline GPU host (no registry access): make a venv from wheels copied there beforehand.
#
#   bash scripts/gpu_host_env.sh STAGE_DIR VENV_DIR
#
# STAGE_DIR holds the wheels, or a tar of them split into parts named p* (split -b 60M), e.g.
# the cp312 wheels of: nvidia-dali-cuda130 and its nvImageCodec/nvJPEG/nvJPEG2k/nvTIFF/nvCOMP
# wheels, numpy 1.26.4, nvidia-pytriton, tritonclient + grpcio + protobuf + python-rapidjson,
# pydantic (+ pydantic_core, annotated-types, typing-inspection, typing_extensions), rich,
# scikit-learn (+ scipy, joblib, threadpoolctl), onnx, psutil (versions: requirements.lock).
# The venv puts those first and the host's own site-packages (torch, torchvision, Pillow) after
# them, so numpy < 2 wins: Triton 2.51's python backend stub needs numpy 1.x. Run the project
# with VENV_DIR/bin/python and VENV_DIR/bin first on PATH (the stub finds packages through PATH).
set -euo pipefail
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
"$venv/bin/python" -c "import numpy, nvidia.dali, tritonclient.grpc, torch; print('numpy', numpy.__version__, '| DALI', nvidia.dali.__version__, '| torch', torch.__version__)"
