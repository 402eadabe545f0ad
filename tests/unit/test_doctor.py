"""`python -m kit doctor` against moto in-process: a healthy environment built with real boto3
calls passes; then each breakage (made with boto3, or built in where moto cannot change a
resource after creation) gives exactly the expected FAIL/WARN/SKIP and fix line. CLI tests
cover the exit codes, --json, --queue and the one-line errors."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import botocore.session
import moto
import pytest
from botocore.exceptions import ClientError
from botocore.parsers import ResponseParserError

from constructs_lib.efa_layout import InterfaceSlot, plan_interfaces
from kit import doctor
from kit.doctor_checks import (
    CheckResult,
    Live,
    explain_runnable,
    is_unsupported,
    metaflow_profile_path,
    run_checks,
    self_rules,
)
from stacks.catalog import load_catalog
from stacks.outputs import parse_outputs

ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
AZ = "us-east-1a"
STACK = "doctor-test"
PROFILE = "multinode"
CATALOG = load_catalog()
P5 = CATALOG.types["p5.48xlarge"]


class Clients:
    """One botocore session and one client per service for every test: a fresh session parses
    each service model again and a fresh client builds hundreds of methods (seconds per test).
    moto intercepts at the botocore event level, so a client outlives each mock_aws context."""

    region_name = REGION

    def __init__(self) -> None:
        self._session = boto3.Session(botocore_session=botocore.session.get_session(), region_name=REGION)
        self._clients: dict[str, Any] = {}

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = self._session.client(service)
        return self._clients[service]


CLIENTS = Clients()


def session() -> Clients:
    return CLIENTS


# --- a healthy environment, built with boto3 ------------------------------------------------


@dataclass
class Spec:
    """Knobs for what moto cannot change after creation (CE compute resources, LT data)."""

    instance_types: tuple[str, ...] = ("p5.48xlarge",)
    max_nodes: int = 4
    max_vcpus: int | None = None  # default: max_nodes x vCPUs
    ce_type: str = "EC2"
    efa_count: int | None = None  # default: every EFA card
    slots: tuple[InterfaceSlot, ...] | None = None  # default: the kit's layout for efa_count
    efa_output: int | None = None  # the EfaInterfaces output; default: the layout's EFA count
    metadata: dict[str, Any] = field(
        default_factory=lambda: {"HttpEndpoint": "enabled", "HttpTokens": "required", "HttpPutResponseHopLimit": 2}
    )
    encrypted: bool = True
    lt_version: str = "1"  # what the CE names
    private_cidr: str = "10.40.0.0/24"
    extra_subnet_az: str | None = None  # a second CE subnet in this AZ
    placement_group: bool = True
    other_ce_first: bool = False
    capacity_target: dict[str, str] | None = None  # CapacityReservationTarget of the launch template


@dataclass
class Env:
    spec: Spec
    ids: dict[str, str]
    outputs: dict[str, str]
    pg_supported: bool
    home: Path

    @property
    def ec2(self) -> Any:
        return session().client("ec2")

    @property
    def batch(self) -> Any:
        return session().client("batch")

    def live(self, profile: str | None = None, stack: dict[str, Any] | None = None) -> Live:
        return Live(
            session=session(),
            outputs=parse_outputs(self.outputs),
            stack_name=STACK,
            catalog=CATALOG,
            stack=stack,
            env={"METAFLOW_HOME": str(self.home)},
            metaflow_profile=profile,
        )

    def run(self, **kwargs: Any) -> list[CheckResult]:
        return run_checks(self.live(**kwargs))

    def write_profile(self, data: Any, profile: str = PROFILE) -> Path:
        path = metaflow_profile_path({"METAFLOW_HOME": str(self.home)}, profile)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(data if isinstance(data, str) else json.dumps(data))
        return path


def _iam(iam: Any) -> tuple[str, str]:
    trust = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}
            ],
        }
    )
    role = iam.create_role(RoleName="batch-service", AssumeRolePolicyDocument=trust)["Role"]["Arn"]
    iam.create_role(RoleName="instance", AssumeRolePolicyDocument=trust)
    profile = iam.create_instance_profile(InstanceProfileName="instance")["InstanceProfile"]["Arn"]
    iam.add_role_to_instance_profile(InstanceProfileName="instance", RoleName="instance")
    return role, profile


def _self_rule(group_id: str) -> list[dict[str, Any]]:
    return [{"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": group_id}]}]


def build(spec: Spec, home: Path) -> Env:
    ec2, batch = session().client("ec2"), session().client("batch")
    service_role, instance_profile = _iam(session().client("iam"))

    vpc = ec2.create_vpc(CidrBlock="10.40.0.0/16")["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsSupport={"Value": True})
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    private = ec2.create_subnet(VpcId=vpc, CidrBlock=spec.private_cidr, AvailabilityZone=AZ)["Subnet"]["SubnetId"]
    public = ec2.create_subnet(VpcId=vpc, CidrBlock="10.40.200.0/24", AvailabilityZone=AZ)["Subnet"]["SubnetId"]
    igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
    public_rt = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
    ec2.create_route(RouteTableId=public_rt, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
    ec2.associate_route_table(RouteTableId=public_rt, SubnetId=public)
    eip = ec2.allocate_address(Domain="vpc")["AllocationId"]
    nat = ec2.create_nat_gateway(SubnetId=public, AllocationId=eip)["NatGateway"]["NatGatewayId"]
    private_rt = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
    ec2.create_route(RouteTableId=private_rt, DestinationCidrBlock="0.0.0.0/0", NatGatewayId=nat)
    ec2.associate_route_table(RouteTableId=private_rt, SubnetId=private)
    subnets = [private]
    if spec.extra_subnet_az:
        other = ec2.create_subnet(VpcId=vpc, CidrBlock="10.40.100.0/24", AvailabilityZone=spec.extra_subnet_az)
        ec2.associate_route_table(RouteTableId=private_rt, SubnetId=other["Subnet"]["SubnetId"])
        subnets.append(other["Subnet"]["SubnetId"])

    sg = ec2.create_security_group(GroupName="efa", Description="efa", VpcId=vpc)["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=sg, IpPermissions=_self_rule(sg))
    ec2.authorize_security_group_egress(GroupId=sg, IpPermissions=_self_rule(sg))
    # AWS gives every VPC's default group a self rule; plain moto gives none (the sandbox's
    # compatibility layer does, when another test applied it in this process).
    default_group = ec2.describe_security_groups(
        Filters=[{"Name": "vpc-id", "Values": [vpc]}, {"Name": "group-name", "Values": ["default"]}]
    )["SecurityGroups"][0]
    default_sg = default_group["GroupId"]
    if not self_rules(default_group)[0]:
        ec2.authorize_security_group_ingress(GroupId=default_sg, IpPermissions=_self_rule(default_sg))

    pg_name = "doctor-pg"
    try:
        ec2.create_placement_group(GroupName=pg_name, Strategy="cluster")
        pg_supported = True
    except NotImplementedError:  # moto 5.2.5 without the sandbox's compatibility layer
        pg_supported = False

    facts = CATALOG.types[spec.instance_types[0]]
    efa_count = spec.efa_count or facts.max_efa_interfaces
    slots = spec.slots or plan_interfaces(facts.network_cards, efa_count, family=facts.family)
    lt = ec2.create_launch_template(
        LaunchTemplateName="doctor-lt",
        LaunchTemplateData={
            "NetworkInterfaces": [
                {
                    "NetworkCardIndex": s.network_card_index,
                    "DeviceIndex": s.device_index,
                    "InterfaceType": s.interface_type,
                    "Groups": [sg],
                    "DeleteOnTermination": True,
                }
                for s in slots
            ],
            "MetadataOptions": spec.metadata,
            **(
                {"CapacityReservationSpecification": {"CapacityReservationTarget": spec.capacity_target}}
                if spec.capacity_target
                else {}
            ),
            "BlockDeviceMappings": [
                {
                    "DeviceName": "/dev/xvda",
                    "Ebs": {"VolumeSize": 200, "VolumeType": "gp3", "Encrypted": spec.encrypted},
                }
            ],
        },
    )["LaunchTemplate"]["LaunchTemplateId"]

    resources: dict[str, Any] = {
        "type": spec.ce_type,
        "allocationStrategy": "BEST_FIT_PROGRESSIVE",
        "minvCpus": 0,
        "maxvCpus": spec.max_vcpus if spec.max_vcpus is not None else spec.max_nodes * facts.vcpus,
        "instanceTypes": list(spec.instance_types),
        "subnets": subnets,
        "instanceRole": instance_profile,
        "launchTemplate": {"launchTemplateId": lt, "version": spec.lt_version},
    }
    if spec.placement_group:
        resources["placementGroup"] = pg_name

    def create_ce(name: str) -> str:
        # AWS forbids securityGroupIds next to launch-template interfaces (aws/aws-cdk#21577), and the
        # sandbox's compatibility layer enforces that; plain moto insists on them (KeyError without).
        try:
            made = batch.create_compute_environment(
                computeEnvironmentName=name,
                type="MANAGED",
                state="ENABLED",
                computeResources=resources,
                serviceRole=service_role,
            )
        except (KeyError, ClientError):
            made = batch.create_compute_environment(
                computeEnvironmentName=name,
                type="MANAGED",
                state="ENABLED",
                computeResources={**resources, "securityGroupIds": [sg]},
                serviceRole=service_role,
            )
        arn: str = made["computeEnvironmentArn"]
        return arn

    ce = create_ce("doctor-ce")
    order = [{"order": 1, "computeEnvironment": ce}]
    if spec.other_ce_first:
        order = [
            {"order": 1, "computeEnvironment": create_ce("someone-elses-ce")},
            {"order": 2, "computeEnvironment": ce},
        ]
    queue = batch.create_job_queue(
        jobQueueName="doctor-train", state="ENABLED", priority=1, computeEnvironmentOrder=order
    )

    efa_devices = sum(1 for s in slots if s.is_efa)
    outputs = {
        "VpcId": vpc,
        "SecurityGroupId": sg,
        "SubnetIds": private,
        "AvailabilityZone": AZ,
        "QueueNames": "train",
        "MetaflowProfile": PROFILE,
        "TrainJobQueueArn": queue["jobQueueArn"],
        "TrainJobQueueName": queue["jobQueueName"],
        "TrainComputeEnvironmentArn": ce,
        "TrainEfaInterfaces": str(spec.efa_output if spec.efa_output is not None else efa_devices),
        "TrainGpusPerNode": str(facts.gpus),
        "TrainInstanceType": spec.instance_types[0],
        "TrainMaxNodes": str(spec.max_nodes),
        "TrainPlacementGroupName": pg_name,
        "TrainLaunchTemplateId": lt,
        "TrainLaunchTemplateVersion": "1",
    }
    ids = {
        "vpc": vpc, "private": private, "public": public, "sg": sg, "default_sg": default_sg, "lt": lt, "ce": ce,
        "queue": queue["jobQueueArn"], "private_rt": private_rt, "igw": igw, "nat": nat,
    }  # fmt: skip
    return Env(spec, ids, outputs, pg_supported, home)


@pytest.fixture
def make_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Env]]:
    for key in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(key, raising=False)
    # Doctor reads no AMI; moto's thousands of default AMIs (and their snapshots) cost seconds a test.
    monkeypatch.setenv("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
    with moto.mock_aws():
        yield lambda **kw: build(Spec(**kw), tmp_path / "metaflow")


def by_id(results: list[CheckResult], queue: str | None = "train") -> dict[str, CheckResult]:
    return {r.check: r for r in results if r.queue in (queue, None)}


def fails(results: list[CheckResult]) -> set[str]:
    return {r.check for r in results if r.status == "FAIL"}


# --- the healthy environment ----------------------------------------------------------------


def test_healthy_environment_has_no_fail(make_env: Callable[..., Env]) -> None:
    env = make_env()
    env.write_profile({"METAFLOW_BATCH_JOB_QUEUE": "doctor-train", "METAFLOW_DEFAULT_DATASTORE": "s3"})
    results = env.run()
    assert fails(results) == set(), [r for r in results if r.status == "FAIL"]
    got = by_id(results)
    expected_pass = {
        "sg.efa-self", "sg.default-self", "vpc.dns", "metaflow.profile", "ce.status", "ce.state", "ce.type",
        "ce.instance-type", "ce.max-vcpus", "lt.version", "lt.efa", "lt.imds", "lt.encryption", "subnets.az",
        "subnets.private", "subnets.addresses", "queue.state", "queue.order", "queue.runnable",
    }  # fmt: skip
    assert {k for k, r in got.items() if r.status == "PASS"} >= expected_pass
    # p5.48xlarge: 32 EFA interfaces, the primary is "efa" (P5 layout), 2 addresses a node.
    assert "32 EFA interfaces" in got["lt.efa"].detail
    assert "4 more nodes x 2 per node" in got["subnets.addresses"].detail
    assert "maxvCpus 768 >= maxNodes 4 x 192 vCPUs" in got["ce.max-vcpus"].detail
    # No efa key in the profile: doctor says where the value belongs.
    assert got["metaflow.efa"].status == "SKIP"
    assert "@batch(efa=32" in got["metaflow.efa"].fix
    # Without outputs read from CloudFormation there is no stack status to judge.
    assert got["stack.status"].status == "SKIP"


def test_placement_group_skips_where_the_endpoint_lacks_the_api(make_env: Callable[..., Env]) -> None:
    env = make_env()
    pg = by_id(env.run())["placement-group"]
    if env.pg_supported:  # the sandbox's compatibility layer was applied in this process
        assert pg.status == "PASS", pg
    else:
        assert pg.status == "SKIP"
        assert "does not implement" in pg.detail and "describe_placement_groups" in pg.detail


def test_every_non_pass_has_a_one_line_fix(make_env: Callable[..., Env]) -> None:
    env = make_env(max_vcpus=192, metadata={"HttpTokens": "optional"}, encrypted=False, extra_subnet_az="us-east-1b")
    env.batch.update_job_queue(jobQueue=env.ids["queue"], state="DISABLED")
    for r in env.run():
        if r.status in ("FAIL", "WARN"):
            assert r.fix and "\n" not in r.fix, r


# --- breakages ------------------------------------------------------------------------------


def _revoke_efa_ingress(env: Env) -> None:
    env.ec2.revoke_security_group_ingress(GroupId=env.ids["sg"], IpPermissions=_self_rule(env.ids["sg"]))


def _revoke_efa_egress_everywhere(env: Env) -> None:
    sg = env.ids["sg"]
    env.ec2.revoke_security_group_egress(GroupId=sg, IpPermissions=_self_rule(sg))
    env.ec2.revoke_security_group_egress(
        GroupId=sg, IpPermissions=[{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]
    )


def _revoke_default_self(env: Env) -> None:
    env.ec2.revoke_security_group_ingress(
        GroupId=env.ids["default_sg"], IpPermissions=_self_rule(env.ids["default_sg"])
    )


def _dns_hostnames_off(env: Env) -> None:
    env.ec2.modify_vpc_attribute(VpcId=env.ids["vpc"], EnableDnsHostnames={"Value": False})


def _disable_ce(env: Env) -> None:
    env.batch.update_compute_environment(computeEnvironment=env.ids["ce"], state="DISABLED")


def _disable_queue(env: Env) -> None:
    env.batch.update_job_queue(jobQueue=env.ids["queue"], state="DISABLED")


def _new_lt_version(env: Env) -> None:
    # The full data: moto ignores SourceVersion (AWS would copy version 1 and apply the change).
    (v1,) = env.ec2.describe_launch_template_versions(LaunchTemplateId=env.ids["lt"], Versions=["1"])[
        "LaunchTemplateVersions"
    ]
    data = {**v1["LaunchTemplateData"], "UserData": "IyEvYmluL3NoCg=="}
    env.ec2.create_launch_template_version(LaunchTemplateId=env.ids["lt"], LaunchTemplateData=data)


def _route_through_igw(env: Env) -> None:
    env.ec2.replace_route(
        RouteTableId=env.ids["private_rt"], DestinationCidrBlock="0.0.0.0/0", GatewayId=env.ids["igw"]
    )


def _no_default_route(env: Env) -> None:
    env.ec2.delete_route(RouteTableId=env.ids["private_rt"], DestinationCidrBlock="0.0.0.0/0")


def _endpoints_only(env: Env) -> None:
    _no_default_route(env)
    env.ec2.create_vpc_endpoint(
        VpcId=env.ids["vpc"], ServiceName=f"com.amazonaws.{REGION}.s3", RouteTableIds=[env.ids["private_rt"]]
    )


def _delete_second_subnet(env: Env) -> None:
    subnet = env.batch.describe_compute_environments(computeEnvironments=[env.ids["ce"]])["computeEnvironments"][0][
        "computeResources"
    ]["subnets"][1]
    tables = env.ec2.describe_route_tables(Filters=[{"Name": "association.subnet-id", "Values": [subnet]}])
    for assoc in tables["RouteTables"][0]["Associations"]:
        if assoc.get("SubnetId") == subnet:
            env.ec2.disassociate_route_table(AssociationId=assoc["RouteTableAssociationId"])
    env.ec2.delete_subnet(SubnetId=subnet)


def _delete_queue_ce(env: Env) -> None:
    env.batch.delete_compute_environment(computeEnvironment=env.ids["ce"])


@dataclass(frozen=True)
class Case:
    name: str
    expect: dict[str, tuple[str, str]]  # check id -> (status, a fragment of detail or fix)
    spec: dict[str, Any] = field(default_factory=dict)
    mutate: Callable[[Env], None] | None = None
    fails: frozenset[str] | None = None  # default: the FAILs in expect


# The generic multi-card layout (ENA primary, EFA-only at card 0 device 1) written onto a P5.
P5_GENERIC = (
    InterfaceSlot(0, 0, "interface"),
    InterfaceSlot(0, 1, "efa-only"),
    *(InterfaceSlot(card, 0, "efa-only") for card in range(1, 32)),
)
CASES = [
    Case("efa-sg-ingress-revoked", {"sg.efa-self": ("FAIL", "authorize-security-group-ingress")},
         mutate=_revoke_efa_ingress),
    Case("efa-sg-egress-revoked", {"sg.efa-self": ("FAIL", "authorize-security-group-egress")},
         mutate=_revoke_efa_egress_everywhere),
    Case("default-sg-self-revoked", {"sg.default-self": ("FAIL", "authorize-security-group-ingress")},
         mutate=_revoke_default_self),
    Case("dns-hostnames-off", {"vpc.dns": ("FAIL", "--enable-dns-hostnames")}, mutate=_dns_hostnames_off),
    Case("ce-disabled", {"ce.state": ("FAIL", "--state ENABLED")}, mutate=_disable_ce),
    Case("queue-disabled", {"queue.state": ("FAIL", "update-job-queue --job-queue doctor-train --state ENABLED")},
         mutate=_disable_queue),
    Case("new-lt-version", {"lt.version": ("FAIL", "version=2")}, mutate=_new_lt_version),
    Case("ce-names-latest", {"lt.version": ("WARN", "version=2")}, spec={"lt_version": "$Latest"},
         mutate=_new_lt_version),
    Case("ce-names-default-behind", {"lt.version": ("FAIL", "$Default (version 1) but the latest is 2")},
         spec={"lt_version": "$Default"}, mutate=_new_lt_version),
    Case("max-vcpus-lowered", {"ce.max-vcpus": ("FAIL", "maxvCpus=768")}, spec={"max_vcpus": 384}),
    Case("subnet-in-other-az", {"subnets.az": ("FAIL", "subnets=")}, spec={"extra_subnet_az": "us-east-1b"}),
    Case("subnet-deleted", {"subnets.az": ("FAIL", "not found"), "subnets.private": ("SKIP", "not found")},
         spec={"extra_subnet_az": AZ}, mutate=_delete_second_subnet),
    Case("public-subnet", {"subnets.private": ("FAIL", "NAT gateway")}, mutate=_route_through_igw),
    Case("no-egress-route", {"subnets.private": ("FAIL", "no NAT route")}, mutate=_no_default_route),
    Case("endpoints-only", {"subnets.private": ("WARN", "interface endpoints")}, mutate=_endpoints_only),
    Case("subnet-too-small", {"subnets.addresses": ("FAIL", "larger subnet")},
         spec={"private_cidr": "10.40.0.0/28", "max_nodes": 8}),
    Case("two-instance-types", {"ce.instance-type": ("FAIL", "instanceTypes=p5.48xlarge")},
         spec={"instance_types": ("p5.48xlarge", "p4d.24xlarge")}),
    Case("type-without-efa", {"ce.instance-type": ("FAIL", "does not support EFA"), "lt.efa": ("FAIL", "supports 0")},
         spec={"instance_types": ("g5.xlarge",),
               "slots": (InterfaceSlot(0, 0, "interface"), InterfaceSlot(0, 1, "efa-only"))}),
    Case("spot-ce", {"ce.type": ("FAIL", "MANAGED EC2")}, spec={"ce_type": "SPOT"}),
    Case("imds-optional", {"lt.imds": ("FAIL", "HttpTokens optional")},
         spec={"metadata": {"HttpTokens": "optional", "HttpPutResponseHopLimit": 2}}),
    Case("hop-limit-1", {"lt.imds": ("FAIL", "hop limit 1")},
         spec={"metadata": {"HttpTokens": "required", "HttpPutResponseHopLimit": 1}}),
    Case("unencrypted-volume", {"lt.encryption": ("FAIL", "/dev/xvda not encrypted")}, spec={"encrypted": False}),
    Case("efa-only-primary",
         {"lt.efa": ("FAIL", "card 0/device 0 must be the primary")},
         spec={"slots": (InterfaceSlot(0, 0, "efa-only"), InterfaceSlot(1, 1, "efa-only"))}),
    Case("duplicate-card-device", {"lt.efa": ("FAIL", "used twice")},
         spec={"slots": (InterfaceSlot(0, 0, "efa"), InterfaceSlot(1, 1, "efa-only"),
                         InterfaceSlot(1, 1, "efa-only"))}),
    Case("generic-layout-on-p5", {"lt.efa": ("FAIL", "missing card 0/device 0 efa, card 1/device 1 efa-only")},
         spec={"slots": P5_GENERIC}),
    Case("fewer-efa-than-supported", {"lt.efa": ("WARN", 'efaInterfaces to "max"')}, spec={"efa_count": 8}),
    Case("efa-output-mismatch", {"lt.efa": ("FAIL", "EfaInterfaces output")}, spec={"efa_output": 16}),
    Case("queue-order", {"queue.order": ("FAIL", "order=1,computeEnvironment=")}, spec={"other_ce_first": True}),
    Case("no-placement-group", {"placement-group": ("FAIL", "placementGroup=doctor-pg")},
         spec={"placement_group": False}),
    Case("ce-deleted", {"ce.status": ("FAIL", "not found"), "ce.state": ("SKIP", "not found"),
                        "lt.efa": ("SKIP", "not found")}, mutate=_delete_queue_ce,
         fails=frozenset({"ce.status", "lt.version"})),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_breakage(make_env: Callable[..., Env], case: Case) -> None:
    env = make_env(**case.spec)
    if case.mutate:
        case.mutate(env)
    results = env.run()
    got = by_id(results)
    for check, (status, fragment) in case.expect.items():
        r = got[check]
        assert r.status == status, r
        assert fragment in r.detail or fragment in r.fix, r
    expected_fails = case.fails if case.fails is not None else {c for c, (s, _) in case.expect.items() if s == "FAIL"}
    assert fails(results) == expected_fails, [r for r in results if r.status == "FAIL"]


def test_live_instance_facts_come_from_the_endpoint(make_env: Callable[..., Env]) -> None:
    facts, source = make_env().live().instance_facts("g5.xlarge")
    assert source == "ec2:DescribeInstanceTypes"
    assert facts is not None and not facts.efa_supported and facts.vcpus == 4


def test_egress_to_anywhere_covers_the_outbound_half(make_env: Callable[..., Env]) -> None:
    env = make_env()
    env.ec2.revoke_security_group_egress(GroupId=env.ids["sg"], IpPermissions=_self_rule(env.ids["sg"]))
    assert by_id(env.run())["sg.efa-self"].status == "PASS"
    group = env.ec2.describe_security_groups(GroupIds=[env.ids["sg"]])["SecurityGroups"][0]
    assert self_rules(group) == (True, True)


@pytest.mark.parametrize(
    ("stack_status", "status"),
    [("CREATE_COMPLETE", "PASS"), ("UPDATE_IN_PROGRESS", "WARN"), ("UPDATE_ROLLBACK_COMPLETE", "WARN"),
     ("ROLLBACK_COMPLETE", "FAIL"), ("UPDATE_FAILED", "FAIL")],
)  # fmt: skip
def test_stack_status(make_env: Callable[..., Env], stack_status: str, status: str) -> None:
    env = make_env()
    results = run_checks(env.live(stack={"StackName": STACK, "StackStatus": stack_status}), queues=())
    assert by_id(results)["stack.status"].status == status


# --- the Metaflow profile -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("profile", "expect"),
    [
        ({"METAFLOW_BATCH_JOB_QUEUE": "doctor-train", "METAFLOW_BATCH_EFA": 32},
         {"metaflow.profile": ("PASS", "doctor-train"), "metaflow.efa": ("PASS", "METAFLOW_BATCH_EFA=32")}),
        ({"METAFLOW_BATCH_JOB_QUEUE": "doctor-train", "METAFLOW_BATCH_EFA": "4"},
         {"metaflow.efa": ("FAIL", "set METAFLOW_BATCH_EFA to 32")}),
        ({"METAFLOW_BATCH_JOB_QUEUE": "someone-elses-queue"},
         {"metaflow.profile": ("FAIL", "set METAFLOW_BATCH_JOB_QUEUE to doctor-train")}),
        ({"METAFLOW_DEFAULT_DATASTORE": "s3"}, {"metaflow.profile": ("FAIL", "has no METAFLOW_BATCH_JOB_QUEUE")}),
        ("{not json", {"metaflow.profile": ("FAIL", "not readable JSON"), "metaflow.efa": ("SKIP", "@batch(efa=32")}),
        ("[1, 2]", {"metaflow.profile": ("FAIL", "not an object")}),
        (None, {"metaflow.profile": ("SKIP", "python -m kit metaflow-config --stack doctor-test"),
                "metaflow.efa": ("SKIP", "@batch(efa=32")}),
    ],
    ids=["matches", "wrong-efa", "wrong-queue", "no-queue-key", "bad-json", "not-an-object", "absent"],
)  # fmt: skip
def test_metaflow_profile(make_env: Callable[..., Env], profile: Any, expect: dict[str, tuple[str, str]]) -> None:
    env = make_env()
    if profile is not None:
        env.write_profile(profile)
    got = by_id(env.run())
    for check, (status, fragment) in expect.items():
        assert got[check].status == status, got[check]
        assert fragment in got[check].detail or fragment in got[check].fix, got[check]


def test_metaflow_profile_option_and_arn_queue(make_env: Callable[..., Env]) -> None:
    env = make_env()
    env.write_profile({"METAFLOW_BATCH_JOB_QUEUE": env.ids["queue"]}, profile="other")
    assert by_id(env.run())["metaflow.profile"].status == "SKIP"  # config_multinode.json does not exist
    assert by_id(env.run(profile="other"))["metaflow.profile"].status == "PASS"
    assert metaflow_profile_path({"METAFLOW_HOME": "/x"}, "") == Path("/x/config.json")


# --- RUNNABLE jobs --------------------------------------------------------------------------

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def _job(reason: str | None = None, nodes: int = 2, minutes: int = 30) -> dict[str, Any]:
    job: dict[str, Any] = {
        "jobId": "j-1", "jobName": "train-step", "status": "RUNNABLE",
        "createdAt": int(NOW.timestamp() * 1000) - minutes * 60_000, "nodeProperties": {"numNodes": nodes},
    }  # fmt: skip
    if reason:
        job["statusReason"] = reason
    return job


@pytest.mark.parametrize(
    ("job", "status", "fragment"),
    [
        (_job("CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY - Service cannot fulfill the capacity requested for instance "
              "type [p5.48xlarge]"), "WARN", "no free p5.48xlarge capacity"),
        (_job("MISCONFIGURATION:COMPUTE_ENVIRONMENT_MAX_RESOURCE - CE(s) associated with the job queue cannot meet "
              "the CPU requirement of the job."), "FAIL", "more vCPUs than the CE's maxvCpus"),
        (_job("MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT - no instance type fits"), "FAIL",
         "more vCPUs, memory or GPUs"),
        (_job("MISCONFIGURATION:SERVICE_ROLE_PERMISSIONS - Batch cannot assume"), "FAIL", "service role"),
        (_job("ACTION_REQUIRED - CE(s) associated with the job queue are invalid."), "FAIL", "INVALID"),
        (_job("MISCONFIGURATION:SOMETHING_NEW - x"), "FAIL", "misconfiguration"),
        (_job(nodes=8), "FAIL", "needs 8 nodes x 192 vCPUs = 1536 but maxvCpus is 768"),
        (_job(), "WARN", "waiting for capacity"),
    ],
    ids=["capacity", "max-resource", "job-resource", "service-role", "invalid-ce", "unknown-misconfig",
         "too-many-nodes", "no-reason"],
)  # fmt: skip
def test_runnable_reasons_explained(job: dict[str, Any], status: str, fragment: str) -> None:
    v = explain_runnable(job, instance_type="p5.48xlarge", vcpus_per_node=192, max_vcpus=768, ce_enabled=True, now=NOW)
    assert v.status == status
    assert fragment in v.detail
    assert "RUNNABLE for 30 min" in v.detail
    assert v.fix


def test_runnable_job_on_disabled_ce() -> None:
    v = explain_runnable(_job(), instance_type="p5.48xlarge", vcpus_per_node=192, max_vcpus=768, ce_enabled=False,
                         now=NOW)  # fmt: skip
    assert (v.status, "DISABLED" in v.detail) == ("FAIL", True)


# --- unsupported APIs -----------------------------------------------------------------------


def _client_error(code: str, status: int, message: str = "") -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}, "X"
    )


def test_unsupported_api_classification() -> None:
    assert is_unsupported(NotImplementedError("The describe_placement_groups action has not been implemented"))
    assert is_unsupported(_client_error("NotImplemented", 501))
    assert is_unsupported(_client_error("InvalidAction", 400))
    assert is_unsupported(_client_error("500", 500))
    assert is_unsupported(ResponseParserError("Unable to parse response: b'<title>500 Internal Server Error</title>'"))
    assert not is_unsupported(_client_error("InvalidGroup.NotFound", 400))
    assert not is_unsupported(_client_error("AccessDenied", 403))


# --- the CLI --------------------------------------------------------------------------------


def _stack_from(env: Env, name: str = STACK) -> None:
    """A CloudFormation stack that carries the environment's outputs (literal values)."""
    template = {
        "Resources": {"Handle": {"Type": "AWS::CloudFormation::WaitConditionHandle"}},
        "Outputs": {k: {"Value": v} for k, v in env.outputs.items()},
    }
    session().client("cloudformation").create_stack(StackName=name, TemplateBody=json.dumps(template))


@pytest.fixture
def cli_env(make_env: Callable[..., Env], monkeypatch: pytest.MonkeyPatch) -> Env:
    env = make_env()
    _stack_from(env)
    monkeypatch.setenv("METAFLOW_HOME", str(env.home))
    return env


def test_cli_table_and_exit_code(cli_env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    assert doctor.main(["--stack", STACK, "--region", REGION]) == 0
    out, err = capsys.readouterr()
    assert err == ""  # stderr is not a terminal: no progress line
    assert out.startswith(f"doctor: stack {STACK} in {REGION}, queues: train")
    assert "PASS    CloudFormation stack status" in out
    assert "0 FAIL" in out


def test_cli_json_and_exit_1_on_fail(cli_env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    _disable_queue(cli_env)
    assert doctor.main(["--stack", STACK, "--region", REGION, "--json"]) == 1
    rows = json.loads(capsys.readouterr().out)
    assert {r["status"] for r in rows} <= {"PASS", "WARN", "FAIL", "SKIP"}
    (failed,) = [r for r in rows if r["status"] == "FAIL"]
    assert (failed["check"], failed["queue"]) == ("queue.state", "train")
    assert set(failed) == {"check", "title", "queue", "status", "detail", "fix"}


def test_cli_table_shows_fix_under_fail(cli_env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    _revoke_default_self(cli_env)
    assert doctor.main(["--stack", STACK, "--region", REGION, "--queue", "train"]) == 1
    lines = capsys.readouterr().out.splitlines()
    (i,) = [n for n, line in enumerate(lines) if line.startswith("FAIL")]
    assert "VPC default security group" in lines[i]
    assert lines[i + 1].strip().startswith("fix: aws ec2 authorize-security-group-ingress")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--stack", "nope"], "stack 'nope' not found in us-east-1"),
        (["--stack", STACK, "--queue", "infer"], "--queue 'infer' is not a queue of stack 'doctor-test'; valid: train"),
        (["--stack", STACK, "--aws-profile", "nope"], "The config profile (nope) could not be found"),
    ],
)
def test_cli_cannot_start(cli_env: Env, capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    assert doctor.main([*argv, "--region", REGION]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.strip() == f"doctor: {message}" or (err.count("\n") == 1 and message in err), err


def test_cli_stack_without_kit_outputs(make_env: Callable[..., Env], capsys: pytest.CaptureFixture[str]) -> None:
    env = make_env()
    env.outputs = {"VpcId": env.ids["vpc"]}
    _stack_from(env, "not-ours")
    assert doctor.main(["--stack", "not-ours", "--region", REGION]) == 2
    assert "has no output 'QueueNames'" in capsys.readouterr().err


def test_progress_on_a_terminal(
    cli_env: Env, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Tty()
    monkeypatch.setattr(sys, "stderr", tty)
    assert doctor.main(["--stack", STACK, "--region", REGION, "--json"]) == 0
    assert "checking train: job queue ENABLED and VALID..." in tty.getvalue()
    assert tty.getvalue().endswith("\r")  # the line is cleared before the result is printed
    json.loads(capsys.readouterr().out)  # stdout holds only the JSON


def test_cli_no_credentials_one_line_exit_2(tmp_path: Path) -> None:
    """Through `python -m kit`: no credentials anywhere -> one line on stderr, exit 2, no traceback."""
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    done = subprocess.run(
        [sys.executable, "-m", "kit", "doctor", "--stack", STACK, "--region", REGION],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith("doctor: no usable AWS credentials")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_cli_no_region_is_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for key in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    assert doctor.main(["--stack", STACK]) == 2
    assert capsys.readouterr().err == "doctor: no AWS region: pass --region or set AWS_REGION\n"


def test_doctor_is_registered() -> None:
    from kit.cli import COMMANDS

    assert COMMANDS["doctor"][0] == "kit.doctor"


def test_render_table_counts() -> None:
    rows = [
        CheckResult("a", "first", None, "PASS", "ok"),
        CheckResult("b", "second", "train", "WARN", "meh", "do x"),
    ]
    text = doctor.render_table(rows, "hdr")
    assert "[train] second" in text and "fix: do x" in text
    assert text.splitlines()[-1] == "1 PASS, 1 WARN, 0 FAIL, 0 SKIP"


# --- capacity reservations (issue 7) ---------------------------------------------------------


def test_no_reservation_targeted_passes(make_env: Callable[..., Env]) -> None:
    got = by_id(make_env().run())["capacity"]
    assert got.status == "PASS" and "On-Demand" in got.detail


def test_reservation_check_skips_where_the_endpoint_lacks_the_api(make_env: Callable[..., Env]) -> None:
    # moto 5.2 has no DescribeCapacityReservations: doctor must SKIP with the reason, not crash.
    env = make_env(capacity_target={"CapacityReservationId": "cr-0123456789abcdef0"})
    got = by_id(env.run())["capacity"]
    assert got.status == "SKIP" and "does not implement" in got.detail, got


RESERVATION = {
    "CapacityReservationId": "cr-0123456789abcdef0",
    "InstanceType": "p5.48xlarge",
    "AvailabilityZone": "us-east-1a",
    "State": "active",
    "TotalInstanceCount": 4,
    "AvailableInstanceCount": 4,
    "PlacementGroupArn": "arn:aws:ec2:us-east-1:123456789012:placement-group/kit-pg",
}


@pytest.mark.parametrize(
    ("changes", "status", "fragment"),
    [
        ({}, "PASS", "4 of 4 instances free"),
        ({"InstanceType": "p4d.24xlarge"}, "FAIL", "is for p4d.24xlarge"),
        ({"AvailabilityZone": "us-east-1b"}, "FAIL", "is in us-east-1b"),
        ({"State": "expired"}, "FAIL", "is expired"),
        ({"State": "cancelled"}, "FAIL", "is cancelled"),
        ({"State": "scheduled", "ReservationType": "capacity-block"}, "WARN", "Capacity Block"),
        ({"TotalInstanceCount": 2, "AvailableInstanceCount": 2}, "FAIL", "holds 2 instances, maxNodes is 4"),
        ({"PlacementGroupArn": "arn:aws:ec2:us-east-1:123456789012:placement-group/other"}, "FAIL", "other"),
        ({"PlacementGroupArn": None}, "WARN", "not created in a placement group"),
        ({"PlacementGroupArn": None, "ReservationType": "capacity-block"}, "PASS", "Capacity Block"),
    ],
    ids=[
        "healthy", "wrong-type", "wrong-az", "expired", "cancelled", "block-not-started", "too-small",
        "other-placement-group", "no-placement-group", "block-without-group",
    ],
)  # fmt: skip
def test_reservation_verdict(changes: dict[str, Any], status: str, fragment: str) -> None:
    from kit.doctor_checks import reservation_verdict

    record = {**RESERVATION, **changes}
    verdict = reservation_verdict(
        record, instance_type="p5.48xlarge", zone="us-east-1a", max_nodes=4, placement_group="kit-pg"
    )
    assert verdict.status == status and fragment in verdict.detail, verdict
    assert (verdict.fix != "") == (status != "PASS")
