#!/usr/bin/env bash
# Show, with the runtime image ($IMAGE, built by build.sh), that `dvc repro evaluate` (the image's default
# command: it has no llama.cpp for the export and package stages) in a container is incremental across containers, in the two ways docs/containers.md documents, on a tiny model:
#  1. volume: the image's own copy of the project, the DVC cache on a named volume at
#     /workspace/.dvc/cache. Two fresh containers: the first runs every stage; the second restores
#     from DVC's run cache (kept in the volume) every stage DVC can run-cache, and reruns no other
#     stage than those DVC cannot (a stage with a `cache: false` output that is not a metric or
#     plot, and the stages after it: DVC's own rule, read from dvc.yaml in the container).
#  2. mount: a git checkout bind-mounted at /workspace, run as a host uid that is not the image's
#     (--user 4242:4242). The first container runs every stage up to evaluate; a second, with the image's
#     default command, runs none ("up to date"); outputs and cache (.dvc/cache) are on the host, owned by that uid.
# Offline (--network none). Writes $CONTAINER_WORK/cache-check.env for ci.sh.
#   scripts/container/cache_check.sh
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=scripts/container/env.sh
. "$repo/scripts/container/env.sh"

require_image "$IMAGE" scripts/container/build.sh
work="$CONTAINER_WORK/cache-check"
volume=identity-dpo-cache-check
logs="$work/logs"
cleanup() {
    podman volume rm -f "$volume" >/dev/null 2>&1 || true
    rm -rf "$work/project"
}
trap cleanup EXIT
rm -rf "$work"
mkdir -p "$logs"

ran() { grep -c "^Running stage" "$1" || true; }
restored() { grep -c "is cached - skipping run" "$1" || true; }
fail() { echo "cache_check: FAIL: $*" >&2; exit 1; }
# podman run ... sh -c SCRIPT, output to a log; prints the seconds it took.
timed_run() {
    local log=$1 t0 rc=0
    shift
    t0=$(date +%s)
    podman run --rm --network none -e HF_HUB_OFFLINE=1 -e HF_DATASETS_OFFLINE=1 "$@" >"$log" 2>&1 || rc=$?
    if [ "$rc" -ne 0 ]; then
        tail -30 "$log" >&2
        fail "container exited $rc (log: $log)"
    fi
    echo $(( $(date +%s) - t0 ))
}

echo "== 1. image's copy of the project, DVC cache on the named volume $volume"
podman volume rm -f "$volume" >/dev/null 2>&1 || true
podman volume create "$volume" >/dev/null
# Up to evaluate: the image has no llama.cpp (a long C++ build), so the export and package stages run on
# the host (scripts/setup_export.sh), not here. The count of stages up to evaluate is read from the pipeline.
tiny='python scripts/container/tiny_params.py && dvc repro evaluate'
upto='python -c "import networkx as nx; from dvc.repo import Repo; g = Repo().index.graph; s = [n for n in g if getattr(n, \"name\", None) == \"evaluate\"][0]; print(\"stages-up-to-evaluate\", 1 + len(nx.descendants(g, s)))"'
v1=$(timed_run "$logs/volume-1.log" -v "$volume:/workspace/.dvc/cache" "$IMAGE" sh -ec "$tiny && $upto")
v1_ran=$(ran "$logs/volume-1.log")
n=$(sed -n 's/^stages-up-to-evaluate //p' "$logs/volume-1.log")
echo "container 1: ran $v1_ran stages in $v1 s"
[ "$v1_ran" -eq "$n" ] || { cat "$logs/volume-1.log"; fail "the first container ran $v1_ran of $n stages"; }
# The stages DVC will not run-cache (its rule in dvc/stage/__init__.py: an output with
# `cache: false` that is neither a metric nor a plot), and every stage downstream of them.
no_run_cache='python - <<EOF
import networkx as nx
from dvc.repo import Repo
index = Repo().index
stages = [s for s in index.stages if s.cmd]
blocked = {s for s in stages if any(not o.use_cache for o in s.outs if not (o.is_metric or o.is_plot))}
for s in stages:
    if s in blocked or blocked & set(nx.descendants(index.graph, s)):
        print("no-run-cache", s.name)
EOF'
v2=$(timed_run "$logs/volume-2.log" -v "$volume:/workspace/.dvc/cache" "$IMAGE" sh -ec "$tiny && $no_run_cache")
v2_ran=$(ran "$logs/volume-2.log")
v2_restored=$(restored "$logs/volume-2.log")
echo "container 2: ran $v2_ran stages, restored $v2_restored from the run cache, in $v2 s"
grep -E "^(Running stage|Stage '.*' is cached)" "$logs/volume-2.log" | sed 's/^/    /'
may_rerun=$(sed -n 's/^no-run-cache //p' "$logs/volume-2.log" | sort | tr '\n' ' ')
reran=$(sed -n "s/^Running stage '\(.*\)':.*/\1/p" "$logs/volume-2.log" | sort | tr '\n' ' ')
for stage in $reran; do
    case " $may_rerun " in
        *" $stage "*) ;;
        *) fail "the second container reran $stage; only [${may_rerun% }] may rerun (log: $logs/volume-2.log)" ;;
    esac
done
[ $((v2_ran + v2_restored)) -eq "$n" ] || fail "the second container ran $v2_ran and restored $v2_restored of $n stages"
if [ -n "$may_rerun" ]; then
    echo "    note: DVC cannot run-cache [${may_rerun% }] (an output with cache: false that is not a"
    echo "    metric or plot, or downstream of one): those rerun in a fresh container; every other stage came"
    echo "    from the volume. A mounted checkout (below) reruns nothing."
fi

echo "== 2. git checkout bind-mounted at /workspace, run as uid 4242"
project="$work/project"
checkout_copy "$repo" "$project"
git -C "$project" init -q
git -C "$project" add -A
git -C "$project" -c user.name=check -c user.email=check@example.com commit -qm checkout
chown -R 4242:4242 "$project"
mount=(--user 4242:4242 -v "$project:/workspace")
m1=$(timed_run "$logs/mount-1.log" "${mount[@]}" "$IMAGE" sh -ec "$tiny")
m1_ran=$(ran "$logs/mount-1.log")
echo "container 1: ran $m1_ran stages in $m1 s"
[ "$m1_ran" -eq "$n" ] || { cat "$logs/mount-1.log"; fail "the first container ran $m1_ran of $n stages"; }
m2=$(timed_run "$logs/mount-2.log" "${mount[@]}" "$IMAGE")  # the image's CMD: dvc repro evaluate
m2_ran=$(ran "$logs/mount-2.log")
echo "container 2: ran $m2_ran stages in $m2 s: $(tail -1 "$logs/mount-2.log")"
[ "$m2_ran" -eq 0 ] || { cat "$logs/mount-2.log"; fail "the second container reran $m2_ran stages"; }
grep -q "up to date" "$logs/mount-2.log" || fail "the second container did not say 'up to date'"
for out in models/trained/model.safetensors metrics/eval.json dvc.lock .dvc/cache; do
    [ -e "$project/$out" ] || fail "$out missing on the host"
    owner=$(stat -c %u "$project/$out")
    [ "$owner" = 4242 ] || fail "$out on the host is owned by uid $owner, not 4242"
done
echo "outputs and .dvc/cache on the host, owned by uid 4242"

cat > "$CONTAINER_WORK/cache-check.env" <<ENV
volume_first_seconds=$v1
volume_first_ran=$v1_ran
volume_second_seconds=$v2
volume_second_ran=$v2_ran
volume_second_restored=$v2_restored
volume_second_may_rerun="${may_rerun% }"
mount_first_seconds=$m1
mount_first_ran=$m1_ran
mount_second_seconds=$m2
mount_second_ran=$m2_ran
ENV
echo "cache check passed ($n stages, up to evaluate)"
