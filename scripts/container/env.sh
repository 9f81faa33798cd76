# shellcheck shell=bash
# Sourced by the scripts in scripts/container: daemonless container settings (buildah/podman) for
# a host without a Docker engine or Docker Hub. Everything lives under $CONTAINER_WORK, outside
# the repository. Use it by hand too:  . scripts/container/env.sh && podman images

CONTAINER_WORK=${CONTAINER_WORK:-/var/tmp/identity-dpo-containers}
IMAGE=${IMAGE:-localhost/identity-dpo:cpu}              # the runtime image (`docker build .`)
TEST_IMAGE=${TEST_IMAGE:-localhost/identity-dpo:cpu-dev} # the same plus git and pytest (INSTALL_DEV=1)
BASE=${BASE:-localhost/py-base}                         # Debian bookworm + Python, made by debootstrap
# Stands in for the CUDA base in cuda_check.sh (the real one cannot be pulled here).
CUDA_BASE=${CUDA_BASE:-docker.io/nvidia/cuda:13.0.1-base-ubuntu24.04}
CUDA_VARIANT=${CUDA_VARIANT:-cu130}

mkdir -p "$CONTAINER_WORK"

# Own storage and engine config: overlay storage in the work folder; runc (crun fails on this
# host's hybrid cgroups); cgroupfs; explicit ulimits (the defaults cannot be set here).
nofile=$(ulimit -Hn)
cat > "$CONTAINER_WORK/storage.conf" <<CONF
[storage]
driver = "overlay"
runroot = "$CONTAINER_WORK/run"
graphroot = "$CONTAINER_WORK/storage"
CONF
cat > "$CONTAINER_WORK/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
export CONTAINERS_STORAGE_CONF="$CONTAINER_WORK/storage.conf"
export CONTAINERS_CONF="$CONTAINER_WORK/containers.conf"
export BUILDAH_ISOLATION=chroot

# Exits unless image $1 exists, naming the command that makes it ($2).
require_image() {
    podman image exists "$1" || { echo "no image $1: run $2 first" >&2; exit 1; }
}

# Installs the daemonless tools if missing (Debian/Ubuntu host, as root).
container_tools() {
    local need=() pkg
    for pkg in buildah podman runc debootstrap "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || need+=("$pkg")
    done
    if [ ${#need[@]} -gt 0 ]; then
        echo "installing ${need[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    fi
}

# pip's find-links folders of this host (one holds the torch CPU wheel) as read-only build mounts.
pip_find_links() {
    local links
    links=${PIP_FIND_LINKS:-$(pip config get global.find-links 2>/dev/null || true)}
    echo "$links"
}

# Copies the repository's files as git sees them (tracked and new, not ignored) from $1 to $2, as a
# fresh checkout would have them (a copy to change or run without touching the working tree).
checkout_copy() {
    mkdir -p "$2"
    git -C "$1" ls-files -z --cached --others --exclude-standard \
        | (cd "$1" && xargs -0 sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' sh) \
        | tar -C "$1" --null -T - -cf - | tar -C "$2" -xf -
}
