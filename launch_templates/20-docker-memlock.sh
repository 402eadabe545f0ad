#!/bin/bash
# Give every container an unlimited locked-memory limit. EFA and NCCL register (pin) large
# buffers; Docker's default memlock of 64 KiB makes them fail or fall back to TCP, and
# Metaflow's @batch cannot pass ulimits (Netflix/metaflow#2692).
set -euo pipefail

log() { echo "[docker-memlock] $*"; }

sysconfig=/etc/sysconfig/docker
if [ -f "$sysconfig" ] && grep -q -- '--default-ulimit' "$sysconfig"; then
  # The ECS AMIs pass --default-ulimit flags here; Docker refuses to start when the same
  # option is also set in daemon.json, so extend the flags instead.
  if ! grep -q -- 'memlock=' "$sysconfig"; then
    sed -i 's/--default-ulimit /--default-ulimit memlock=-1:-1 --default-ulimit /' "$sysconfig"
  fi
else
  # Merge into daemon.json: the NVIDIA AMI keeps its runtime settings there.
  python3 - <<'PY'
import json, os
path = "/etc/docker/daemon.json"
config = {}
if os.path.exists(path):
    with open(path) as fh:
        config = json.load(fh)
config.setdefault("default-ulimits", {})["memlock"] = {"Name": "memlock", "Hard": -1, "Soft": -1}
with open(path, "w") as fh:
    json.dump(config, fh, indent=2)
PY
fi

# Docker may already be up when cloud-init runs this part; restart it so the limit applies
# to the first job too.
if systemctl is-active --quiet docker; then
  systemctl restart docker
fi
log "memlock unlimited for containers"
