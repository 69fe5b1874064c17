# The gpu target's builder: NVIDIA's TensorRT image of the chosen Triton release (so plans are
# built with the TensorRT the tritonserver image of the same release loads) plus only what
# `python builders/build_all.py --target gpu` imports, from docker/requirements-gpu.txt.
# Built once by `docker compose up` (compose's `build:`) and cached; the checkout is mounted at
# run time, never copied in, so code changes need no rebuild.
#
# It runs as the host user (HOST_UID/HOST_GID build args, which compose passes), so what it
# writes into the mounted checkout (model_repository/, .cache/) belongs to that user already.
ARG TRITON_RELEASE=26.06
FROM nvcr.io/nvidia/tensorrt:${TRITON_RELEASE}-py3

ARG HOST_UID=1000
ARG HOST_GID=1000

# The image's Python is Ubuntu's system Python (PEP 668); this image is single-purpose.
ENV PIP_BREAK_SYSTEM_PACKAGES=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

COPY docker/requirements-gpu.txt /tmp/requirements-gpu.txt
# TensorRT's own Python package comes with the base image and is not in the requirements file,
# so pip leaves it alone; everything else is pinned (transitive dependencies included).
RUN python3 -m pip install --no-cache-dir --no-deps -r /tmp/requirements-gpu.txt \
    && python3 -m pip check \
    && rm /tmp/requirements-gpu.txt

# Reuse the group/user of that id if the image has one (Ubuntu 24.04 images ship "ubuntu", 1000).
RUN (getent group "${HOST_GID}" > /dev/null || groupadd --gid "${HOST_GID}" builder) \
    && (getent passwd "${HOST_UID}" > /dev/null \
        || useradd --uid "${HOST_UID}" --gid "${HOST_GID}" --create-home --shell /bin/bash builder)

USER ${HOST_UID}:${HOST_GID}
WORKDIR /workspace/project
ENV PYTHONPATH=/workspace/project
CMD ["python3", "builders/build_all.py", "--target", "gpu", "--require-plans"]
