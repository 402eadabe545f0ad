"""`python -m kit doctor` against the kit's stack deployed into the local sandbox (moto server +
the compatibility layer, real `cdk deploy`; fixtures in tests/sandbox/conftest.py): a clean
deploy gives no FAIL; then each breakage, made with boto3 the way an operator or a stray script
would, gives exactly the expected FAIL and fix line. Each breakage is undone before the next test
(by running doctor's own fix line with the AWS CLI when it is installed, else with the equivalent
boto3 call), and doctor must then be clean again, so every test starts from a healthy stack.

The stack is cdk.json's config under a name of its own, so these breakages never touch the
deploys other sandbox tests share. Doctor runs as the real CLI (`python -m kit doctor`) in a
subprocess with the sandbox's environment (AWS_ENDPOINT_URL and fake credentials).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kit.sandbox import REGION
from kit.sandbox.lifecycle import PROJECT_DIR
from stacks.outputs import QueueOutputs, StackOutputs
from tests.conftest import default_config
from tests.sandbox.conftest import Deployment, SandboxSession

pytestmark = pytest.mark.sandbox

STACK = "mn-doctor"
MF_PROFILE = default_config()["metaflow"]["profile"]
AWS_CLI = shutil.which("aws")


@dataclass
class Deployed:
    box: SandboxSession
    deployment: Deployment
    env: dict[str, str]  # the sandbox's environment, plus METAFLOW_HOME
    metaflow_home: Path

    @property
    def outputs(self) -> StackOutputs:
        return self.deployment.outputs

    @property
    def queue(self) -> QueueOutputs:
        return self.outputs.queues[0]

    def client(self, service: str) -> Any:
        return self.box.client(service)

    def run(self, *args: str, check_rc: int | None = None) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "kit", *args],
            cwd=PROJECT_DIR, env=self.env, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        if check_rc is not None:
            assert done.returncode == check_rc, (done.stdout, done.stderr)
        return done

    def doctor(self) -> tuple[int, list[dict[str, Any]]]:
        done = self.run("doctor", "--stack", STACK, "--json")
        assert done.returncode in (0, 1), done.stderr
        assert "Traceback" not in done.stderr
        return done.returncode, json.loads(done.stdout)

    def default_group(self) -> str:
        groups = self.client("ec2").describe_security_groups(
            Filters=[{"Name": "vpc-id", "Values": [self.outputs.vpc_id]}, {"Name": "group-name", "Values": ["default"]}]
        )["SecurityGroups"]
        group_id: str = groups[0]["GroupId"]
        return group_id

    def ce(self) -> dict[str, Any]:
        ce: dict[str, Any] = self.client("batch").describe_compute_environments(
            computeEnvironments=[self.queue.compute_environment_arn]
        )["computeEnvironments"][0]
        return ce


@pytest.fixture(scope="module")
def deployed(
    sandbox: SandboxSession,
    deployed_stack: Callable[[dict[str, Any]], Deployment],
    tmp_path_factory: pytest.TempPathFactory,
) -> Deployed:
    """cdk.json's config deployed (real cdk CLI) as stack mn-doctor, with the Metaflow profile
    `python -m kit metaflow-config` writes for it."""
    deployment = deployed_stack({**default_config(), "stackName": STACK})
    home = tmp_path_factory.mktemp("doctor-metaflow")
    d = Deployed(sandbox, deployment, {**sandbox.env, "METAFLOW_HOME": str(home)}, home)
    d.run("metaflow-config", "--stack", STACK, check_rc=0)
    return d


def fails(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r["status"] == "FAIL"]


# --- the clean deploy -----------------------------------------------------------------------


def test_clean_deploy_has_no_fail(deployed: Deployed) -> None:
    rc, rows = deployed.doctor()
    assert fails(rows) == []
    assert rc == 0
    status = {(r["check"], r["queue"]): r["status"] for r in rows}
    # The compatibility layer gives moto placement groups: the live group is checked, not skipped.
    assert status[("placement-group", "train")] == "PASS"
    assert status[("stack.status", None)] == "PASS"
    assert status[("metaflow.profile", None)] == "PASS"
    # metaflow-config writes no efa key: doctor says the value goes on @batch.
    efa = next(r for r in rows if r["check"] == "metaflow.efa")
    assert efa["status"] == "SKIP" and f"@batch(efa={deployed.queue.efa_interfaces}" in efa["fix"]


def test_clean_deploy_table(deployed: Deployed) -> None:
    done = deployed.run("doctor", "--stack", STACK, "--queue", "train", check_rc=0)
    assert done.stdout.splitlines()[0] == f"doctor: stack {STACK} in {REGION}, queues: train"
    assert " 0 FAIL" in done.stdout.splitlines()[-1]
    assert done.stderr == ""


# --- breakages ------------------------------------------------------------------------------


def _self(group_id: str) -> list[dict[str, Any]]:
    return [{"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": group_id}]}]


@dataclass(frozen=True)
class Breakage:
    name: str
    check: str
    queue: str | None
    fix: str  # a fragment of the fix line doctor must print
    brk: Callable[[Deployed], Any]  # returns what undo needs
    undo: Callable[[Deployed, Any], None]  # boto3 equivalent of the fix line
    fix_is_command: bool = True  # the fix line is an `aws ...` command that undoes the breakage


def _revoke_efa_self(d: Deployed) -> None:
    d.client("ec2").revoke_security_group_ingress(
        GroupId=d.outputs.security_group_id, IpPermissions=_self(d.outputs.security_group_id)
    )


def _grant_efa_self(d: Deployed, _: Any) -> None:
    d.client("ec2").authorize_security_group_ingress(
        GroupId=d.outputs.security_group_id, IpPermissions=_self(d.outputs.security_group_id)
    )


def _revoke_default_self(d: Deployed) -> None:
    group = d.default_group()
    d.client("ec2").revoke_security_group_ingress(GroupId=group, IpPermissions=_self(group))


def _grant_default_self(d: Deployed, _: Any) -> None:
    group = d.default_group()
    d.client("ec2").authorize_security_group_ingress(GroupId=group, IpPermissions=_self(group))


def _queue_state(state: str) -> Callable[..., None]:
    def apply(d: Deployed, *_: Any) -> None:
        d.client("batch").update_job_queue(jobQueue=d.queue.job_queue_arn, state=state)

    return apply


def _ce_state(state: str) -> Callable[..., None]:
    def apply(d: Deployed, *_: Any) -> None:
        d.client("batch").update_compute_environment(computeEnvironment=d.queue.compute_environment_arn, state=state)

    return apply


def _new_template_version(d: Deployed) -> int:
    """A new version of the kit's launch template (same data plus a description change), as a
    console edit makes; the CE keeps naming the old one."""
    ec2 = d.client("ec2")
    current = d.ce()["computeResources"]["launchTemplate"]["version"]
    (old,) = ec2.describe_launch_template_versions(LaunchTemplateId=d.queue.launch_template_id, Versions=[current])[
        "LaunchTemplateVersions"
    ]
    # Full data: moto ignores SourceVersion (AWS would copy it).
    made = ec2.create_launch_template_version(
        LaunchTemplateId=d.queue.launch_template_id,
        LaunchTemplateData=old["LaunchTemplateData"],
        VersionDescription="edited in the console",
    )
    version: int = made["LaunchTemplateVersion"]["VersionNumber"]
    return version


def _use_template_version(d: Deployed, version: int) -> None:
    d.client("batch").update_compute_environment(
        computeEnvironment=d.queue.compute_environment_arn,
        computeResources={"launchTemplate": {"launchTemplateId": d.queue.launch_template_id, "version": str(version)}},
    )


def _subnet_in_other_az(d: Deployed) -> str:
    """A private subnet (same NAT route table) in a second AZ, added to the CE."""
    ec2 = d.client("ec2")
    zone = "us-east-1b" if d.outputs.availability_zone != "us-east-1b" else "us-east-1c"
    subnet = ec2.create_subnet(VpcId=d.outputs.vpc_id, CidrBlock="10.40.250.0/24", AvailabilityZone=zone)["Subnet"]
    table = ec2.describe_route_tables(Filters=[{"Name": "association.subnet-id", "Values": [d.outputs.subnet_ids[0]]}])
    ec2.associate_route_table(RouteTableId=table["RouteTables"][0]["RouteTableId"], SubnetId=subnet["SubnetId"])
    d.client("batch").update_compute_environment(
        computeEnvironment=d.queue.compute_environment_arn,
        computeResources={"subnets": [*d.outputs.subnet_ids, subnet["SubnetId"]]},
    )
    subnet_id: str = subnet["SubnetId"]
    return subnet_id


def _drop_subnet(d: Deployed, subnet_id: str) -> None:
    d.client("batch").update_compute_environment(
        computeEnvironment=d.queue.compute_environment_arn, computeResources={"subnets": list(d.outputs.subnet_ids)}
    )


def _cleanup_subnet(d: Deployed, subnet_id: str) -> None:
    ec2 = d.client("ec2")
    table = ec2.describe_route_tables(Filters=[{"Name": "association.subnet-id", "Values": [subnet_id]}])
    for assoc in table["RouteTables"][0]["Associations"]:
        if assoc.get("SubnetId") == subnet_id:
            ec2.disassociate_route_table(AssociationId=assoc["RouteTableAssociationId"])
    ec2.delete_subnet(SubnetId=subnet_id)


def _max_vcpus(value: Callable[[Deployed], int]) -> Callable[..., None]:
    def apply(d: Deployed, *_: Any) -> None:
        d.client("batch").update_compute_environment(
            computeEnvironment=d.queue.compute_environment_arn, computeResources={"maxvCpus": value(d)}
        )

    return apply


def _full_vcpus(d: Deployed) -> int:
    from stacks.catalog import load_catalog

    return d.queue.max_nodes * load_catalog().types[d.queue.instance_type].vcpus


def _profile_path(d: Deployed) -> Path:
    return d.metaflow_home / f"config_{MF_PROFILE}.json"


def _wrong_efa(d: Deployed) -> str:
    path = _profile_path(d)
    before = path.read_text()
    path.write_text(json.dumps({**json.loads(before), "METAFLOW_BATCH_EFA": 4}))
    return before


def _restore_profile(d: Deployed, before: str) -> None:
    _profile_path(d).write_text(before)


def _dns_hostnames(value: bool) -> Callable[..., None]:
    def apply(d: Deployed, *_: Any) -> None:
        d.client("ec2").modify_vpc_attribute(VpcId=d.outputs.vpc_id, EnableDnsHostnames={"Value": value})

    return apply


def _route_to_igw(d: Deployed) -> tuple[str, str]:
    ec2 = d.client("ec2")
    table = ec2.describe_route_tables(Filters=[{"Name": "association.subnet-id", "Values": [d.outputs.subnet_ids[0]]}])
    rt = table["RouteTables"][0]
    nat = next(r["NatGatewayId"] for r in rt["Routes"] if r.get("DestinationCidrBlock") == "0.0.0.0/0")
    igw = ec2.describe_internet_gateways(Filters=[{"Name": "attachment.vpc-id", "Values": [d.outputs.vpc_id]}])
    gateway = igw["InternetGateways"][0]["InternetGatewayId"]
    ec2.replace_route(RouteTableId=rt["RouteTableId"], DestinationCidrBlock="0.0.0.0/0", GatewayId=gateway)
    return rt["RouteTableId"], nat


def _route_to_nat(d: Deployed, saved: tuple[str, str]) -> None:
    table, nat = saved
    d.client("ec2").replace_route(RouteTableId=table, DestinationCidrBlock="0.0.0.0/0", NatGatewayId=nat)


BREAKAGES = [
    Breakage("efa-sg-self-rule-revoked", "sg.efa-self", None, "aws ec2 authorize-security-group-ingress",
             _revoke_efa_self, _grant_efa_self),
    Breakage("default-sg-self-rule-revoked", "sg.default-self", None, "aws ec2 authorize-security-group-ingress",
             _revoke_default_self, _grant_default_self),
    Breakage("queue-disabled", "queue.state", "train", "aws batch update-job-queue", _queue_state("DISABLED"),
             _queue_state("ENABLED")),
    Breakage("ce-disabled", "ce.state", "train", "--state ENABLED", _ce_state("DISABLED"), _ce_state("ENABLED")),
    Breakage("launch-template-version-not-used", "lt.version", "train", "launchTemplate={launchTemplateId=",
             _new_template_version, _use_template_version),
    Breakage("subnet-in-another-az", "subnets.az", "train", "--compute-resources subnets=", _subnet_in_other_az,
             _drop_subnet),
    Breakage("max-vcpus-lowered", "ce.max-vcpus", "train", "--compute-resources maxvCpus=",
             _max_vcpus(lambda d: _full_vcpus(d) // 2), _max_vcpus(_full_vcpus)),
    Breakage("metaflow-profile-wrong-efa", "metaflow.efa", None, "set METAFLOW_BATCH_EFA to", _wrong_efa,
             _restore_profile, fix_is_command=False),
    Breakage("vpc-dns-hostnames-off", "vpc.dns", None, "--enable-dns-hostnames", _dns_hostnames(False),
             _dns_hostnames(True)),
    Breakage("subnet-routes-to-internet-gateway", "subnets.private", "train", "NAT gateway", _route_to_igw,
             _route_to_nat, fix_is_command=False),
]  # fmt: skip


@pytest.mark.parametrize("case", BREAKAGES, ids=[b.name for b in BREAKAGES])
def test_breakage_gives_exactly_its_fail_and_fix(deployed: Deployed, case: Breakage) -> None:
    saved = case.brk(deployed)
    try:
        rc, rows = deployed.doctor()
        failed = fails(rows)
        assert [(r["check"], r["queue"]) for r in failed] == [(case.check, case.queue)], failed
        assert rc == 1
        (row,) = failed
        assert case.fix in row["fix"], row
        fix = row["fix"]
    finally:
        if not (case.fix_is_command and AWS_CLI):
            case.undo(deployed, saved)
    if case.fix_is_command and AWS_CLI:
        # The fix line, verbatim, through the AWS CLI against the sandbox.
        done = subprocess.run(
            ["bash", "-c", fix], env=deployed.env, capture_output=True, text=True, timeout=120, check=False
        )
        assert done.returncode == 0, done.stderr
    if case.name == "subnet-in-another-az":
        _cleanup_subnet(deployed, saved)
    rc, rows = deployed.doctor()
    assert (rc, fails(rows)) == (0, []), "the fix did not restore a healthy stack"


def test_cannot_start_without_the_stack(deployed: Deployed) -> None:
    done = deployed.run("doctor", "--stack", "no-such-stack", check_rc=2)
    assert done.stdout == ""
    assert done.stderr.startswith(f"doctor: stack 'no-such-stack' not found in {REGION}")
    assert done.stderr.count("\n") == 1
