#!/usr/bin/env bash
# Set up (if needed) and run the whole pipeline on the offline default: `dvc repro`.
# Extra arguments go to `dvc repro` (e.g. a stage name, or --force).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH" DVC_NO_ANALYTICS=1
dvc repro "$@"
python scripts/summary.py
