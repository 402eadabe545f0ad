#!/bin/bash
# Install the EFA kernel driver (and rdma-core) on the Batch host. The container image
# brings its own libfabric and aws-ofi-nccl; the host only needs the driver so that
# /dev/infiniband/uverbs* exist for the job's containers.
set -euo pipefail

log() { echo "[efa-driver] $*"; }

if lsmod | grep -q "^efa "; then
  log "EFA driver already loaded; nothing to do"
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
tar -xzf aws-efa-installer.tar.gz
cd aws-efa-installer
./efa_installer.sh -y --minimal
log "EFA driver installed: $(modinfo -F version efa 2>/dev/null || echo unknown)"
