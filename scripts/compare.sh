#!/usr/bin/env bash
# The experiments side by side, with only the params and metrics that matter (not 40 columns).
# Extra arguments go to `dvc exp show`: --md for markdown, --csv, -A for all commits,
# --sort-by identity.trained.neutral.new_name_rate, ...
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/dvc ] && export PATH="$PWD/.venv/bin:$PATH"
export DVC_NO_ANALYTICS=1
columns=(
    'Experiment' 'Created'
    'train\.(beta|loss_type|loss_weights|learning_rate|epochs)'
    'identity\.trained\.(neutral|default)\.(new|old)_name_rate'
    'general\.(mean_token_kl|same_answer_rate)'
)
keep=$(IFS='|'; echo "^(${columns[*]})\$")
exec dvc exp show --no-pager --drop '.*' --keep "$keep" "$@"
