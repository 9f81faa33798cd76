#!/usr/bin/env bash
# The containers' CI, one entry point (.ci/run calls it): builds the repository's Dockerfile and
# runs the pipeline and tests inside it, on a machine without a Docker daemon or Docker Hub, as
# root (installs buildah/podman/runc/debootstrap with apt-get and makes the Debian base image with
# debootstrap when they are missing). Steps:
#   1. build.sh            the CPU runtime image (the Dockerfile's defaults but the local base)
#   2. code-only rebuild   a copy of the repo with one source file changed: the dependency layers
#                          must come from the cache
#   3. cache_check.sh      tiny-model `dvc repro evaluate` in containers (the image has no llama.cpp for
#                          export and package): DVC cache on a named volume (a
#                          second container reruns nothing) and a bind-mounted checkout
#   4. build.sh --dev      the same image plus git and pytest (INSTALL_DEV=1)
#   5. smoke.sh            CPU-only checks and a subset of the quick tests inside that image
#   6. cuda_check.sh       the CUDA variant: args resolve, Dockerfile parses, no CPU fallback
# Prints the seconds of each step and the image sizes, also written to $CONTAINER_WORK/ci-summary.txt.
#   bash scripts/container/ci.sh
# Environment: CONTAINER_TESTS (the pytest arguments of step 5), SKIP_CUDA_CHECK=1.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=scripts/container/env.sh
. "$repo/scripts/container/env.sh"
here="$repo/scripts/container"
summary="$CONTAINER_WORK/ci-summary.txt"
: >"$summary"
note() { echo "$*" | tee -a "$summary"; }
start=$(date +%s)
step_start=$start
step() {  # ends the previous step's clock
    local now
    now=$(date +%s)
    note "  $1: $(( now - step_start )) s"
    step_start=$now
}

echo "== 1/6 CPU runtime image"
base_existed=1
podman image exists "$BASE" 2>/dev/null || base_existed=0
bash "$here/build.sh"
# shellcheck disable=SC1091
. "$CONTAINER_WORK/last-build.env"
if [ "$base_existed" = 0 ]; then
    note "  base image made with debootstrap: ${base_seconds} s"
fi
note "  image build: ${image_seconds} s"
step "step 1, CPU image (with tool installs and base image when missing)"

echo "== 2/6 rebuild after a code-only change (dependency layers from the cache)"
copy="$CONTAINER_WORK/code-change"
rm -rf "$copy"
checkout_copy "$repo" "$copy"
echo "# code-only change $(date +%s)" >> "$copy/src/identity_dpo/__init__.py"
bash "$here/build.sh" --context "$copy" --tag localhost/identity-dpo:code-change \
    >"$CONTAINER_WORK/code-change.log" 2>&1 \
    || { tail -30 "$CONTAINER_WORK/code-change.log"; echo "FAIL: the code-change rebuild failed" >&2; exit 1; }
podman rmi localhost/identity-dpo:code-change >/dev/null
rm -rf "$copy"
# Each STEP line is followed by "--> Using cache ..." when the layer came from the cache.
cached_after() {
    awk -v pat="$1" 'found { print ($0 ~ /^--> Using cache/) ? "cached" : "rebuilt"; exit }
                     /^STEP [0-9]+\/[0-9]+: / && index($0, pat) { found = 1 }' "$CONTAINER_WORK/code-change.log"
}
deps=$(cached_after "RUN torch=")
code=$(cached_after "COPY --chown=1000:1000 src ./src")
echo "  dependency layer: $deps; source layer: $code"
[ "$deps" = cached ] || { echo "FAIL: a code-only change rebuilt the dependency layer" >&2; exit 1; }
[ "$code" = rebuilt ] || { echo "FAIL: the changed source did not reach the image" >&2; exit 1; }
step "step 2, rebuild after a code-only change"

echo "== 3/6 dvc repro evaluate in containers, DVC cache on a volume"
bash "$here/cache_check.sh"
step "step 3, tiny-model dvc repro evaluate x4 (volume and bind mount)"

echo "== 4/6 test image (INSTALL_DEV=1)"
bash "$here/build.sh" --dev
step "step 4, test image"

echo "== 5/6 tests inside the test image"
# Quick tests (seconds): the Dockerfile's own checks (hadolint in the image), params, data, rewriting.
# The tiny-model `dvc repro` already ran in containers in step 3. CONTAINER_TESTS: other test files
# (space-separated), e.g. tests/test_pipeline.py (several minutes more).
quick="tests/test_dockerfile.py tests/test_params.py tests/test_rewrite.py tests/test_names.py tests/test_data.py"
read -r -a tests <<<"${CONTAINER_TESTS:-$quick}"
bash "$here/smoke.sh" -q -ra "${tests[@]}"
step "step 5, tests in the container"

if [ "${SKIP_CUDA_CHECK:-0}" != 1 ]; then
    echo "== 6/6 CUDA variant (stand-in base, no CUDA download)"
    bash "$here/cuda_check.sh"
    step "step 6, CUDA variant check"
fi

size() { podman image inspect --format '{{.Size}}' "$1" | awk '{ printf "%.2f GB (%.0f bytes)", $1 / 1e9, $1 }'; }
note "  image $IMAGE: $(size "$IMAGE")"
note "  image $TEST_IMAGE: $(size "$TEST_IMAGE")"
note "  base $BASE: $(size "$BASE")"
note "container CI passed in $(( $(date +%s) - start )) s"
echo "summary: $summary"
