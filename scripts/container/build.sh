#!/usr/bin/env bash
# Build the repo's Dockerfile (CPU variant) without a Docker daemon or Docker Hub (buildah + podman).
#   scripts/container/build.sh                  # -> $IMAGE      (localhost/identity-dpo:cpu, the runtime image)
#   scripts/container/build.sh --dev            # -> $TEST_IMAGE (localhost/identity-dpo:cpu-dev, + git and pytest)
#   scripts/container/build.sh --tag T --context DIR   # another tag / build context (default: this repo)
# Idempotent: installs buildah/podman/runc/debootstrap if missing, makes a Debian bookworm Python
# base image once with debootstrap (cached as $BASE, localhost/py-base), then builds with layer
# caching. State lives in ${CONTAINER_WORK:-/var/tmp/identity-dpo-containers}; the seconds spent
# are written to $CONTAINER_WORK/last-build.env (base_seconds, image_seconds).
# Environment:
#   TORCH_INDEX_URL  index for the torch CPU build. Unset: the torch-X+cpu wheel in pip's find-links
#                    when there is one (this project's machines), else the Dockerfile's default
#                    (PyTorch's CPU index).
#   REBUILD_BASE=1   remake the debootstrap base image
#   DEBIAN_MIRROR    mirror for debootstrap (default: the one apt already uses)
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=scripts/container/env.sh
. "$repo/scripts/container/env.sh"

dev=0
context=$repo
tag=
while [ $# -gt 0 ]; do
    case $1 in
        --dev) dev=1 ;;
        --tag) tag=$2; shift ;;
        --context) context=$(cd "$2" && pwd); shift ;;
        *) echo "usage: $0 [--dev] [--tag NAME] [--context DIR]" >&2; exit 2 ;;
    esac
    shift
done
if [ -z "$tag" ]; then
    if [ "$dev" = 1 ]; then tag=$TEST_IMAGE; else tag=$IMAGE; fi
fi

container_tools

# The torch CPU wheel: from pip's find-links folder (mounted read-only into the build) when it
# holds torch-<pin>+cpu, so nothing big is downloaded; otherwise from PyTorch's CPU index.
find_links=$(pip_find_links)
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
torch_args=()
if [ -n "${TORCH_INDEX_URL+set}" ]; then
    torch_args=(--build-arg TORCH_INDEX_URL="$TORCH_INDEX_URL")
elif [ -n "$cpu_wheel" ]; then
    torch_args=(--build-arg TORCH_INDEX_URL=)
    echo "torch: $cpu_wheel (find-links)"
else
    echo "torch: no torch-${torch_pin}+cpu wheel in find-links (${find_links:-none}); using PyTorch's CPU index"
fi

# The host's CA bundle goes into the base image: this machine reaches PyPI through an
# intercepting TLS proxy, and pip in the build is pointed at it (PIP_CERT).
cert=${PIP_CERT:-$(pip config get global.cert 2>/dev/null || true)}
cert=${cert:-/etc/ssl/certs/ca-certificates.crt}

base_seconds=
t0=$(date +%s)
if [ "${REBUILD_BASE:-0}" = 1 ] || ! podman image exists "$BASE"; then
    # The Debian mirror this machine's apt already uses (DEBIAN_MIRROR overrides it).
    mirror=${DEBIAN_MIRROR:-$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}
    mirror=${mirror:-$(awk '$1 == "deb" && $2 ~ /^https?:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)}
    mirror=${mirror:-http://deb.debian.org/debian}
    rootfs="$CONTAINER_WORK/rootfs"
    rm -rf "$rootfs"
    echo "making base image $BASE (debootstrap bookworm from $mirror)"
    debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates,passwd \
        bookworm "$rootfs" "$mirror" >"$CONTAINER_WORK/debootstrap.log" 2>&1 \
        || { tail -20 "$CONTAINER_WORK/debootstrap.log" >&2; echo "debootstrap failed (log: $CONTAINER_WORK/debootstrap.log)" >&2; exit 1; }
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    cp "$cert" "$rootfs/etc/ssl/certs/ca-certificates.crt"
    podman rmi -f "$BASE" >/dev/null 2>&1 || true
    tar -C "$rootfs" -c . | podman import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$BASE" >/dev/null
    rm -rf "$rootfs"
    base_seconds=$(( $(date +%s) - t0 ))
    echo "base image $BASE made in $base_seconds s"
fi

t1=$(date +%s)
buildah bud --isolation chroot --pull=never --layers \
    -f "$context/Dockerfile" -t "$tag" \
    --build-arg BASE_IMAGE="$BASE" \
    "${torch_args[@]}" \
    --build-arg PIP_FIND_LINKS="$find_links" \
    --build-arg PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    --build-arg INSTALL_DEV="$dev" \
    "${mounts[@]}" \
    "$context"
image_seconds=$(( $(date +%s) - t1 ))
echo "image $tag built in $image_seconds s"
printf 'base_seconds=%s\nimage_seconds=%s\n' "$base_seconds" "$image_seconds" > "$CONTAINER_WORK/last-build.env"
buildah rm -a >/dev/null
# Drop dangling images left by earlier builds; the layers under tagged images (the cache) stay.
podman image prune -f >/dev/null
podman images --filter reference="$tag"
