#!/usr/bin/env bash
# Queue a parameter sweep as DVC experiments, run the queue, wait for it, and show the results.
#
#   bash scripts/sweep.sh 'train.beta=0.05,0.1,0.2,0.5,1.0'
#   bash scripts/sweep.sh 'train.loss_weights=[1.0,0.0],[1.0,0.5],[1.0,1.0]'   # the loss mix
#   bash scripts/sweep.sh 'train.beta=0.1,0.5' 'train.epochs=1,2'               # a 2 x 2 grid
#
# Each argument is one `dvc exp run -S` override in DVC's sweep syntax (comma-separated choices;
# several arguments make a grid). It is exactly:
#   dvc exp run --queue -S ARG... && dvc queue start --jobs $SWEEP_JOBS, then wait for the queue.
# Stages whose inputs did not change are not rerun; a setting that already ran is restored from
# DVC's run cache. Compare afterwards with scripts/compare.sh, dvc metrics diff, dvc plots diff.
# SWEEP_TARGET=evaluate: each experiment stops after evaluate (no GGUF export and packaging per experiment).
# SWEEP_POLL_SECONDS (15): how often the queue is looked at while it runs.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/dvc ] && export PATH="$PWD/.venv/bin:$PATH"
export DVC_NO_ANALYTICS=1

if [ $# -eq 0 ]; then
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
fi
if ! git config user.email >/dev/null; then
    echo "sweep: dvc exp run commits experiments to git refs and needs a git identity:" >&2
    echo "       git config user.name 'Your Name'; git config user.email you@example.com" >&2
    exit 2
fi
# `dvc queue status` rows end with the status: Queued, Running, Success or Failed.
if dvc queue status | grep -Eq ' (Queued|Running) *$'; then
    echo "sweep: the experiment queue is busy (dvc queue status); wait for it or dvc queue kill/remove" >&2
    exit 2
fi

overrides=()
for arg in "$@"; do overrides+=(--set-param "$arg"); done
started=$(date +%s)
output=$(dvc exp run --queue "${overrides[@]}" ${SWEEP_TARGET:+"$SWEEP_TARGET"} 2>&1) || { echo "$output" >&2; exit 1; }
echo "$output"
queued=$(echo "$output" | sed -n "s/^Queued experiment '\(.*\)' for future execution.*/\1/p")
[ -n "$queued" ] || { echo "sweep: nothing was queued" >&2; exit 1; }
# One at a time by default: parallel trainings on a small CPU box only fight over its cores.
jobs=${SWEEP_JOBS:-1}
dvc queue start --jobs "$jobs"

status_of_ours() { dvc queue status | grep -wF "$queued" || true; }
# Whether a queue worker of this project is alive: DVC's `dvc exp queue-worker` process, started in the project's
# folder. (`dvc queue status` asks the workers over celery with a 1 s timeout, which a busy worker can miss.)
worker_alive() {
    local proc
    if [ ! -d /proc/self ]; then  # no /proc (macOS): any project's worker counts
        ps -A -o command= | grep -q '[e]xp queue-worker'
        return
    fi
    for proc in /proc/[0-9]*; do
        [ "$proc/cwd" -ef "$PWD" ] || continue
        tr '\0' ' ' <"$proc/cmdline" 2>/dev/null | grep -q 'exp queue-worker' && return 0
    done
    return 1
}
# DVC's worker can shut itself down with experiments still queued (its idle check asks the worker over celery with a
# 1 s timeout, which a busy machine misses), or die and leave an experiment "Running" for good. Either would make
# this loop wait forever: after four looks without a worker (a minute), queued experiments get a new worker, and a
# "Running" one fails the sweep.
without_worker=0
while status_of_ours | grep -Eq ' (Queued|Running) *$'; do
    sleep "${SWEEP_POLL_SECONDS:-15}"
    if worker_alive; then without_worker=0; continue; fi
    without_worker=$((without_worker + 1))
    [ "$without_worker" -ge 4 ] || continue
    if status_of_ours | grep -Eq ' Running *$'; then
        status_of_ours >&2
        echo "sweep: no queue worker is alive, but an experiment above is still Running: it was killed" \
            "(dvc queue logs NAME shows how far it got; dvc queue remove NAME, then run the sweep again)" >&2
        exit 1
    fi
    echo "sweep: the queue worker stopped with experiments still queued; starting it again" >&2
    dvc queue start --jobs "$jobs"
    without_worker=0
done
echo "sweep: $(echo "$queued" | wc -l) experiments finished in $(( $(date +%s) - started )) s"
if status_of_ours | grep -Eq ' Failed *$'; then
    status_of_ours >&2
    echo "sweep: some experiments failed; see dvc queue logs NAME" >&2
    exit 1
fi
bash scripts/compare.sh
