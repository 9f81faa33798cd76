#!/usr/bin/env bash
# What can be checked of the CUDA variant on a machine that cannot pull its base image nor reach
# PyTorch's CUDA index (the README's GPU build: --build-arg BASE_IMAGE=nvidia/cuda:... and
# --build-arg TORCH_VARIANT=cu130).
#
# A stand-in for the CUDA base is made from the local Debian base ($BASE, build.sh) and tagged with
# the CUDA base's own name ($CUDA_BASE): Python removed and a uid-1000 user "ubuntu" added, as in
# nvidia/cuda:*-ubuntu24.04 (no Python, Ubuntu's default user). Then the repository's Dockerfile is
# built with the CUDA build args and the torch CPU wheel in pip's find-links (PyPI is reachable but
# has no +cu130 build; download.pytorch.org is not reachable from here). Checked:
#   - the Dockerfile parses and FROM resolves to $CUDA_BASE with these args (no pull: --pull=never);
#   - its first layer installs Python from the base's apt and moves the uid-1000 user aside;
#   - the torch step asks for torch==<requirements.txt pin>+$CUDA_VARIANT from
#     https://download.pytorch.org/whl/$CUDA_VARIANT, and fails rather than take the CPU wheel
#     that lies in find-links (so a CUDA image can never silently be a CPU one).
# Not checked (cannot be here): the CUDA wheels' download and install, the real nvidia/cuda base,
# and a GPU run (--gpus all).
#   scripts/container/cuda_check.sh
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=scripts/container/env.sh
. "$repo/scripts/container/env.sh"

require_image "$BASE" scripts/container/build.sh
fail() { echo "cuda_check: FAIL: $*" >&2; exit 1; }
work="$CONTAINER_WORK/cuda-check"
rm -rf "$work"
mkdir -p "$work"
log="$work/build.log"

echo "== stand-in for $CUDA_BASE (from $BASE: no Python, a uid-1000 user 'ubuntu')"
cat > "$work/Containerfile" <<EOF
FROM $BASE
RUN apt-get purge -y --auto-remove 'python3*' 'libpython3*' >/dev/null \\
 && ! command -v python3 \\
 && useradd --create-home --uid 1000 --user-group ubuntu
EOF
buildah bud --isolation chroot --pull=never --layers -q -t "$CUDA_BASE" -f "$work/Containerfile" "$work" >/dev/null

torch_pin=$(sed -n 's/^torch==\([^ ;#]*\).*/\1/p' "$repo/requirements.txt")
find_links=$(pip_find_links)
mounts=()
for dir in $find_links; do
    [ -d "$dir" ] && mounts+=(-v "$dir:$dir:ro")
done
echo "== build the Dockerfile with BASE_IMAGE=$CUDA_BASE TORCH_VARIANT=$CUDA_VARIANT (expected to stop at torch)"
rc=0
buildah bud --isolation chroot --pull=never --layers \
    -f "$repo/Dockerfile" -t localhost/identity-dpo:cuda-check \
    --build-arg BASE_IMAGE="$CUDA_BASE" \
    --build-arg TORCH_VARIANT="$CUDA_VARIANT" \
    --build-arg PIP_FIND_LINKS="$find_links" \
    --build-arg PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    "${mounts[@]}" \
    "$repo" >"$log" 2>&1 || rc=$?
buildah rm -a >/dev/null
podman rmi -f localhost/identity-dpo:cuda-check >/dev/null 2>&1 || true

show() { grep -E "$1" "$log" | head -"${2:-1}" | sed 's/^/    /'; }
show "^STEP 1/"
grep -q "^STEP 1/[0-9]*: FROM $CUDA_BASE\$" "$log" || fail "FROM did not resolve to $CUDA_BASE (log: $log)"
grep -qE "(Setting up|Unpacking) python3-venv" "$log" || fail "the first layer did not install Python from apt (log: $log)"
echo "    Python installed from the base's apt; user 'ubuntu' (uid 1000) replaced by 'identity'"
expected="torch ${torch_pin}+${CUDA_VARIANT} from https://download.pytorch.org/whl/${CUDA_VARIANT}"
show "^torch .* from "
grep -qxF "$expected" "$log" || fail "the torch step did not ask for: $expected (log: $log)"
[ "$rc" -ne 0 ] || fail "the CUDA build succeeded here, which it cannot without PyTorch's CUDA index"
grep -q "Successfully installed.*torch-" "$log" && fail "a torch build was installed (log: $log)"
show "No matching distribution found for torch"
grep -q "No matching distribution found for torch==${torch_pin}+${CUDA_VARIANT}" "$log" \
    || { tail -20 "$log" >&2; fail "the build failed, but not for want of torch+${CUDA_VARIANT}"; }
echo "cuda check passed: the CUDA variant parses, resolves its args and refuses the CPU wheel;"
echo "its torch download and a GPU run were not verified here"
