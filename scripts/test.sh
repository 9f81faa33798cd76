#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite, including the slow test on the real model.
# Extra arguments go to pytest (e.g. -m "not slow" for the quick tests only).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
export PATH="$PWD/.venv/bin:$PATH" DVC_NO_ANALYTICS=1
python -m pytest "$@"
