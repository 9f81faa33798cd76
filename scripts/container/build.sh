#!/usr/bin/env bash
# Build the repo's Dockerfile without a Docker daemon or Docker Hub (buildah + podman).
#   scripts/container/build.sh [CONTEXT]  # -> localhost/identity-dpo:cpu (CONTEXT: the repo by default)
# Idempotent: installs buildah/podman/runc/debootstrap if missing, makes a Debian bookworm
# Python base image once with debootstrap (cached as localhost/py-base), then builds the image
# with layer caching. State lives in ${CONTAINER_WORK:-/var/tmp/identity-dpo-containers}.
# Environment:
#   INSTALL_DEV=1|0     install requirements-dev.txt (pytest) in the image (default 1: smoke.sh runs tests)
#   TORCH_INDEX_URL     extra index for torch (default empty: the CPU wheel comes from pip's find-links)
#   REBUILD_BASE=1      remake the debootstrap base image
#   DEBIAN_MIRROR       mirror for debootstrap (default: the one in apt's debian.sources)
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
context=$(cd "${1:-$repo}" && pwd)
# shellcheck source=scripts/container/env.sh
. "$repo/scripts/container/env.sh"

need=()
for pkg in buildah podman runc debootstrap; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi

# pip settings of the host: its find-links folder (holds the torch CPU wheel) and the proxy CA.
find_links=${PIP_FIND_LINKS:-$(pip config get global.find-links 2>/dev/null || true)}
cert=${PIP_CERT:-$(pip config get global.cert 2>/dev/null || true)}
cert=${cert:-/etc/ssl/certs/ca-certificates.crt}
torch_index=${TORCH_INDEX_URL:-}
torch_pin=$(sed -n 's/^torch==\([^ ;#]*\).*/\1/p' "$context/requirements.txt")

mounts=()
cpu_wheel=
for dir in $find_links; do  # a space-separated list, like pip's own setting
    [ -d "$dir" ] || continue
    mounts+=(-v "$dir:$dir:ro")
    for whl in "$dir/torch-${torch_pin}+cpu-"*.whl; do
        [ -e "$whl" ] && cpu_wheel=$whl
    done
done
# Without an index that serves CPU wheels, pip must find the CPU wheel on disk, or it would take
# PyPI's multi-GB CUDA build.
if [ -z "$torch_index" ] && [ -z "$cpu_wheel" ]; then
    echo "no torch-${torch_pin}+cpu wheel in find-links ($find_links) and TORCH_INDEX_URL is empty" >&2
    exit 1
fi

t0=$(date +%s)
if [ "${REBUILD_BASE:-0}" = 1 ] || ! podman image exists "$BASE"; then
    # The Debian mirror this machine's apt already uses (DEBIAN_MIRROR overrides it).
    mirror=${DEBIAN_MIRROR:-$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}
    if [ -z "$mirror" ]; then
        echo "no Debian mirror found in /etc/apt/sources.list.d/debian.sources; set DEBIAN_MIRROR" >&2
        exit 1
    fi
    rootfs="$CONTAINER_WORK/rootfs"
    rm -rf "$rootfs"
    debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates,passwd \
        bookworm "$rootfs" "$mirror" >"$CONTAINER_WORK/debootstrap.log" 2>&1 \
        || { tail -20 "$CONTAINER_WORK/debootstrap.log" >&2; exit 1; }
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    # The intercepting proxy's CA: pip inside the build needs it (passed on as PIP_CERT).
    cp "$cert" "$rootfs/etc/ssl/certs/ca-certificates.crt"
    podman rmi -f "$BASE" >/dev/null 2>&1 || true
    tar -C "$rootfs" -c . | podman import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$BASE"
    rm -rf "$rootfs"
    echo "base image $BASE made in $(( $(date +%s) - t0 )) s"
fi

t1=$(date +%s)
buildah bud --isolation chroot --pull=never --layers \
    -f "$context/Dockerfile" -t "$IMAGE" \
    --build-arg BASE_IMAGE="$BASE" \
    --build-arg TORCH_INDEX_URL="$torch_index" \
    --build-arg PIP_FIND_LINKS="$find_links" \
    --build-arg PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    --build-arg INSTALL_DEV="${INSTALL_DEV:-1}" \
    "${mounts[@]}" \
    "$context"
echo "image $IMAGE built in $(( $(date +%s) - t1 )) s"
buildah rm -a >/dev/null
# Drop untagged images left by earlier builds; the layers of the tagged images (the cache) stay.
podman image prune -f >/dev/null
podman images --filter reference="$IMAGE" --filter reference="$BASE"
