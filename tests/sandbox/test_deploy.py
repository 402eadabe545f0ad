"""The real `cdk deploy` of the kit into the sandbox, checked resource by resource with boto3
(kit/sandbox/verify.py): the default config (cdk.json) and a two-queue config, then an in-place
update, then `cdk destroy` leaving nothing behind. The cdk CLI's own success message is never
taken as proof. Tests in this module share deploys; the destroy test runs last (file order)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from kit.sandbox.verify import (
    check_compute_environment,
    check_job_queue,
    check_launch_template,
    check_security_group,
    decode_user_data,
)
from tests.conftest import default_config
from tests.sandbox.conftest import Deployment, SandboxSession

pytestmark = pytest.mark.sandbox

AREAS = ("stack", "outputs", "network", "security group")

TWO_QUEUES: dict[str, Any] = {
    "stackName": "mn-sandbox-two",
    "region": "us-east-1",
    "availabilityZone": "us-east-1b",
    "network": {"vpcCidr": "10.41.0.0/16", "sshSources": ["203.0.113.0/24", "2001:db8::/32"]},
    "queues": [
        {"name": "p4d", "instanceType": "p4d.24xlarge", "maxNodes": 2, "rootVolumeGiB": 200},
        {"name": "big-p5", "instanceType": "p5.48xlarge", "maxNodes": 8, "minNodes": 0, "capacityWaitMinutes": 30},
    ],
    "tags": {"Project": "sandbox-test"},
}


@pytest.fixture(scope="module")
def default_stack(deployed_stack: Callable[[dict[str, Any]], Deployment]) -> Deployment:
    return deployed_stack(default_config())


@pytest.fixture(scope="module")
def two_queues(deployed_stack: Callable[[dict[str, Any]], Deployment]) -> Deployment:
    return deployed_stack(TWO_QUEUES)


@pytest.fixture(scope="module")
def two_queues_updated(
    two_queues: Deployment, deployed_stack: Callable[[dict[str, Any]], Deployment]
) -> tuple[Deployment, Deployment]:
    """The two-queue stack before and after a second deploy with the p4d queue's rootVolumeGiB changed."""
    changed = copy.deepcopy(TWO_QUEUES)
    changed["queues"][0]["rootVolumeGiB"] = 400
    return two_queues, deployed_stack(changed)


def _assert_clean(deployment: Deployment) -> None:
    result = deployment.verification
    assert result.problems == [], "\n".join(result.problems)
    for area in (*AREAS, *(f"queue {q.name}" for q in deployment.config.queues)):
        assert area in result.by_area, f"{area} was not checked"


# ------------------------------------------------------------------------------------------
# Default config (cdk.json): what `make demo` deploys
# ------------------------------------------------------------------------------------------


def test_default_config_deploys_and_every_resource_checks_out(default_stack: Deployment) -> None:
    _assert_clean(default_stack)
    outputs = default_stack.outputs
    assert [q.name for q in outputs.queues] == [q.name for q in default_stack.config.queues]


def test_default_security_group_rules(sandbox: SandboxSession, default_stack: Deployment) -> None:
    ec2 = sandbox.client("ec2")
    group_id = default_stack.outputs.security_group_id
    assert check_security_group(ec2, default_stack.expected, default_stack.outputs) == []
    group = ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]
    self_in = [r for r in group["IpPermissions"] if any(p["GroupId"] == group_id for p in r["UserIdGroupPairs"])]
    self_out = [r for r in group["IpPermissionsEgress"] if any(p["GroupId"] == group_id for p in r["UserIdGroupPairs"])]
    assert [r["IpProtocol"] for r in self_in] == ["-1"] and [r["IpProtocol"] for r in self_out] == ["-1"]


def test_default_launch_template_is_efa_ready(sandbox: SandboxSession, default_stack: Deployment) -> None:
    ec2 = sandbox.client("ec2")
    queue = default_stack.outputs.queues[0]
    plan = default_stack.expected.plans[0]
    assert (
        check_launch_template(ec2, default_stack.expected, plan, queue, default_stack.outputs.security_group_id) == []
    )
    data = ec2.describe_launch_template_versions(
        LaunchTemplateId=queue.launch_template_id, Versions=[queue.launch_template_version]
    )["LaunchTemplateVersions"][0]["LaunchTemplateData"]
    interfaces = data["NetworkInterfaces"]
    # p5.48xlarge, efaInterfaces "max": 32 EFA devices, the primary an "efa" interface (P5 layout).
    assert queue.efa_interfaces == 32 == len(interfaces)
    assert [i["InterfaceType"] for i in interfaces].count("efa") == 1
    parts = decode_user_data(data)
    assert [kind for kind, _ in parts] == ["text/x-shellscript"] * len(default_stack.expected.user_data_scripts)


def test_verification_catches_a_broken_resource(sandbox: SandboxSession, default_stack: Deployment) -> None:
    """The checks are not vacuous: break two resources with boto3, see the exact problems, repair."""
    ec2, batch = sandbox.client("ec2"), sandbox.client("batch")
    expected, outputs = default_stack.expected, default_stack.outputs
    group_id, queue, plan = outputs.security_group_id, outputs.queues[0], expected.plans[0]
    self_rule = {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": group_id}]}
    ec2.revoke_security_group_ingress(GroupId=group_id, IpPermissions=[self_rule])
    batch.update_compute_environment(computeEnvironment=queue.compute_environment_arn, computeResources={"maxvCpus": 8})
    try:
        assert check_security_group(ec2, expected, outputs) == [
            f"security group {group_id}: no inbound all-traffic rule from itself (EFA needs it)"
        ]
        problems = check_compute_environment(batch, expected, plan, queue, outputs)
        assert len(problems) == 1 and f"maxvCpus is 8, expected {plan.max_vcpus}" in problems[0]
    finally:
        ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=[self_rule])
        batch.update_compute_environment(
            computeEnvironment=queue.compute_environment_arn, computeResources={"maxvCpus": plan.max_vcpus}
        )
    assert check_security_group(ec2, expected, outputs) == []
    assert check_compute_environment(batch, expected, plan, queue, outputs) == []


# ------------------------------------------------------------------------------------------
# Two queues (-c config=FILE), then an in-place update
# ------------------------------------------------------------------------------------------


def test_two_queue_config_deploys_and_every_resource_checks_out(two_queues: Deployment) -> None:
    _assert_clean(two_queues)
    outputs = two_queues.outputs
    assert [q.name for q in outputs.queues] == ["p4d", "big-p5"]
    assert [q.instance_type for q in outputs.queues] == ["p4d.24xlarge", "p5.48xlarge"]
    assert [q.efa_interfaces for q in outputs.queues] == [4, 32]
    assert outputs.availability_zone == "us-east-1b"
    # Each queue has its own placement group, launch template, CE and job queue.
    for field in ("placement_group_name", "launch_template_id", "compute_environment_arn", "job_queue_arn"):
        assert len({getattr(q, field) for q in outputs.queues}) == 2, field


def test_two_queue_ssh_sources(two_queues: Deployment) -> None:
    # IPv4 and IPv6 sources both present, nothing else open from outside (checked at deploy time).
    assert two_queues.verification.by_area["security group"] == []
    assert set(two_queues.config.network.ssh_sources) == {"203.0.113.0/24", "2001:db8::/32"}


def test_update_changes_resources_in_place(
    sandbox: SandboxSession, two_queues_updated: tuple[Deployment, Deployment]
) -> None:
    before, after = two_queues_updated
    _assert_clean(after)
    old, new = before.outputs, after.outputs
    for q_old, q_new in zip(old.queues, new.queues, strict=True):
        assert q_new.job_queue_arn == q_old.job_queue_arn, "the job queue was replaced"
        assert q_new.compute_environment_arn == q_old.compute_environment_arn, "the CE was replaced"
        assert q_new.launch_template_id == q_old.launch_template_id
        assert q_new.placement_group_name == q_old.placement_group_name
    changed, unchanged = new.queues
    assert (changed.launch_template_version, unchanged.launch_template_version) == ("2", "1")

    batch, ec2 = sandbox.client("batch"), sandbox.client("ec2")
    env = batch.describe_compute_environments(computeEnvironments=[changed.compute_environment_arn])
    assert env["computeEnvironments"][0]["computeResources"]["launchTemplate"] == {
        "launchTemplateId": changed.launch_template_id,
        "version": "2",
    }
    data = ec2.describe_launch_template_versions(LaunchTemplateId=changed.launch_template_id, Versions=["2"])
    volume = data["LaunchTemplateVersions"][0]["LaunchTemplateData"]["BlockDeviceMappings"][0]["Ebs"]
    assert volume["VolumeSize"] == 400
    plan = after.expected.plans[0]
    assert check_launch_template(ec2, after.expected, plan, changed, new.security_group_id) == []
    assert check_job_queue(batch, after.expected, plan, changed) == []


# ------------------------------------------------------------------------------------------
# Teardown: runs last
# ------------------------------------------------------------------------------------------

# Resources checked through another one: rules and inline policies go with their group / role,
# a route with its table, CDK's metadata is no AWS resource.
COVERED_BY_ANOTHER = {
    "AWS::EC2::SecurityGroupIngress": "its security group",
    "AWS::EC2::SecurityGroupEgress": "its security group",
    "AWS::EC2::Route": "its route table",
    "AWS::IAM::Policy": "its role",
    "AWS::CDK::Metadata": "not an AWS resource",
}


def _stack_resources(sandbox: SandboxSession, stack_name: str) -> list[tuple[str, str]]:
    paginator = sandbox.client("cloudformation").get_paginator("list_stack_resources")
    return [
        (r["ResourceType"], r.get("PhysicalResourceId", ""))
        for page in paginator.paginate(StackName=stack_name)
        for r in page["StackResourceSummaries"]
        if r.get("LogicalResourceId")  # moto lists a resource it does not emulate as an empty entry
    ]


def _template_types(deployment: Deployment) -> set[str]:
    (template,) = deployment.assembly.glob("*.template.json")
    return {r["Type"] for r in json.loads(template.read_text())["Resources"].values()}


def _live_ids(sandbox: SandboxSession) -> dict[str, set[str]]:
    """Physical ids of everything alive in the emulator, per CloudFormation type."""
    ec2, batch, iam, logs = (sandbox.client(s) for s in ("ec2", "batch", "iam", "logs"))
    tables = ec2.describe_route_tables()["RouteTables"]
    gateways = ec2.describe_internet_gateways()["InternetGateways"]
    return {
        "AWS::EC2::VPC": {v["VpcId"] for v in ec2.describe_vpcs()["Vpcs"]},
        "AWS::EC2::Subnet": {s["SubnetId"] for s in ec2.describe_subnets()["Subnets"]},
        "AWS::EC2::RouteTable": {t["RouteTableId"] for t in tables},
        "AWS::EC2::SubnetRouteTableAssociation": {
            a["RouteTableAssociationId"] for t in tables for a in t["Associations"]
        },
        "AWS::EC2::InternetGateway": {g["InternetGatewayId"] for g in gateways},
        "AWS::EC2::VPCGatewayAttachment": {a["VpcId"] for g in gateways for a in g.get("Attachments", [])},
        "AWS::EC2::EIP": {a["PublicIp"] for a in ec2.describe_addresses()["Addresses"]},
        "AWS::EC2::NatGateway": {
            n["NatGatewayId"] for n in ec2.describe_nat_gateways()["NatGateways"] if n["State"] != "deleted"
        },
        "AWS::EC2::VPCEndpoint": {
            e["VpcEndpointId"] for e in ec2.describe_vpc_endpoints()["VpcEndpoints"] if e["State"] != "deleted"
        },
        "AWS::EC2::FlowLog": {f["FlowLogId"] for f in ec2.describe_flow_logs()["FlowLogs"]},
        "AWS::EC2::SecurityGroup": {g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"]},
        "AWS::EC2::PlacementGroup": {g["GroupName"] for g in ec2.describe_placement_groups()["PlacementGroups"]},
        "AWS::EC2::LaunchTemplate": {t["LaunchTemplateId"] for t in ec2.describe_launch_templates()["LaunchTemplates"]},
        "AWS::Logs::LogGroup": {g["logGroupName"] for g in logs.describe_log_groups()["logGroups"]},
        "AWS::IAM::Role": {r["RoleName"] for r in iam.list_roles()["Roles"]},
        "AWS::IAM::InstanceProfile": {
            p["InstanceProfileName"] for p in iam.list_instance_profiles()["InstanceProfiles"]
        },
        "AWS::Batch::ComputeEnvironment": {
            e["computeEnvironmentArn"] for e in batch.describe_compute_environments()["computeEnvironments"]
        },
        "AWS::Batch::JobQueue": {q["jobQueueArn"] for q in batch.describe_job_queues()["jobQueues"]},
    }


def test_destroy_leaves_nothing_behind(
    sandbox: SandboxSession, default_stack: Deployment, two_queues_updated: tuple[Deployment, Deployment]
) -> None:
    """`cdk destroy` (no emulator reset): every resource the two stacks had is gone, checked per
    resource with boto3. Other tests' stacks in the same emulator are left alone."""
    _, two = two_queues_updated
    resources = [r for d in (default_stack, two) for r in _stack_resources(sandbox, d.stack_name)]
    live = _live_ids(sandbox)
    kinds = _template_types(default_stack) | _template_types(two)
    assert kinds - set(live) - set(COVERED_BY_ANOTHER) == set(), "a resource type of the template has no check"
    assert {kind for kind, _ in resources} == kinds - {"AWS::CDK::Metadata"}
    # Sanity: before the destroy, the check sees every resource it then expects gone.
    assert [(k, i) for k, i in resources if k in live and i not in live[k]] == []

    for deployment in (default_stack, two):
        sandbox.destroy(deployment)

    live = _live_ids(sandbox)
    assert [(k, i) for k, i in resources if k in live and i in live[k]] == []
