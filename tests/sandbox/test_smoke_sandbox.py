"""`python -m kit smoke` against the kit's stack deployed into the local sandbox (moto server + the
compatibility layer, real `cdk deploy`; fixtures in tests/sandbox/conftest.py). The command runs as
the real CLI in a subprocess with the sandbox's environment.

It uses the shared deploy of cdk.json's config (p5.48xlarge, 32 EFA interfaces, up to 4 nodes):
smoke only adds a job definition and jobs, it changes nothing in the stack.

Decided limits of the emulator: the sandbox's Batch runs no containers (moto's batch_simple backend
marks a job SUCCEEDED at once, without a log), so the submit path is checked without --wait, and one
run with --wait checks that the wait ends cleanly with the "no main-node log" verdict (exit 1).
The verdict on real logs is covered by tests/unit/test_smoke.py.
moto 5.2.5's DescribeJobDefinitions leaves out nodeProperties of multinode definitions (AWS returns
them); until the compatibility layer adds them, the two tests that need them skip with that reason.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from kit import smoke
from kit.metaflow_config import batch_resources
from kit.sandbox.lifecycle import PROJECT_DIR
from stacks.catalog import load_catalog
from stacks.outputs import QueueOutputs
from tests.conftest import default_config
from tests.sandbox.conftest import Deployment, SandboxSession

pytestmark = pytest.mark.sandbox


@pytest.fixture(scope="module")
def deployment(deployed_stack: Callable[[dict[str, Any]], Deployment]) -> Deployment:
    return deployed_stack(default_config())


def run_smoke(box: SandboxSession, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "kit", "smoke", *args],
        cwd=PROJECT_DIR, env=box.env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert "Traceback" not in done.stderr, done.stderr
    return done


def queue_of(deployment: Deployment) -> QueueOutputs:
    return deployment.outputs.queues[0]


def definitions(box: SandboxSession, name: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for page in (
        box.client("batch").get_paginator("describe_job_definitions").paginate(jobDefinitionName=name, status="ACTIVE")
    ):
        found.extend(page["jobDefinitions"])
    return found


def node_properties_or_skip(definition: dict[str, Any]) -> dict[str, Any]:
    if "nodeProperties" not in definition:
        pytest.skip(
            "emulator gap: moto 5.2.5 DescribeJobDefinitions omits nodeProperties of multinode definitions; "
            "kit/sandbox/compat.py needs a patch that returns them"
        )
    props: dict[str, Any] = definition["nodeProperties"]
    return props


def test_smoke_submits_a_multinode_job_to_the_queue(sandbox: SandboxSession, deployment: Deployment) -> None:
    queue = queue_of(deployment)
    done = run_smoke(sandbox, "--stack", deployment.stack_name, "--queue", queue.name, "--nodes", "3")
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.split("submitted job ", 1)[1].split(":", 1)[0]

    batch = sandbox.client("batch")
    listed = {
        j["jobId"]
        for page in batch.get_paginator("list_jobs").paginate(
            jobQueue=queue.job_queue_arn, filters=[{"name": "JOB_NAME", "values": [f"kit-efa-smoke-{queue.name}"]}]
        )
        for j in page["jobSummaryList"]
    }
    assert job_id in listed
    [job] = batch.describe_jobs(jobs=[job_id])["jobs"]
    assert job["jobQueue"] == queue.job_queue_arn
    assert job["nodeProperties"]["numNodes"] == 3
    assert job["nodeProperties"]["mainNode"] == 0
    name = smoke.job_definition_name(deployment.stack_name, queue.name)
    arns = {d["jobDefinitionArn"]: d for d in definitions(sandbox, name)}
    assert job["jobDefinition"] in arns
    assert arns[job["jobDefinition"]]["type"] == "multinode"


def test_registered_job_definition(sandbox: SandboxSession, deployment: Deployment) -> None:
    queue = queue_of(deployment)
    done = run_smoke(sandbox, "--stack", deployment.stack_name, "--queue", queue.name, "--nodes", "2")
    assert done.returncode == 0, done.stderr
    arn = done.stdout.split("job definition: ", 1)[1].split(" ", 1)[0]
    [definition] = sandbox.client("batch").describe_job_definitions(jobDefinitions=[arn])["jobDefinitions"]
    assert (definition["type"], definition["status"]) == ("multinode", "ACTIVE")
    props = node_properties_or_skip(definition)

    facts = load_catalog().get(queue.instance_type)
    assert facts is not None
    res = batch_resources(facts)
    assert (props["numNodes"], props["mainNode"]) == (2, 0)
    [node_range] = props["nodeRangeProperties"]
    assert node_range["targetNodes"] == "0:"
    container = node_range["container"]
    assert container["image"] == smoke.DEFAULT_IMAGE
    assert container["command"][:2] == ["bash", "-c"] and container["command"][2] == smoke.load_probe()
    devices = container["linuxParameters"]["devices"]
    assert len(devices) == queue.efa_interfaces == 32
    assert [d["hostPath"] for d in devices] == [f"/dev/infiniband/uverbs{i}" for i in range(32)]
    assert all(
        d["containerPath"] == d["hostPath"] and set(d["permissions"]) == {"READ", "WRITE", "MKNOD"} for d in devices
    )
    assert container["linuxParameters"]["sharedMemorySize"] == res.shared_memory
    assert container["ulimits"] == [{"name": "memlock", "softLimit": -1, "hardLimit": -1}]
    requirements = {r["type"]: r["value"] for r in container["resourceRequirements"]}
    assert requirements == {"GPU": str(queue.gpus_per_node), "VCPU": str(res.cpu), "MEMORY": str(res.memory)}
    env = {e["name"]: e["value"] for e in container["environment"]}
    assert env["FI_PROVIDER"] == "efa"
    assert env["FI_EFA_USE_DEVICE_RDMA"] == "1"  # p5
    assert env["NCCL_DEBUG"] == "INFO"
    assert env["NCCL_SOCKET_IFNAME"] == "^docker,lo,veth"


def test_second_run_reuses_the_job_definition(sandbox: SandboxSession, deployment: Deployment) -> None:
    queue = queue_of(deployment)
    args = ("--stack", deployment.stack_name, "--queue", queue.name, "--nodes", "4")
    first = run_smoke(sandbox, *args)
    assert first.returncode == 0, first.stderr
    name = smoke.job_definition_name(deployment.stack_name, queue.name)
    arn = first.stdout.split("job definition: ", 1)[1].split(" ", 1)[0]
    [registered] = [d for d in definitions(sandbox, name) if d["jobDefinitionArn"] == arn]
    node_properties_or_skip(registered)
    before = {d["revision"] for d in definitions(sandbox, name)}

    second = run_smoke(sandbox, *args)
    assert second.returncode == 0, second.stderr
    assert f"job definition: {arn} (reused)" in second.stdout
    assert {d["revision"] for d in definitions(sandbox, name)} == before


def test_wait_ends_cleanly_without_a_container_log(sandbox: SandboxSession, deployment: Deployment) -> None:
    queue = queue_of(deployment)
    done = run_smoke(
        sandbox, "--stack", deployment.stack_name, "--queue", queue.name, "--wait", "--timeout", "120",
        "--poll-interval", "1",
    )  # fmt: skip
    # No container ran: the job ends at once, and the verdict names the missing main-node log.
    assert done.returncode == 1, done.stderr
    assert re.search(r"^\[\s*\d+s\] job \S+: (SUCCEEDED|FAILED)$", done.stderr, re.MULTILINE), done.stderr
    assert "the job ended without a main-node log" in done.stdout
    assert done.stdout.strip().splitlines()[-1].startswith("VERDICT: FAIL - main node log")


def test_errors_against_the_sandbox(sandbox: SandboxSession, deployment: Deployment) -> None:
    queue = queue_of(deployment)
    for args, fragment in (
        (("--stack", "no-such-stack", "--queue", queue.name), "stack no-such-stack not found"),
        (("--stack", deployment.stack_name, "--queue", "nope"), "--queue 'nope' is not a queue"),
        (("--stack", deployment.stack_name, "--queue", queue.name, "--nodes", "5"), "allows 2..4"),
    ):
        done = run_smoke(sandbox, *args)
        assert done.returncode == 2 and done.stdout == "", done
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and fragment in lines[0], done.stderr
