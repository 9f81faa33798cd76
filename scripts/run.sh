#!/usr/bin/env bash
# Set up (if needed) and run the whole pipeline on the offline default: `dvc repro`.
# Extra arguments go to `dvc repro` (e.g. a stage name, or --force).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH" DVC_NO_ANALYTICS=1
dvc repro "$@"
# docs/results.md and the README's results table follow the metrics just written (or left up to date)
[ ! -f metrics/eval.json ] || python scripts/results_doc.py
python scripts/summary.py
