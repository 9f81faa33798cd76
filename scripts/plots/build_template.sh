#!/usr/bin/env bash
# Install the pinned Vega libraries (package-lock.json) and inline them into .dvc/plots/offline.html.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
python3 build_template.py
