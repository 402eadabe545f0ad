"""`python -m kit smoke`: run an EFA/NCCL smoke test on a deployed queue and say whether multi-node
training will get EFA bandwidth, and if not, why.

    python -m kit smoke --stack metaflow-multinode --queue train [--nodes 2] [--image IMAGE]
                        [--wait] [--timeout 3600] [--poll-interval 15] [--attach JOB_ID] [--region R]

What it does:

1. Reads the stack's outputs (stacks.outputs.parse_outputs): the queue's ARN, EfaInterfaces,
   GpusPerNode, InstanceType and MaxNodes.
2. Registers a multi-node job definition `kit-efa-smoke-<stack>-<queue>` once: an ACTIVE revision
   whose type, nodeProperties, retry strategy, timeout and platform are equal to what this command
   would register is reused; only a difference (another image, node count, probe script, instance
   type...) makes a new revision. The definition is what a healthy EFA job needs (aws-facts.md, EFA):
   numNodes = --nodes (2..MaxNodes), main node 0, one node range "0:" with the image, the
   vCPUs/memory/shared memory that `metaflow-config` prints for this instance type (the catalog's
   figures minus headroom for the ECS agent, kit/metaflow_config.batch_resources), GPU = GpusPerNode,
   the devices /dev/infiniband/uverbs0..N-1 with N = EfaInterfaces (what Metaflow adds for
   @batch(efa=N)), memlock unlimited, FI_PROVIDER=efa, FI_EFA_USE_DEVICE_RDMA=1 on p4d and newer
   P instances, NCCL_DEBUG=INFO and NCCL_SOCKET_IFNAME without docker/lo/veth interfaces.
3. Submits it to the queue. The container runs kit/smoke_probe.sh: every node prints fi_info,
   `ulimit -l`, the size of /dev/shm, its uverbs devices and GPUs; the main node wires the nodes
   up over ssh and runs nccl-tests' all_reduce_perf across all of them with mpirun.
4. With --wait: prints status transitions on stderr (polling DescribeJobs every --poll-interval
   seconds, at most --timeout seconds), then reads the main node's log (CloudWatch Logs
   /aws/batch/job, stream from DescribeJobs of `<jobId>#0`) and prints a verdict (`judge`).
   Without --wait it prints the job id and the command that attaches to it later (--attach).

Default image: public.ecr.aws/hpc-cloud/nccl-tests:latest, published by AWS's
awsome-distributed-training project (micro-benchmarks/nccl-tests): CUDA, the EFA installer's
libfabric and Open MPI, aws-ofi-nccl, NCCL, and nccl-tests built with MPI=1 under
/opt/nccl-tests/build, plus OpenSSH. `latest` moves: pass --image with a fixed tag (or your own
ECR copy) for repeatable runs. Any --image must provide bash, python3, ssh/sshd, ssh-keygen,
mpirun (Open MPI) and all_reduce_perf built with MPI=1; the image's libfabric and aws-ofi-nccl are
what the test judges.

Verdict thresholds (named constants below): /dev/shm at least MIN_SHM_MIB; bus bandwidth at least
MIN_BANDWIDTH_SHARE of the sum of the instance's network-card peak bandwidth (stacks/catalog.py).

Exit codes: 0 PASS (or submitted without --wait), 1 FAIL or the job failed, 2 cannot start (no such
stack or queue, --nodes out of range, no credentials), 3 --timeout reached before the job ended,
130 interrupted while waiting (the job keeps running; --attach finds it again).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from kit.aws_errors import describe_aws_error
from stacks.catalog import InstanceFacts, load_catalog
from stacks.outputs import QueueOutputs, StackOutputs

DEFAULT_IMAGE = "public.ecr.aws/hpc-cloud/nccl-tests:latest"
PROBE_PATH = Path(__file__).with_name("smoke_probe.sh")
LOG_GROUP = "/aws/batch/job"  # where Batch sends container output unless a job sets logConfiguration
JOB_NAME_PREFIX = "kit-efa-smoke"

MIN_NODES = 2  # one node never leaves the host: EFA and the network are not exercised
DEFAULT_TIMEOUT = 3600
DEFAULT_POLL = 15  # DescribeJobs is cheap, but Batch status moves in tens of seconds
RUNNABLE_HINT_AFTER = 600

# Inside the job. The main node waits WIREUP_SECONDS for the children (Batch starts them only after
# the main node runs, and each pulls a multi-GB image), then gives all_reduce_perf TEST_SECONDS
# before calling it hung. The job's own timeout covers both plus image pull, so a hung test never
# keeps N GPU instances busy for longer (attemptDurationSeconds counts for the whole MNP job).
WIREUP_SECONDS = 900
TEST_SECONDS = 900
JOB_ATTEMPT_SECONDS = 2700

# Docker gives containers 64 MiB of /dev/shm. NCCL's shared-memory transport between the GPU
# processes of one node needs several MiB per peer and channel and fails ("Error while creating
# shared memory segment") well before 1 GiB with 8 GPUs; anything below that is the Docker default
# or a typo, not a deliberate size.
MIN_SHM_MIB = 1024

# nccl-tests' bus bandwidth is normalised to the slowest link a collective crosses; across nodes that
# is the node's network, so a healthy EFA all-reduce on 2+ nodes reaches 80-120 % of the sum of the
# network cards' peak (NCCL overlaps NVLink and network traffic, hence >100 % on some types). Half
# the cards' EFA interfaces, TCP sockets or nodes spread outside one placement group land at or
# below ~50 %; 0.5 separates the two with margin for NCCL versions and message-size tuning.
MIN_BANDWIDTH_SHARE = 0.5

TERMINAL = ("SUCCEEDED", "FAILED")
EXIT_PASS, EXIT_FAIL, EXIT_SETUP, EXIT_TIMEOUT, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class SmokeError(Exception):
    """The command cannot start; the message is the one line the user sees (exit 2)."""


# --- job definition ------------------------------------------------------------------------------


def load_probe(path: Path = PROBE_PATH) -> str:
    return path.read_text(encoding="utf-8")


def efa_rdma_supported(instance_type: str) -> bool:
    """EFA RDMA read/write (GPUDirect RDMA) exists on p4d/p4de and every later P generation
    (p5, p5e, p5en, p6-b200, ...). libfabric refuses FI_EFA_USE_DEVICE_RDMA=1 on devices without it."""
    match = re.match(r"p(\d+)", instance_type.split(".", 1)[0])
    return match is not None and int(match.group(1)) >= 4


def _sanitize(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "-", name)


def job_definition_name(stack_name: str, queue_name: str) -> str:
    # Batch: up to 128 letters, numbers, hyphens and underscores.
    return _sanitize(f"{JOB_NAME_PREFIX}-{stack_name}-{queue_name}")[:128]


def uverbs_devices(count: int) -> list[dict[str, Any]]:
    # What Metaflow adds for @batch(efa=N) on a multi-node step (aws-facts.md, EFA): one device per
    # EFA interface, the same path inside the container, READ/WRITE/MKNOD.
    return [
        {
            "hostPath": f"/dev/infiniband/uverbs{i}",
            "containerPath": f"/dev/infiniband/uverbs{i}",
            "permissions": ["READ", "WRITE", "MKNOD"],
        }
        for i in range(count)
    ]


def smoke_environment(instance_type: str, gpus_per_node: int) -> list[dict[str, str]]:
    env = {
        "FI_PROVIDER": "efa",
        "NCCL_DEBUG": "INFO",
        # "^" excludes by prefix: Docker's bridge, loopback and the ECS agent's veth pair carry no
        # traffic between nodes; NCCL's bootstrap must use the task ENI.
        "NCCL_SOCKET_IFNAME": "^docker,lo,veth",
        "SMOKE_GPUS_PER_NODE": str(gpus_per_node),
        "SMOKE_WIREUP_TIMEOUT": str(WIREUP_SECONDS),
        "SMOKE_TEST_TIMEOUT": str(TEST_SECONDS),
    }
    if efa_rdma_supported(instance_type):
        env["FI_EFA_USE_DEVICE_RDMA"] = "1"
    return [{"name": k, "value": v} for k, v in sorted(env.items())]


def build_job_definition(
    stack_name: str, queue: QueueOutputs, facts: InstanceFacts, nodes: int, image: str, probe: str
) -> dict[str, Any]:
    """The RegisterJobDefinition request (boto3 keyword arguments)."""
    from kit.metaflow_config import batch_resources

    # The same cpu/memory/shared_memory `metaflow-config` prints for @batch on this queue, so the
    # smoke test runs the shape the training steps will use. Shared memory is a quarter of the job's
    # memory (hundreds of GiB on p5): tmpfs pages count only once written, and NCCL plus PyTorch
    # DataLoader workers use /dev/shm heavily.
    res = batch_resources(facts)
    container = {
        "image": image,
        "command": ["bash", "-c", probe, "kit-smoke-probe"],
        "instanceType": queue.instance_type,
        "resourceRequirements": [
            {"type": "GPU", "value": str(queue.gpus_per_node)},
            {"type": "MEMORY", "value": str(res.memory)},
            {"type": "VCPU", "value": str(res.cpu)},
        ],
        "linuxParameters": {"devices": uverbs_devices(queue.efa_interfaces), "sharedMemorySize": res.shared_memory},
        # A job definition can set memlock itself; Metaflow cannot (Netflix/metaflow#2692), which is
        # why the launch template also sets Docker's default. -1 = unlimited.
        "ulimits": [{"name": "memlock", "softLimit": -1, "hardLimit": -1}],
        "environment": smoke_environment(queue.instance_type, queue.gpus_per_node),
    }
    return {
        "jobDefinitionName": job_definition_name(stack_name, queue.name),
        "type": "multinode",
        "nodeProperties": {
            "numNodes": nodes,
            "mainNode": 0,
            "nodeRangeProperties": [{"targetNodes": "0:", "container": container}],
        },
        "retryStrategy": {"attempts": 1},  # a failed smoke test should be read, not retried
        "timeout": {"attemptDurationSeconds": JOB_ATTEMPT_SECONDS},
        "platformCapabilities": ["EC2"],
        "tags": {"kit:purpose": "efa-smoke", "kit:stack": stack_name, "kit:queue": queue.name},
    }


# Keys of a job definition that decide what runs; tags and revision bookkeeping do not.
COMPARED_KEYS = ("type", "nodeProperties", "retryStrategy", "timeout", "platformCapabilities")
# Lists whose order AWS does not promise to keep.
_UNORDERED = frozenset({"environment", "resourceRequirements", "ulimits", "permissions", "platformCapabilities"})


def _canonical(value: Any, key: str = "") -> Any:
    if isinstance(value, Mapping):
        return {k: _canonical(v, k) for k, v in value.items()}
    if isinstance(value, list):
        items = [_canonical(v) for v in value]
        return sorted(items, key=lambda v: json.dumps(v, sort_keys=True)) if key in _UNORDERED else items
    return value


def _empty(value: Any) -> bool:
    return value is None or value == [] or value == {} or value == "" or value is False


def _same(want: Any, have: Any) -> bool:
    """`have` (as DescribeJobDefinitions returns it) runs the same thing as `want`: every key we set
    is equal, and any key AWS added is an empty default (volumes: [], secrets: [], ...)."""
    if isinstance(want, Mapping):
        if not isinstance(have, Mapping):
            return False
        if not all(_same(v, have.get(k)) for k, v in want.items()):
            return False
        return all(_empty(v) for k, v in have.items() if k not in want)
    if isinstance(want, list):
        return isinstance(have, list) and len(want) == len(have) and all(map(_same, want, have))
    return bool(want == have)


def same_definition(want: Mapping[str, Any], have: Mapping[str, Any]) -> bool:
    return all(_same(_canonical(want.get(k), k), _canonical(have.get(k), k)) for k in COMPARED_KEYS)


def find_reusable(definitions: Iterable[Mapping[str, Any]], want: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The newest ACTIVE revision equal to `want`, if any."""
    candidates = [d for d in definitions if d.get("status") == "ACTIVE" and same_definition(want, d)]
    return max(candidates, key=lambda d: int(d.get("revision", 0)), default=None)


def ensure_job_definition(batch: Any, want: Mapping[str, Any]) -> tuple[str, bool]:
    """(ARN, reused?) of a job definition equal to `want`, registering one only when none is."""
    existing: list[dict[str, Any]] = []
    paginator = batch.get_paginator("describe_job_definitions")
    for page in paginator.paginate(jobDefinitionName=want["jobDefinitionName"], status="ACTIVE"):
        existing.extend(page["jobDefinitions"])
    found = find_reusable(existing, want)
    if found is not None:
        return str(found["jobDefinitionArn"]), True
    return str(batch.register_job_definition(**want)["jobDefinitionArn"]), False


def submit(batch: Any, queue: QueueOutputs, job_definition_arn: str, stack_name: str) -> str:
    response = batch.submit_job(
        jobName=_sanitize(f"{JOB_NAME_PREFIX}-{queue.name}")[:128],
        jobQueue=queue.job_queue_arn,
        jobDefinition=job_definition_arn,
        tags={"kit:purpose": "efa-smoke", "kit:stack": stack_name, "kit:queue": queue.name},
    )
    return str(response["jobId"])


# --- waiting and logs ----------------------------------------------------------------------------


def describe_job(batch: Any, job_id: str) -> dict[str, Any] | None:
    jobs = batch.describe_jobs(jobs=[job_id])["jobs"]
    return dict(jobs[0]) if jobs else None


def wait_for_job(
    batch: Any,
    job_id: str,
    *,
    timeout: float,
    poll: float,
    err: TextIO,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any] | None:
    """Poll until the job is SUCCEEDED or FAILED; the final description, or None at `timeout`.
    Each change of status (or status reason) goes to `err` with the seconds waited."""
    start = clock()
    last: tuple[str, str] | None = None
    hinted = False
    while True:
        job = describe_job(batch, job_id)
        if job is None:
            raise SmokeError(f"job {job_id} not found (it may be older than Batch's 7-day history)")
        status, reason = str(job.get("status")), str(job.get("statusReason") or "")
        elapsed = clock() - start
        if (status, reason) != last:
            print(f"[{elapsed:5.0f}s] job {job_id}: {status}" + (f" - {reason}" if reason else ""), file=err)
            last = (status, reason)
        if status in TERMINAL:
            return job
        if status == "RUNNABLE" and elapsed >= RUNNABLE_HINT_AFTER and not hinted:
            print(
                f"        still RUNNABLE after {elapsed / 60:.0f} min: Batch is waiting for all nodes' capacity in "
                "one placement group (check `python -m kit doctor`, the CE's maxvCpus, or a capacity reservation)",
                file=err,
            )
            hinted = True
        left = timeout - elapsed
        if left <= 0:
            return None
        sleep(min(poll, left))


def _stream_of(job: Mapping[str, Any]) -> str | None:
    stream = (job.get("container") or {}).get("logStreamName")
    if stream:
        return str(stream)
    for attempt in reversed(job.get("attempts") or []):
        stream = (attempt.get("container") or {}).get("logStreamName")
        if stream:
            return str(stream)
    return None


def main_node_log_stream(batch: Any, job: Mapping[str, Any]) -> str | None:
    """The main node's CloudWatch stream: a multi-node job's nodes are described as `<jobId>#<index>`."""
    main = int((job.get("nodeProperties") or {}).get("mainNode", 0))
    node = describe_job(batch, f"{job['jobId']}#{main}")
    for candidate in (node, job):
        stream = _stream_of(candidate) if candidate else None
        if stream:
            return stream
    return None


def read_log(logs: Any, stream: str, group: str = LOG_GROUP, max_events: int = 500_000) -> str | None:
    """The whole stream as text, oldest first; None when it does not exist."""
    from botocore.exceptions import ClientError

    lines: list[str] = []
    token: str | None = None
    while len(lines) < max_events:
        kwargs: dict[str, Any] = {"logGroupName": group, "logStreamName": stream, "startFromHead": True}
        if token:
            kwargs["nextToken"] = token
        try:
            page = logs.get_log_events(**kwargs)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                return None
            raise
        lines.extend(str(e.get("message", "")).rstrip("\n") for e in page.get("events", []))
        # GetLogEvents has no paginator; the end is when the forward token stops changing.
        if page.get("nextForwardToken") in (None, token):
            break
        token = page["nextForwardToken"]
    return "\n".join(lines)


# --- verdict -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    nodes: int
    gpus_per_node: int
    efa_interfaces: int
    instance_type: str
    network_cards: int | None  # None: the instance type is not in the catalog
    peak_gbps: float | None

    @classmethod
    def for_queue(cls, queue: QueueOutputs, nodes: int, facts: InstanceFacts | None) -> Expected:
        return cls(
            nodes=nodes,
            gpus_per_node=queue.gpus_per_node,
            efa_interfaces=queue.efa_interfaces,
            instance_type=queue.instance_type,
            network_cards=len(facts.network_cards) if facts else None,
            peak_gbps=facts.total_peak_gbps if facts else None,
        )


@dataclass(frozen=True)
class Check:
    status: str  # PASS / FAIL / SKIP
    title: str
    detail: str
    cause: str = ""


@dataclass(frozen=True)
class ProbeLog:
    sections: dict[str, list[str]]
    done: str | None  # the text after "SMOKE DONE", None when the probe did not finish

    def text(self, name: str) -> str | None:
        lines = self.sections.get(name)
        return None if lines is None else "\n".join(lines)

    def value(self, name: str, key: str) -> str | None:
        match = re.search(rf"(?:^|\s){re.escape(key)}=(\S*)", self.text(name) or "")
        return match.group(1) if match else None


_BEGIN = re.compile(r"^==== SMOKE BEGIN (\w+) ====$")
_END = re.compile(r"^==== SMOKE END (\w+) ====$")
_DONE = re.compile(r"^==== SMOKE DONE (.*) ====$")
# mpirun --tag-output / --output-filename prefixes, in case an image's wrapper adds them.
_TAG = re.compile(r"^\[\d+,\d+\]<std(?:out|err)>:\s?")


def parse_probe_log(text: str) -> ProbeLog:
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    done = None
    for raw in text.splitlines():
        line = _TAG.sub("", raw.rstrip())
        if m := _BEGIN.match(line):
            current = None if m.group(1) in sections else sections.setdefault(m.group(1), [])
        elif _END.match(line):
            current = None
        elif m := _DONE.match(line):
            done = done or m.group(1)
            current = None
        elif current is not None:
            current.append(line)
    return ProbeLog(sections, done)


@dataclass(frozen=True)
class AllReduce:
    rows: int
    peak_busbw: float | None  # GB/s, the best out-of-place or in-place figure
    avg_busbw: float | None  # GB/s, nccl-tests' "# Avg bus bandwidth" (all sizes, small ones included)
    ranks: int
    hosts: int
    wrong: bool


_ROW = re.compile(r"^\s*(\d+)\s+(\d+)\s+[A-Za-z]\w*\s+[A-Za-z]\w*\s+(.+)$")
_RANK = re.compile(r"^#\s*Rank\s+(\d+)\s+Group\s+\d+\s+Pid\s+\d+\s+on\s+(\S+)")
_AVG = re.compile(r"^#\s*Avg bus bandwidth\s*:\s*([0-9.]+)")
_OUT_OF_BOUNDS = re.compile(r"^#\s*Out of bounds values\s*:\s*(\d+)\s*(\w+)")


def parse_all_reduce(text: str) -> AllReduce:
    """nccl-tests' table: per size `... time algbw busbw #wrong time algbw busbw #wrong` (out-of-place
    then in-place; newer versions add a root column before them)."""
    best: float | None = None
    avg: float | None = None
    rows = 0
    ranks: set[int] = set()
    hosts: set[str] = set()
    wrong = False
    for line in text.splitlines():
        if m := _RANK.match(line):
            ranks.add(int(m.group(1)))
            hosts.add(m.group(2))
        elif m := _AVG.match(line):
            avg = float(m.group(1))
        elif m := _OUT_OF_BOUNDS.match(line):
            wrong = wrong or int(m.group(1)) > 0 or m.group(2).upper() != "OK"
        elif m := _ROW.match(line):
            fields = m.group(3).split()
            if len(fields) < 8:
                continue
            try:
                busbw = [float(fields[-6]), float(fields[-2])]
            except ValueError:
                continue
            rows += 1
            best = max([*busbw, best or 0.0])
    return AllReduce(rows, best, avg, len(ranks), len(hosts), wrong)


NO_UVERBS_CAUSE = (
    "no EFA device reached the container: the launch template has no EFA interfaces, the job definition "
    "lacks the /dev/infiniband/uverbs* devices (Metaflow: @batch(efa=N)), or the EFA kernel driver is missing "
    "on the host (launch template user data 10-efa-driver.sh, or an AMI without it)"
)
MEMLOCK_CAUSE = (
    "the host's Docker default ulimit (launch template user data 20-docker-memlock.sh) was not applied, and "
    "Metaflow jobs cannot set ulimits themselves (Netflix/metaflow#2692): check the instance's user-data log"
)
SHM_CAUSE = (
    "Docker's default /dev/shm is 64 MiB; NCCL's shared-memory transport needs more: set sharedMemorySize "
    "(Metaflow: @batch(shared_memory=...), see `python -m kit metaflow-config`)"
)
SG_CAUSE = (
    "the nodes cannot reach each other: the security group needs an all-traffic rule from itself inbound AND "
    "to itself outbound (aws-facts.md, EFA); `python -m kit doctor` checks it"
)


def _check_uverbs(log: ProbeLog, exp: Expected) -> Check:
    title = "EFA devices"
    raw = log.value("uverbs", "uverbs_count")
    if raw is None or not raw.isdigit():
        return Check("FAIL", title, "the probe printed no uverbs section", "see the main node's log")
    count = int(raw)
    if count == exp.efa_interfaces:
        return Check("PASS", title, f"{count} /dev/infiniband/uverbs* devices (EfaInterfaces {exp.efa_interfaces})")
    if count == 0:
        return Check(
            "FAIL", title, f"no /dev/infiniband/uverbs* device (expected {exp.efa_interfaces})", NO_UVERBS_CAUSE
        )
    return Check(
        "FAIL",
        title,
        f"{count} /dev/infiniband/uverbs* devices, expected {exp.efa_interfaces}",
        "the launch template's EFA interfaces and the job's devices disagree (Metaflow: efa= must equal the "
        "stack's EfaInterfaces output), or the host's EFA driver exposes fewer devices",
    )


def _check_fi_info(log: ProbeLog) -> Check:
    title = "libfabric EFA provider"
    text = log.text("fi_info")
    if text is None:
        return Check("FAIL", title, "the probe printed no fi_info section", "see the main node's log")
    if re.search(r"^\s*provider:\s*efa\b", text, re.MULTILINE):
        return Check("PASS", title, "`fi_info -p efa` lists the efa provider")
    if "not found in the image" in text:
        return Check(
            "FAIL",
            title,
            "fi_info is not in the image",
            "the image lacks the EFA installer's libfabric (and most likely aws-ofi-nccl): use the default image "
            f"{DEFAULT_IMAGE} or build on one with EFA support",
        )
    first = next((line.strip() for line in text.splitlines() if line.strip()), "no output")
    return Check("FAIL", title, f"`fi_info -p efa` finds no EFA provider ({first[:80]})", NO_UVERBS_CAUSE)


def _check_memlock(log: ProbeLog) -> Check:
    title = "locked memory (ulimit -l)"
    raw = log.value("memlock", "memlock_kib")
    if raw is None:
        return Check("FAIL", title, "the probe printed no memlock section", "see the main node's log")
    if raw == "unlimited":
        return Check("PASS", title, "unlimited")
    return Check("FAIL", title, f"{raw} KiB, EFA needs unlimited to register (pin) its buffers", MEMLOCK_CAUSE)


def _check_shm(log: ProbeLog) -> Check:
    title = "/dev/shm size"
    raw = log.value("shm", "shm_kib")
    if raw is None or not raw.isdigit():
        return Check("FAIL", title, "the probe could not read the size of /dev/shm", "see the main node's log")
    mib = int(raw) / 1024
    size = f"{mib / 1024:.1f} GiB" if mib >= 1024 else f"{mib:.0f} MiB"
    if mib >= MIN_SHM_MIB:
        return Check("PASS", title, size)
    return Check("FAIL", title, f"{size}, need at least {MIN_SHM_MIB} MiB", SHM_CAUSE)


def _check_all_reduce(log: ProbeLog, result: AllReduce, exp: Expected) -> Check:
    title = f"all_reduce_perf on {exp.nodes} nodes"
    wireup = log.text("wireup") or ""
    nccl = log.text("nccl_tests")
    exit_code = log.value("nccl_tests", "nccl_tests_exit")
    if "wireup=timeout" in wireup:
        line = next(line for line in wireup.splitlines() if "wireup=timeout" in line)
        return Check(
            "FAIL",
            title,
            f"the child nodes did not all reach the main node ({line.split('=', 1)[1]})",
            SG_CAUSE + "; or a child container failed to start (describe the job's nodes as <jobId>#1...)",
        )
    if nccl is None:
        where = (
            f"the probe ended with {log.done}" if log.done else "the probe did not finish (job stopped or timed out)"
        )
        return Check("FAIL", title, f"all_reduce_perf did not run: {where}", "see the main node's log")
    if log.done is None:
        return Check(
            "FAIL",
            title,
            "the probe did not finish: the log ends inside all_reduce_perf",
            f"the job was stopped or hit its {JOB_ATTEMPT_SECONDS}s timeout; see the job's status reason",
        )
    if "nccl_tests=missing" in nccl:
        return Check(
            "FAIL",
            title,
            "the image has no all_reduce_perf or no mpirun",
            f"use an image with nccl-tests built with MPI=1 and Open MPI, e.g. {DEFAULT_IMAGE}",
        )
    if exit_code in ("124", "137"):
        return Check(
            "FAIL",
            title,
            f"all_reduce_perf hung and was stopped after {TEST_SECONDS}s",
            "NCCL could not connect across nodes: " + SG_CAUSE,
        )
    if re.search(
        r"ssh: connect to host|Permission denied \(publickey|were unable to reliably start|lost communication", nccl
    ):
        return Check(
            "FAIL",
            title,
            "mpirun could not start the ranks on the child nodes over ssh",
            SG_CAUSE + "; or sshd did not start in the image",
        )
    if result.rows == 0:
        warning = next((line for line in nccl.splitlines() if "NCCL WARN" in line or "Test NCCL failure" in line), "")
        detail = f"all_reduce_perf printed no results (exit {exit_code or '?'})"
        if warning:
            detail += ": " + re.sub(r"^.*?NCCL WARN\s*", "", warning).strip()[:160]
        if re.search(r"register memory|fi_mr_reg|Cannot allocate memory", warning):
            cause = "EFA could not pin its buffers: " + MEMLOCK_CAUSE
        elif "/dev/shm" in warning:
            cause = SHM_CAUSE
        else:
            cause = "see the nccl_tests section of the main node's log"
        return Check("FAIL", title, detail, cause)
    if result.wrong:
        return Check(
            "FAIL",
            title,
            "all_reduce_perf reported wrong results",
            "data was corrupted in flight or on a GPU: check `nvidia-smi -q` and the host's dmesg, replace the node",
        )
    want = exp.nodes * exp.gpus_per_node
    if result.ranks and (result.ranks != want or result.hosts != exp.nodes):
        return Check(
            "FAIL",
            title,
            f"{result.ranks} ranks on {result.hosts} hosts, expected {want} on {exp.nodes}",
            "GpusPerNode does not match the GPUs the containers see",
        )
    if exit_code not in (None, "0"):
        return Check("FAIL", title, f"all_reduce_perf exited with {exit_code}", "see the main node's log")
    layout = f"{result.ranks} ranks on {result.hosts} nodes" if result.ranks else f"{exp.nodes} nodes"
    return Check("PASS", title, f"{layout}, {result.rows} sizes, results correct")


_EFA_NET = re.compile(
    r"NET/OFI Selected [Pp]rovider is efa\b|Using network (?:AWS )?Libfabric|via NET/(?:AWS )?Libfabric"
)
_SOCKET_NET = re.compile(r"Using network Socket|via NET/Socket|NET/Socket : Using")
_OFI_PROVIDER = re.compile(r"NET/OFI Selected [Pp]rovider is (\w+)")
_NO_PLUGIN = re.compile(
    r"NET/Plugin\s*:.*(?:No plugin found|Could not find|cannot open shared object|Failed to find|"
    r"Plugin load returned)"
)
_OFI_NO_PROVIDER = re.compile(
    r"NET/OFI.*(?:No eligible providers|Unable to find|Couldn't find|No data available|-61\b)"
)


def _socket_cause(text: str) -> str:
    if _NO_PLUGIN.search(text) and not re.search(r"NET/OFI", text):
        return (
            "NCCL found no network plugin: aws-ofi-nccl is missing from the image (or not on LD_LIBRARY_PATH); "
            f"use an image with aws-ofi-nccl, e.g. {DEFAULT_IMAGE}"
        )
    if _OFI_NO_PROVIDER.search(text):
        return (
            "aws-ofi-nccl loaded but libfabric offered no EFA provider: FI_PROVIDER is not efa, or no EFA device "
            "is visible (see EFA devices)"
        )
    return (
        "aws-ofi-nccl is missing from the image, FI_PROVIDER is not efa, or EFA traffic between the nodes is "
        "blocked (" + SG_CAUSE + ")"
    )


def _check_transport(log: ProbeLog) -> Check:
    title = "NCCL network"
    text = log.text("nccl_tests")
    if text is None or "NCCL INFO" not in text:
        return Check("SKIP", title, "NCCL did not initialise (see all_reduce_perf)")
    if _SOCKET_NET.search(text):
        return Check("FAIL", title, "NCCL fell back to TCP sockets (NET/Socket)", _socket_cause(text))
    if _EFA_NET.search(text):
        return Check("PASS", title, "NCCL used EFA through aws-ofi-nccl (NET/OFI, provider efa)")
    if (m := _OFI_PROVIDER.search(text)) and m.group(1) != "efa":
        return Check(
            "FAIL",
            title,
            f"aws-ofi-nccl selected the libfabric provider {m.group(1)!r}, not efa",
            "set FI_PROVIDER=efa and pass the uverbs devices to the container",
        )
    return Check("FAIL", title, "NCCL's log names no network (is NCCL_DEBUG=INFO set?)", "see the main node's log")


def _check_bandwidth(result: AllReduce, transport: Check, exp: Expected) -> Check:
    title = "bus bandwidth"
    if result.peak_busbw is None:
        return Check("SKIP", title, "no all_reduce_perf results to judge")
    gbps = result.peak_busbw * 8  # nccl-tests reports GB/s (10^9 bytes)
    measured = f"{result.peak_busbw:.1f} GB/s ({gbps:.0f} Gbps) at the largest sizes"
    if result.avg_busbw is not None:
        measured += f", average over all sizes {result.avg_busbw:.1f} GB/s"
    if exp.peak_gbps is None or exp.network_cards is None:
        return Check("SKIP", title, f"{measured}; {exp.instance_type} is not in the kit's catalog, no reference")
    share = gbps / exp.peak_gbps
    detail = (
        f"{measured}: {share:.0%} of the {exp.peak_gbps:.0f} Gbps of {exp.instance_type}'s "
        f"{exp.network_cards} network card(s), need {MIN_BANDWIDTH_SHARE:.0%}"
    )
    if share >= MIN_BANDWIDTH_SHARE:
        return Check("PASS", title, detail)
    if transport.status == "FAIL":
        cause = "NCCL did not use EFA (see NCCL network)"
    elif exp.efa_interfaces < exp.network_cards:
        cause = (
            f"the nodes have {exp.efa_interfaces} EFA interface(s) for {exp.network_cards} network cards: each card "
            'needs its own EFA interface for full bandwidth (set the queue\'s efaInterfaces to "max" and redeploy)'
        )
    else:
        cause = (
            "the nodes are probably not in one cluster placement group (or one AZ), or GPUDirect RDMA is off "
            "(FI_EFA_USE_DEVICE_RDMA); `python -m kit doctor` checks the placement group"
        )
    return Check("FAIL", title, detail, cause)


def judge(text: str, exp: Expected) -> list[Check]:
    """The verdict on the main node's log, one Check per requirement (pure: no AWS)."""
    log = parse_probe_log(text)
    if not log.sections:
        first = next((line.strip() for line in text.splitlines() if line.strip()), "")
        detail = "the main node's log has no probe output" + (f" (first line: {first[:100]!r})" if first else "")
        return [
            Check("FAIL", "probe", detail, "the container did not run kit/smoke_probe.sh: does the image have bash?")
        ]
    result = parse_all_reduce(log.text("nccl_tests") or "")
    transport = _check_transport(log)
    return [
        _check_uverbs(log, exp),
        _check_fi_info(log),
        _check_memlock(log),
        _check_shm(log),
        _check_all_reduce(log, result, exp),
        transport,
        _check_bandwidth(result, transport, exp),
    ]


def overall(checks: Sequence[Check]) -> str:
    return "FAIL" if any(c.status == "FAIL" for c in checks) else "PASS"


def render_verdict(checks: Sequence[Check], header: str) -> str:
    width = max(len("CHECK"), *(len(c.title) for c in checks))
    lines = [header, "", f"{'STATUS':<6}  {'CHECK':<{width}}  RESULT"]
    for c in checks:
        lines.append(f"{c.status:<6}  {c.title:<{width}}  {c.detail}")
        if c.status == "FAIL" and c.cause:
            lines.append(f"{'':<6}  {'':<{width}}  likely cause: {c.cause}")
    verdict = overall(checks)
    first = next((c for c in checks if c.status == "FAIL"), None)
    lines += ["", f"VERDICT: {verdict}" + (f" - {first.title}: {first.detail}" if first else "")]
    return "\n".join(lines)


# --- command -------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m kit smoke",
        description=(
            "Run an EFA/NCCL smoke test (nccl-tests all_reduce_perf across nodes) on a deployed queue and judge it."
        ),
        epilog=(
            f"Default image: {DEFAULT_IMAGE} (AWS awsome-distributed-training: EFA installer, aws-ofi-nccl, NCCL, "
            "Open MPI, nccl-tests built with MPI=1). Pin a tag with --image for repeatable runs. "
            "Exit codes: 0 PASS or submitted, 1 FAIL, 2 cannot start, 3 --timeout reached, 130 interrupted."
        ),
    )
    p.add_argument("--stack", required=True, help="CloudFormation stack name of the deployed kit")
    p.add_argument("--queue", required=True, help="queue to test: config name, job queue name or ARN")
    p.add_argument("--nodes", type=int, default=MIN_NODES, help=f"nodes to run on, {MIN_NODES}..MaxNodes (default 2)")
    p.add_argument("--image", default=DEFAULT_IMAGE, help=f"container image (default {DEFAULT_IMAGE})")
    p.add_argument("--wait", action="store_true", help="wait for the job, then judge the main node's log")
    p.add_argument(
        "--timeout", type=int, default=DEFAULT_TIMEOUT, help=f"seconds --wait waits at most (default {DEFAULT_TIMEOUT})"
    )
    p.add_argument(
        "--poll-interval",
        type=int,
        default=DEFAULT_POLL,
        help=f"seconds between DescribeJobs calls while waiting (default {DEFAULT_POLL})",
    )
    p.add_argument("--attach", metavar="JOB_ID", help="do not submit: wait for / judge this earlier smoke job")
    p.add_argument("--region", help="AWS region; default: AWS_REGION / the AWS profile's region")
    return p


def select_queue(outputs: StackOutputs, wanted: str, stack_name: str) -> QueueOutputs:
    for q in outputs.queues:
        if wanted in (q.name, q.job_queue_name, q.job_queue_arn):
            return q
    valid = ", ".join(q.name for q in outputs.queues) or "(none)"
    raise SmokeError(f"--queue {wanted!r} is not a queue of stack {stack_name!r}; valid: {valid}")


def check_queue(queue: QueueOutputs, nodes: int) -> None:
    if queue.gpus_per_node < 1:
        raise SmokeError(
            f"queue {queue.name!r} ({queue.instance_type}) has no NVIDIA GPUs (GpusPerNode 0): this smoke test runs "
            "NCCL; test Trainium/Inferentia queues with the Neuron SDK's nccom-test"
        )
    if queue.efa_interfaces < 1:
        raise SmokeError(f"queue {queue.name!r} has no EFA interfaces (EfaInterfaces 0): there is no EFA to test")
    if queue.max_nodes < MIN_NODES:
        raise SmokeError(
            f"queue {queue.name!r} allows {queue.max_nodes} node(s) (MaxNodes): a multi-node smoke test needs "
            f"at least {MIN_NODES}; raise the queue's maxNodes and redeploy"
        )
    if not MIN_NODES <= nodes <= queue.max_nodes:
        raise SmokeError(
            f"--nodes {nodes} is out of range: queue {queue.name!r} allows {MIN_NODES}..{queue.max_nodes} "
            f"(MaxNodes {queue.max_nodes})"
        )


def _read_outputs(session: Any, stack_name: str) -> StackOutputs:
    from kit.metaflow_config import ConfigError, fetch_outputs

    try:
        return fetch_outputs(session.client("cloudformation"), stack_name)
    except ConfigError as exc:
        raise SmokeError(str(exc)) from None


def report(
    batch: Any,
    logs: Any,
    job: Mapping[str, Any],
    exp: Expected,
    out: TextIO,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Read the finished job's main-node log, print the verdict table; the exit code."""
    job_id = str(job["jobId"])
    stream = main_node_log_stream(batch, job)
    text = read_log(logs, stream) if stream else None
    if text is not None and parse_probe_log(text).done is None:
        # CloudWatch can trail a container that just stopped by a few seconds.
        sleep(10)
        text = read_log(logs, stream) if stream else text
    header = f"EFA/NCCL smoke test: job {job_id} ({job.get('status')}), {exp.nodes} x {exp.instance_type}"
    if text is None:
        reason = job.get("statusReason") or "no status reason"
        where = f"{LOG_GROUP} {stream}" if stream else f"no log stream for node 0 in {LOG_GROUP}"
        if job.get("status") == "SUCCEEDED":
            cause = (
                "the container ran but its output never reached CloudWatch Logs: the instance role needs "
                "logs:CreateLogStream and logs:PutLogEvents (AmazonEC2ContainerServiceforEC2Role has them)"
            )
        else:
            cause = (
                "the container never ran: check the image name, that the instances can pull it (NAT or VPC "
                "endpoints), and the job's status reason"
            )
        checks = [Check("FAIL", "main node log", f"the job ended without a main-node log ({where}; {reason})", cause)]
    else:
        header += f"\nmain-node log: CloudWatch Logs {LOG_GROUP} {stream}"
        checks = judge(text, exp)
    print(render_verdict(checks, header), file=out)
    return EXIT_PASS if overall(checks) == "PASS" else EXIT_FAIL


def run(args: argparse.Namespace, session: Any, out: TextIO, err: TextIO) -> int:
    """The command body, with an injected boto3 session. Raises SmokeError and botocore errors."""
    if args.timeout < 1 or args.poll_interval < 1:
        raise SmokeError("--timeout and --poll-interval must be at least 1 second")
    outputs = _read_outputs(session, args.stack)
    queue = select_queue(outputs, args.queue, args.stack)
    batch = session.client("batch")
    facts = load_catalog().get(queue.instance_type)

    if args.attach:
        job = describe_job(batch, args.attach)
        if job is None:
            raise SmokeError(f"--attach {args.attach}: no such job in {session.region_name}")
        if job.get("jobQueue") not in (queue.job_queue_arn, queue.job_queue_name):
            raise SmokeError(f"--attach {args.attach}: the job ran on {job.get('jobQueue')}, not queue {queue.name!r}")
        nodes = int((job.get("nodeProperties") or {}).get("numNodes", args.nodes))
        job_id = args.attach
    else:
        nodes = args.nodes
        check_queue(queue, nodes)
        if facts is None:
            raise SmokeError(
                f"{queue.instance_type} is not in the kit's catalog (stacks/data/instance_types.json), so the job's "
                "vCPUs and memory are unknown: run `python -m kit regen-catalog`"
            )
        want = build_job_definition(args.stack, queue, facts, nodes, args.image, load_probe())
        arn, reused = ensure_job_definition(batch, want)
        print(f"job definition: {arn} ({'reused' if reused else 'registered'})", file=out)
        job_id = submit(batch, queue, arn, args.stack)
        print(f"submitted job {job_id}: {nodes} x {queue.instance_type} on {queue.job_queue_arn}", file=out)
        if not args.wait:
            print(
                f"follow it: python -m kit smoke --stack {args.stack} --queue {queue.name} --attach {job_id} --wait",
                file=out,
            )
            return EXIT_PASS

    attach = f"python -m kit smoke --stack {args.stack} --queue {queue.name} --attach {job_id} --wait"
    stop = f"aws batch terminate-job --job-id {job_id} --reason smoke-stopped"
    try:
        final = wait_for_job(batch, job_id, timeout=args.timeout, poll=args.poll_interval, err=err)
    except KeyboardInterrupt:
        print(f"\ninterrupted; job {job_id} keeps going. Attach again with `{attach}`, or stop it: `{stop}`", file=err)
        return EXIT_INTERRUPTED
    if final is None:
        print(
            f"timed out after {args.timeout}s; job {job_id} keeps going. Attach again with `{attach}`, "
            f"or stop it: `{stop}`",
            file=err,
        )
        return EXIT_TIMEOUT
    return report(batch, session.client("logs"), final, Expected.for_queue(queue, nodes, facts), out)


def main(argv: list[str] | None = None) -> int:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    args = _parser().parse_args(argv)
    try:
        session = boto3.session.Session(region_name=args.region)
        if not session.region_name:
            raise SmokeError("no AWS region: pass --region or set AWS_REGION")
        return run(args, session, sys.stdout, sys.stderr)
    except SmokeError as exc:
        print(f"smoke: {exc}", file=sys.stderr)
    except (BotoCoreError, ClientError) as exc:
        print(f"smoke: {describe_aws_error(exc)}", file=sys.stderr)
    return EXIT_SETUP
