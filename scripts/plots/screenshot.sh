#!/usr/bin/env bash
# Render `dvc plots diff REVS...` to a PNG with headless Chromium, offline (no host resolves).
#   bash scripts/plots/screenshot.sh OUT.png [REV...]     e.g. docs/img/sweep-plots.png HEAD exp-1 exp-2
# Needs Debian's chromium (apt-get install chromium). The HTML page itself is left in dvc_plots/.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -x .venv/bin/dvc ] && export PATH="$PWD/.venv/bin:$PATH"
export DVC_NO_ANALYTICS=1
[ $# -ge 1 ] || { sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
out=$(realpath -m "$1"); shift
dvc plots diff "$@" -o dvc_plots >/dev/null
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
mkdir -p "$(dirname "$out")"
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
    --disable-component-update --disable-sync --user-data-dir="$profile" '--host-resolver-rules=MAP * ~NOTFOUND' \
    --virtual-time-budget=10000 --hide-scrollbars --window-size="${WIDTH:-1300},${HEIGHT:-2200}" \
    --screenshot="$out.tmp.png" "file://$PWD/dvc_plots/index.html" 2>/dev/null
mv "$out.tmp.png" "$out"
echo "wrote $out (page: dvc_plots/index.html)"
