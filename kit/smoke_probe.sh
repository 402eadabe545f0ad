#!/bin/bash
# EFA/NCCL smoke probe: the container command of the multi-node job definition that
# `python -m kit smoke` registers (kit/smoke.py passes this file as `bash -c <text>`).
#
# Every node prints, in delimited sections, what EFA training depends on: the libfabric EFA
# provider (fi_info -p efa), the locked-memory limit, the size of /dev/shm, the uverbs devices
# and the GPUs. The main node then runs nccl-tests' all_reduce_perf across all nodes with Open MPI
# and prints NCCL's INFO log and the bandwidth table; kit/smoke.py judges the main node's log.
#
# Launch: the default image (public.ecr.aws/hpc-cloud/nccl-tests) builds all_reduce_perf with
# MPI=1 and ships Open MPI and OpenSSH, so mpirun starts the remote ranks over ssh. AWS Batch gives
# the nodes no shared key and tells only the children the main node's address
# (AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS), so the nodes wire up first: the main node makes
# a key pair for this job and serves the PUBLIC key on a TCP port; each child starts sshd, fetches
# the key into authorized_keys and reports "ready <index>"; the main node writes an Open MPI
# hostfile from the addresses that reported. The private key never leaves the main node.
# Children then idle: Batch stops them when the main node exits.
#
# Section markers ("==== SMOKE BEGIN <name> ====" ... "==== SMOKE END <name> ====") and the
# key=value lines inside them are parsed by kit/smoke.py: keep the two files in step.
set -euo pipefail

node_index=${AWS_BATCH_JOB_NODE_INDEX:-0}
main_index=${AWS_BATCH_JOB_MAIN_NODE_INDEX:-0}
num_nodes=${AWS_BATCH_JOB_NUM_NODES:-1}
gpus=${SMOKE_GPUS_PER_NODE:-1}
port=${SMOKE_WIREUP_PORT:-7781}
wireup_timeout=${SMOKE_WIREUP_TIMEOUT:-900}
test_timeout=${SMOKE_TEST_TIMEOUT:-900}
# 8 B .. 4 GiB doubling: the large sizes saturate the network, the small ones show latency.
read -r -a test_args <<<"${SMOKE_NCCL_TEST_ARGS:--b 8 -e 4G -f 2 -g 1}"

begin() { echo "==== SMOKE BEGIN $1 ===="; }
end() { echo "==== SMOKE END $1 ===="; }

probe_node() {
  begin node
  echo "hostname=$(hostname)"
  echo "node_index=${node_index} main_node_index=${main_index} num_nodes=${num_nodes} gpus_per_node=${gpus}"
  echo "kernel=$(uname -r)"
  env | grep -E '^(FI_|NCCL_)' | sort || true
  end node

  begin fi_info
  if command -v fi_info >/dev/null 2>&1; then
    fi_info -p efa 2>&1 || echo "fi_info exit status $?"
  else
    echo "fi_info: not found in the image"
  fi
  end fi_info

  begin memlock
  echo "memlock_kib=$(ulimit -l)"
  end memlock

  begin shm
  df -Pk /dev/shm 2>&1 || true
  echo "shm_kib=$(df -Pk /dev/shm 2>/dev/null | awk 'NR == 2 { print $2 }')"
  end shm

  begin uverbs
  shopt -s nullglob
  local devices=(/dev/infiniband/uverbs*)
  shopt -u nullglob
  if ((${#devices[@]})); then
    ls -l "${devices[@]}"
  fi
  echo "uverbs_count=${#devices[@]}"
  end uverbs

  begin gpus
  if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi -L 2>&1 || echo "nvidia-smi exit status $?"
  else
    echo "nvidia-smi: not found"
  fi
  end gpus
}

start_sshd() {
  mkdir -p /run/sshd "${HOME}/.ssh"
  chmod 700 "${HOME}/.ssh"
  ssh-keygen -A >/dev/null
  "$(command -v sshd || echo /usr/sbin/sshd)"
}

child() {
  local main_ip=${AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS:?child node without the main node address}
  local rc=0
  begin wireup
  start_sshd
  python3 - "$main_ip" "$port" "$wireup_timeout" "$node_index" "${HOME}/.ssh/authorized_keys" <<'PY' || rc=$?
import os
import socket
import sys
import time

host, port, timeout, index, keys = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5]
deadline = time.monotonic() + timeout
while True:
    try:
        conn = socket.create_connection((host, port), timeout=10)
        break
    except OSError as exc:
        if time.monotonic() > deadline:
            print(f"wireup=timeout cannot reach the main node {host}:{port} after {timeout:.0f}s: {exc}")
            sys.exit(4)
        time.sleep(5)
with conn:
    conn.settimeout(60)
    key = conn.makefile("r").readline().strip()
    if not key.startswith("ssh-"):
        print(f"wireup=failed the main node sent no public key: {key[:40]!r}")
        sys.exit(4)
    with open(keys, "a", encoding="ascii") as fh:
        fh.write(key + "\n")
    os.chmod(keys, 0o600)
    conn.sendall(f"ready {index}\n".encode())
print(f"wireup=ok registered with the main node {host}:{port}")
PY
  end wireup
  echo "==== SMOKE DONE child=${node_index} exit=${rc} ===="
  if ((rc != 0)); then
    return "$rc"
  fi
  exec sleep infinity
}

main() {
  local workdir key hostfile rc
  workdir=$(mktemp -d)
  key="${workdir}/id_ed25519"
  hostfile="${workdir}/hostfile"
  ssh-keygen -q -t ed25519 -N '' -C kit-smoke -f "$key"

  begin wireup
  rc=0
  python3 - "$port" "$((num_nodes - 1))" "$wireup_timeout" "${key}.pub" "$hostfile" "$gpus" <<'PY' || rc=$?
import socket
import sys
import time

port, expected, timeout = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
pubkey, hostfile, slots = open(sys.argv[4], encoding="ascii").read().strip(), sys.argv[5], sys.argv[6]
deadline = time.monotonic() + timeout
children: dict[int, str] = {}
own_ip = None
server = socket.create_server(("", port))
while len(children) < expected:
    left = deadline - time.monotonic()
    if left <= 0:
        break
    server.settimeout(left)
    try:
        conn, (peer, _) = server.accept()
    except TimeoutError:
        break
    with conn:
        try:
            conn.settimeout(60)
            conn.sendall((pubkey + "\n").encode())
            words = conn.makefile("r").readline().split()
            index = int(words[1]) if len(words) == 2 and words[0] == "ready" else None
        except (OSError, ValueError) as exc:
            print(f"wireup: connection from {peer} failed: {exc}")
            continue
        if index is None:
            print(f"wireup: {peer} did not report ready")
            continue
        children[index] = peer
        own_ip = conn.getsockname()[0]
        print(f"child node {index} at {peer} is ready", flush=True)
if len(children) < expected:
    print(f"wireup=timeout registered={len(children)} expected={expected} after {timeout:.0f}s")
    sys.exit(4)
with open(hostfile, "w", encoding="ascii") as fh:
    fh.write(f"{own_ip or socket.gethostbyname(socket.gethostname())} slots={slots}\n")
    fh.writelines(f"{children[i]} slots={slots}\n" for i in sorted(children))
print(f"wireup=ok nodes={expected + 1}")
PY
  if [ -f "$hostfile" ]; then
    cat "$hostfile"
  fi
  end wireup
  if ((rc != 0)); then
    echo "==== SMOKE DONE exit=${rc} ===="
    return "$rc"
  fi

  begin nccl_tests
  local test_bin mpirun_bin prefix
  test_bin=$(command -v all_reduce_perf || echo /opt/nccl-tests/build/all_reduce_perf)
  mpirun_bin=$(command -v mpirun || true)
  if [ ! -x "$test_bin" ] || [ -z "$mpirun_bin" ]; then
    echo "nccl_tests=missing all_reduce_perf=${test_bin} mpirun=${mpirun_bin:-not found}"
    end nccl_tests
    echo "==== SMOKE DONE exit=5 ===="
    return 5
  fi
  # The remote shells that ssh opens do not read the image's ENV: --prefix finds orted there,
  # and -x forwards the variables NCCL, libfabric and the loader need to every rank.
  prefix=$(dirname "$(dirname "$mpirun_bin")")
  local forward=()
  local var
  for var in $(compgen -e); do
    case $var in
      NCCL_* | FI_* | PATH | LD_LIBRARY_PATH | LD_PRELOAD) forward+=(-x "$var") ;;
    esac
  done
  export OMPI_MCA_btl_tcp_if_exclude=${OMPI_MCA_btl_tcp_if_exclude:-lo,docker0}
  export OMPI_MCA_oob_tcp_if_exclude=${OMPI_MCA_oob_tcp_if_exclude:-lo,docker0}
  rc=0
  timeout --kill-after=30 "$test_timeout" \
    "$mpirun_bin" --allow-run-as-root --prefix "$prefix" --hostfile "$hostfile" \
    -np "$((num_nodes * gpus))" --map-by "ppr:${gpus}:node" --bind-to none \
    --mca plm_rsh_args "-i ${key} -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR" \
    "${forward[@]}" "$test_bin" "${test_args[@]}" 2>&1 || rc=$?
  echo "nccl_tests_exit=${rc}"
  end nccl_tests
  echo "==== SMOKE DONE exit=${rc} ===="
  return "$rc"
}

probe_node
if [ "$node_index" = "$main_index" ]; then
  main
else
  child
fi
