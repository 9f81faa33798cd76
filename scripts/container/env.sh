# shellcheck shell=bash
# Sourced by build.sh and smoke.sh: daemonless container settings (buildah/podman) for a host
# without a Docker engine or Docker Hub. Everything lives under $CONTAINER_WORK, outside the repo.
# Use it by hand too:  . scripts/container/env.sh && podman images

CONTAINER_WORK=${CONTAINER_WORK:-/var/tmp/identity-dpo-containers}
IMAGE=${IMAGE:-localhost/identity-dpo:cpu}
BASE=${BASE:-localhost/py-base}

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
