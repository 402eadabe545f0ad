"""End to end in the local sandbox: deploy the kit with the real cdk CLI, write a Metaflow profile
with the real `python -m kit metaflow-config`, then run the project's own multi-node example flow
(examples/multinode_flow.py, `@parallel` + `@batch`) with Metaflow 2.19 against the emulator, and
check with boto3 what Metaflow registered and submitted there.

Set-up, as a user would do it:

* the stack is cdk.json's config under a name of its own, with `metaflow.s3AccessRoleArn` set to
  an IAM role created in the emulator (Metaflow's BatchJob refuses to submit without a job role,
  METAFLOW_ECS_S3_ACCESS_IAM_ROLE), so metaflow-config writes both keys it manages;
* a temporary METAFLOW_HOME whose base config.json holds what the kit does not manage: the S3
  datastore (METAFLOW_DEFAULT_DATASTORE, METAFLOW_DATASTORE_SYSROOT_S3, METAFLOW_DATATOOLS_S3ROOT
  on a bucket made in the emulator), local metadata and the container image;
* the flow gets the values of the `@batch(...)` line metaflow-config prints (through the
  example's MULTINODE_* variables) and runs with `--nodes 2`; the queue comes from the profile.

Endpoints: the sandbox's AWS_ENDPOINT_URL is enough. Metaflow builds every client (batch, s3, its
datastore) with a plain boto3 session, and boto3 honours the service-agnostic endpoint variable.
METAFLOW_S3_ENDPOINT_URL would only feed Metaflow's datatools client and the container's
environment, neither of which this run needs.

The emulator runs no containers: moto's batch_simple backend marks a submitted job SUCCEEDED at
once, and Metaflow then stops with "No completed attempts of the task" for `train`, since no node
ever wrote its results. The tests therefore assert on what reached the emulator (job definition,
job, datastore objects), not on the run's outcome. Every wait is bounded: the flow's process is
watched until its job shows up in the queue, given a short grace period, then killed (its whole
process group) if it still waits.

Not checkable here (an emulator gap): moto's SubmitJob ignores `nodeOverrides`, which is where
Metaflow puts each node's command and its cpu/gpu/memory resourceRequirements (its job definition
keeps placeholders: 1 vCPU, 4096 MiB), so the gpu= value never reaches the emulator's records.
"""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kit.sandbox.lifecycle import PROJECT_DIR
from stacks.outputs import QueueOutputs, StackOutputs
from tests.conftest import default_config
from tests.sandbox.conftest import Deployment, SandboxSession

pytestmark = pytest.mark.sandbox

STACK = "mn-metaflow-e2e"
PROFILE = "mf-e2e"
ROLE_NAME = "mn-metaflow-e2e-task"
BUCKET = "mn-metaflow-e2e"
IMAGE = "public.ecr.aws/docker/library/python:3.11"
FLOW_FILE = PROJECT_DIR / "examples" / "multinode_flow.py"
FLOW_NAME = "MultinodeAllReduceFlow"
STEP = "train"
NODES = 2  # num_parallel; Metaflow registers numNodes = num_parallel, main node 0
USER = "kit-e2e"

BASE_CONFIG = {
    "METAFLOW_DEFAULT_DATASTORE": "s3",
    "METAFLOW_DATASTORE_SYSROOT_S3": f"s3://{BUCKET}/metaflow",
    "METAFLOW_DATATOOLS_S3ROOT": f"s3://{BUCKET}/data",
    "METAFLOW_DEFAULT_METADATA": "local",
    "METAFLOW_BATCH_CONTAINER_IMAGE": IMAGE,
}

JOB_STATUSES = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED", "FAILED")
SUBMIT_TIMEOUT_SECONDS = 90.0  # from start of the run until the job is in the queue
EXIT_GRACE_SECONDS = 20.0  # after that, for Metaflow to give up on its own before it is killed
POLL_SECONDS = 0.5
LOG_TAIL_LINES = 40


@dataclass
class Run:
    deployment: Deployment
    role_arn: str
    config_stdout: str
    profile_file: Path
    decorator: dict[str, Any]  # keyword arguments of the printed @batch(...) line
    flow_log: str
    killed: bool  # Metaflow was still waiting when the grace period ended
    job: dict[str, Any]  # DescribeJobs of the submitted job
    job_definition: dict[str, Any]  # DescribeJobDefinitions of the job's definition

    @property
    def outputs(self) -> StackOutputs:
        return self.deployment.outputs

    @property
    def queue(self) -> QueueOutputs:
        return self.outputs.queues[0]


def _tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _clean_env(env: dict[str, str]) -> dict[str, str]:
    # Metaflow reads METAFLOW_* variables before its config file, and the example flow reads
    # MULTINODE_*: none of the developer's own may leak into the run.
    return {k: v for k, v in env.items() if not k.startswith(("METAFLOW_", "MULTINODE_"))}


def _decorator_kwargs(stdout: str) -> dict[str, Any]:
    lines = [line.strip() for line in stdout.splitlines() if line.strip().startswith("@batch(")]
    assert len(lines) == 1, f"expected one @batch line (one queue), got {lines}\n{stdout}"
    call = ast.parse(lines[0][1:], mode="eval").body
    assert isinstance(call, ast.Call) and not call.args, lines[0]
    return {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords if kw.arg}


def _task_role(box: SandboxSession) -> str:
    iam = box.client("iam")
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "ecs-tasks.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ],
    }
    try:
        role = iam.create_role(RoleName=ROLE_NAME, AssumeRolePolicyDocument=json.dumps(trust))["Role"]
    except iam.exceptions.EntityAlreadyExistsException:
        role = iam.get_role(RoleName=ROLE_NAME)["Role"]
    arn: str = role["Arn"]
    return arn


def _jobs_in(batch: Any, queue_arn: str) -> list[dict[str, Any]]:
    found = []
    paginator = batch.get_paginator("list_jobs")
    for status in JOB_STATUSES:
        for page in paginator.paginate(jobQueue=queue_arn, jobStatus=status):
            found.extend(page["jobSummaryList"])
    return found


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the flow's run and the `batch step` children it started (one process group)."""
    if process.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _run_flow(box: SandboxSession, env: dict[str, str], cwd: Path, queue_arn: str) -> tuple[dict[str, Any], str, bool]:
    """Run the flow until its job reaches the queue; returns (job summary, log, killed)."""
    batch = box.client("batch")
    log_path = cwd / "flow.log"
    command = [sys.executable, str(FLOW_FILE), "--no-pylint", "run", "--nodes", str(NODES)]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    job: dict[str, Any] | None = None
    killed = False
    try:
        deadline = time.monotonic() + SUBMIT_TIMEOUT_SECONDS
        while job is None and time.monotonic() < deadline:
            jobs = _jobs_in(batch, queue_arn)
            if jobs:
                job = jobs[0]
                break
            if process.poll() is not None:
                # The run ended; a job it submitted just before exiting is still listed.
                jobs = _jobs_in(batch, queue_arn)
                job = jobs[0] if jobs else None
                break
            time.sleep(POLL_SECONDS)
        if job is not None:
            try:
                process.wait(timeout=EXIT_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                killed = True
    finally:
        _stop(process)
    text = log_path.read_text(encoding="utf-8", errors="replace")
    assert job is not None, (
        f"Metaflow submitted no job to {queue_arn} within {SUBMIT_TIMEOUT_SECONDS:.0f} s "
        f"(exit {process.returncode}); its output:\n{_tail(text)}"
    )
    return job, text, killed


@pytest.fixture(scope="module")
def run(
    sandbox: SandboxSession,
    deployed_stack: Callable[[dict[str, Any]], Deployment],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Run]:
    role_arn = _task_role(sandbox)
    config = {**default_config(), "stackName": STACK, "metaflow": {"profile": PROFILE, "s3AccessRoleArn": role_arn}}
    deployment = deployed_stack(config)
    assert deployment.verification.problems == [], deployment.verification.problems
    queue = deployment.outputs.queues[0]

    sandbox.client("s3").create_bucket(Bucket=BUCKET)
    work = tmp_path_factory.mktemp("metaflow-e2e")
    home = work / "metaflow-home"
    home.mkdir()
    (home / "config.json").write_text(json.dumps(BASE_CONFIG, indent=4) + "\n", encoding="utf-8")
    env = {**_clean_env(sandbox.env), "METAFLOW_HOME": str(home)}

    done = subprocess.run(
        [sys.executable, "-m", "kit", "metaflow-config", "--stack", STACK],
        cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, (done.stdout, done.stderr)
    decorator = _decorator_kwargs(done.stdout)

    flow_env = {
        **env,
        "METAFLOW_PROFILE": PROFILE,
        "METAFLOW_USER": USER,
        # The values metaflow-config printed for this queue, as the example flow takes them.
        "MULTINODE_GPUS": str(decorator["gpu"]),
        "MULTINODE_EFA": str(decorator["efa"]),
        "MULTINODE_CPU": str(decorator["cpu"]),
        "MULTINODE_MEMORY": str(decorator["memory"]),
        "MULTINODE_SHARED_MEMORY": str(decorator["shared_memory"]),
    }
    flow_dir = work / "run"
    flow_dir.mkdir()
    summary, log, killed = _run_flow(sandbox, flow_env, flow_dir, queue.job_queue_arn)

    batch = sandbox.client("batch")
    jobs = batch.describe_jobs(jobs=[summary["jobId"]])["jobs"]
    assert len(jobs) == 1, jobs
    definitions = batch.describe_job_definitions(jobDefinitions=[jobs[0]["jobDefinition"]])["jobDefinitions"]
    assert len(definitions) == 1, f"job definition {jobs[0]['jobDefinition']} not found: {definitions}"
    yield Run(
        deployment=deployment,
        role_arn=role_arn,
        config_stdout=done.stdout,
        profile_file=home / f"config_{PROFILE}.json",
        decorator=decorator,
        flow_log=log,
        killed=killed,
        job=jobs[0],
        job_definition=definitions[0],
    )


def test_metaflow_config_writes_the_profile_and_prints_the_batch_line(run: Run) -> None:
    """The real command merged the base config with the stack's queue and role, and printed a
    @batch line whose efa= and gpu= are the stack's outputs for the queue."""
    q = run.queue
    assert f"wrote {run.profile_file}" in run.config_stdout
    assert f"export METAFLOW_PROFILE={PROFILE}" in run.config_stdout
    assert f"self.next(self.train, num_parallel={q.max_nodes})" in run.config_stdout
    profile = json.loads(run.profile_file.read_text(encoding="utf-8"))
    assert profile == {
        **BASE_CONFIG,
        "METAFLOW_BATCH_JOB_QUEUE": q.job_queue_name,
        "METAFLOW_ECS_S3_ACCESS_IAM_ROLE": run.role_arn,
    }
    assert run.outputs.s3_access_role_arn == run.role_arn
    assert run.decorator["queue"] == q.job_queue_name
    assert run.decorator["efa"] == q.efa_interfaces
    assert run.decorator["gpu"] == q.gpus_per_node
    assert q.efa_interfaces > 0 and q.gpus_per_node > 0, "the default queue is an EFA GPU queue"
    assert set(run.decorator) == {"queue", "gpu", "efa", "cpu", "memory", "shared_memory"}


def test_metaflow_registered_the_multinode_job_definition(sandbox: SandboxSession, run: Run) -> None:
    """Metaflow's own job definition: multinode, numNodes = num_parallel, main node 0, both node
    ranges with exactly one uverbs device per EFA interface of the queue's launch template
    (hostPath == containerPath, READ/WRITE/MKNOD), the profile's job role and image, and the
    printed shared_memory."""
    definition = run.job_definition
    assert definition["status"] == "ACTIVE"
    assert definition["type"] == "multinode"
    assert definition["jobDefinitionName"].startswith("metaflow_")
    nodes = definition["nodeProperties"]
    assert nodes["numNodes"] == NODES
    assert nodes["mainNode"] == 0
    ranges = nodes["nodeRangeProperties"]
    assert [r["targetNodes"] for r in ranges] == ["0:0", f"1:{NODES - 1}"]

    ec2 = sandbox.client("ec2")
    version = ec2.describe_launch_template_versions(
        LaunchTemplateId=run.queue.launch_template_id, Versions=[run.queue.launch_template_version]
    )["LaunchTemplateVersions"][0]
    interfaces = version["LaunchTemplateData"]["NetworkInterfaces"]
    efa_count = sum(1 for i in interfaces if i.get("InterfaceType") in ("efa", "efa-only"))
    assert efa_count == run.queue.efa_interfaces, "EfaInterfaces output differs from the launch template"
    expected_devices = [
        {
            "hostPath": f"/dev/infiniband/uverbs{i}",
            "containerPath": f"/dev/infiniband/uverbs{i}",
            "permissions": ["READ", "WRITE", "MKNOD"],
        }
        for i in range(efa_count)
    ]
    for node_range in ranges:
        container = node_range["container"]
        where = f"node range {node_range['targetNodes']}"
        assert container["linuxParameters"]["devices"] == expected_devices, where
        assert container["linuxParameters"]["sharedMemorySize"] == run.decorator["shared_memory"], where
        assert container["jobRoleArn"] == run.role_arn, where
        assert container["image"] == IMAGE, where


def test_metaflow_submitted_the_step_to_the_stack_queue(run: Run) -> None:
    """One job for the `train` step of this run, on the stack's queue (from the profile), using
    the registered definition."""
    job = run.job
    assert job["jobQueue"] == run.queue.job_queue_arn
    assert job["jobDefinition"] == run.job_definition["jobDefinitionArn"]
    params = job["parameters"]
    assert params["metaflow.flow_name"] == FLOW_NAME
    assert params["metaflow.step_name"] == STEP
    assert params["metaflow.user"] == USER
    assert job["jobName"].startswith(f"{USER}-{FLOW_NAME}-{params['metaflow.run_id']}-{STEP}-")
    assert job["nodeProperties"]["numNodes"] == NODES


def test_metaflow_datastore_is_the_emulator_bucket(sandbox: SandboxSession, run: Run) -> None:
    """The local `start` step finished into the S3 datastore of the profile, in the emulator's
    bucket: Metaflow's S3 client reached the emulator through AWS_ENDPOINT_URL."""
    run_id = run.job["parameters"]["metaflow.run_id"]
    prefix = f"metaflow/{FLOW_NAME}/{run_id}/start/"
    keys = [
        obj["Key"]
        for page in sandbox.client("s3").get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        for obj in page.get("Contents", [])
    ]
    assert any(k.endswith(".DONE.lock") for k in keys), f"start step did not finish into s3://{BUCKET}/{prefix}: {keys}"
