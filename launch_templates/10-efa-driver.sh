#!/bin/bash
# Install the EFA kernel driver (and rdma-core) on the Batch host. The container image
# brings its own libfabric and aws-ofi-nccl; the host only needs the driver so that
# /dev/infiniband/uverbs* exist for the job's containers.
set -euo pipefail

log() { echo "[efa-driver] $*"; }

# /sys/module/efa exists once the module is loaded (AL2023 ships it in-tree); no pipe, so no
# SIGPIPE race under pipefail.
if [ -d /sys/module/efa ]; then
  # Containers see EFA through /dev/infiniband/uverbs*, which ib_uverbs provides.
  modprobe ib_uverbs || log "WARNING: ib_uverbs did not load; containers will see no uverbs devices"
  log "EFA driver already loaded"
  exit 0
fi

workdir=$(mktemp -d)
trap 'rm -rf "$workdir"' EXIT
cd "$workdir"

# The installer is public and versioned by AWS; --minimal installs only the kernel module
# and rdma-core, which is what a container host needs.
for attempt in 1 2 3 4 5; do
  if curl -fsSL --retry 3 -o aws-efa-installer.tar.gz \
      https://efa-installer.amazonaws.com/aws-efa-installer-latest.tar.gz; then
    break
  fi
  log "download failed (attempt ${attempt}); retrying in 10s"
  sleep 10
done
if [ ! -s aws-efa-installer.tar.gz ]; then
  # Fail loudly: cloud-init marks the boot failed and the log says why; NCCL on this node would
  # silently fall back to TCP sockets.
  log "ERROR: could not download the EFA installer; this node has no EFA driver"
  exit 1
fi
tar -xzf aws-efa-installer.tar.gz
cd aws-efa-installer
./efa_installer.sh -y --minimal
log "EFA driver installed: $(modinfo -F version efa 2>/dev/null || echo unknown)"
