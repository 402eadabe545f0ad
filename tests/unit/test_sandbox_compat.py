"""The sandbox's moto compatibility layer (kit/sandbox/compat.py), in-process: one test per gap
shows that AWS's behaviour is there once the layer is applied, using real boto3 calls (and
CloudFormation stacks) against moto's mock. The layer is applied for this module only and
restored afterwards, because moto's classes are shared by the whole test session."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from kit.sandbox import compat, server

REGION = "us-east-1"


@pytest.fixture(scope="module", autouse=True)
def layer() -> Iterator[tuple[str, ...]]:
    names = compat.apply()
    yield names
    compat.restore()


@pytest.fixture
def aws() -> Iterator[boto3.session.Session]:
    with mock_aws():
        yield boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)


def error_code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def template(resources: dict[str, Any], outputs: dict[str, Any] | None = None, **extra: Any) -> str:
    body: dict[str, Any] = {"Resources": resources, **extra}
    if outputs:
        body["Outputs"] = {k: {"Value": v} for k, v in outputs.items()}
    return json.dumps(body)


def deploy(cfn: Any, name: str, body: str, kind: str = "CREATE", **kwargs: Any) -> dict[str, Any]:
    """What `cdk deploy` does: a change set, then its execution; returns the stack."""
    cfn.create_change_set(
        StackName=name, ChangeSetName="cdk-deploy-change-set", TemplateBody=body, ChangeSetType=kind, **kwargs
    )
    cfn.execute_change_set(StackName=name, ChangeSetName="cdk-deploy-change-set")
    stack: dict[str, Any] = cfn.describe_stacks(StackName=name)["Stacks"][0]
    return stack


def outputs_of(stack: dict[str, Any]) -> dict[str, str]:
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


def vpc_and_subnet(ec2: Any) -> tuple[str, str]:
    vpc = ec2.create_vpc(CidrBlock="10.40.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.40.0.0/24", AvailabilityZone="us-east-1a")["Subnet"]["SubnetId"]
    return vpc, subnet


# ---------------------------------------------------------------------------------------------
# The layer itself
# ---------------------------------------------------------------------------------------------


def test_every_patch_is_applied_once(layer: tuple[str, ...]) -> None:
    assert layer == tuple(p.name for p in compat.PATCHES)
    assert compat.apply() == layer  # idempotent


def test_refuses_another_moto_version(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(compat.CompatError, match=r"written for moto 5\.2\.5, but moto 5\.3\.0 is installed"):
        compat.check_moto_version("5.3.0")
    compat.check_moto_version(compat.MOTO_VERSION)
    # The server entry point stops before listening, with one line and exit code 3.
    monkeypatch.setattr(compat, "installed_moto_version", lambda: "5.3.0")
    monkeypatch.setattr(compat, "_applied", set())
    assert server.main(["--port", "0"]) == server.EXIT_MOTO
    err = capsys.readouterr().err
    assert err.startswith("error: the sandbox's moto compatibility layer") and "Traceback" not in err


def test_restore_undoes_every_change() -> None:
    from moto.cloudformation.parsing import get_model_map
    from moto.ec2.models import EC2Backend

    compat.restore()
    try:
        assert not hasattr(EC2Backend, "create_placement_group")
        assert "AWS::EC2::PlacementGroup" not in get_model_map()
        assert "AWS::EC2::SecurityGroupEgress" not in get_model_map()
    finally:
        compat.apply()
    assert hasattr(EC2Backend, "create_placement_group")
    assert "AWS::EC2::PlacementGroup" in get_model_map()


# ---------------------------------------------------------------------------------------------
# EC2
# ---------------------------------------------------------------------------------------------


def test_placement_group_calls(aws: boto3.session.Session) -> None:
    ec2 = aws.client("ec2")
    tags = [{"ResourceType": "placement-group", "Tags": [{"Key": "team", "Value": "ml"}]}]
    created = ec2.create_placement_group(GroupName="train", Strategy="cluster", TagSpecifications=tags)[
        "PlacementGroup"
    ]
    assert created["GroupName"] == "train" and created["Strategy"] == "cluster" and created["State"] == "available"
    assert created["GroupId"].startswith("pg-") and created["Tags"] == [{"Key": "team", "Value": "ml"}]
    ec2.create_placement_group(GroupName="spread-one", Strategy="spread")

    assert ec2.describe_placement_groups(GroupNames=["train"])["PlacementGroups"] == [created]
    by_strategy = ec2.describe_placement_groups(Filters=[{"Name": "strategy", "Values": ["cluster"]}])
    assert [g["GroupName"] for g in by_strategy["PlacementGroups"]] == ["train"]
    by_tag = ec2.describe_placement_groups(Filters=[{"Name": "tag:team", "Values": ["ml"]}])
    assert [g["GroupName"] for g in by_tag["PlacementGroups"]] == ["train"]
    assert {g["GroupName"] for g in ec2.describe_placement_groups()["PlacementGroups"]} == {"train", "spread-one"}

    with pytest.raises(ClientError) as duplicate:
        ec2.create_placement_group(GroupName="train", Strategy="cluster")
    assert error_code(duplicate) == "InvalidPlacementGroup.Duplicate"
    with pytest.raises(ClientError) as bad:
        ec2.create_placement_group(GroupName="x", Strategy="clustered")
    assert error_code(bad) == "InvalidParameterValue"

    ec2.delete_placement_group(GroupName="train")
    for call in (
        lambda: ec2.describe_placement_groups(GroupNames=["train"]),
        lambda: ec2.delete_placement_group(GroupName="train"),
    ):
        with pytest.raises(ClientError) as unknown:
            call()
        assert error_code(unknown) == "InvalidPlacementGroup.Unknown"


def test_placement_group_resource(aws: boto3.session.Session) -> None:
    cfn, ec2 = aws.client("cloudformation"), aws.client("ec2")
    group = {"Type": "AWS::EC2::PlacementGroup", "Properties": {"Strategy": "cluster"}}
    body = template({"Group": group}, {"Name": {"Ref": "Group"}, "Attr": {"Fn::GetAtt": ["Group", "GroupName"]}})
    out = outputs_of(deploy(cfn, "pg", body))
    assert out["Name"] == out["Attr"] and out["Name"].startswith("pg-Group-")
    assert ec2.describe_placement_groups(GroupNames=[out["Name"]])["PlacementGroups"][0]["Strategy"] == "cluster"

    # Any property change replaces the group (AWS): a new name, the old one gone.
    spread = {"Type": "AWS::EC2::PlacementGroup", "Properties": {"Strategy": "spread"}}
    new = outputs_of(deploy(cfn, "pg", template({"Group": spread}, {"Name": {"Ref": "Group"}}), kind="UPDATE"))
    assert new["Name"] != out["Name"]
    assert [(g["GroupName"], g["Strategy"]) for g in ec2.describe_placement_groups()["PlacementGroups"]] == [
        (new["Name"], "spread")
    ]
    cfn.delete_stack(StackName="pg")
    assert ec2.describe_placement_groups()["PlacementGroups"] == []


def _group_resources(vpc: str, ingress_cidr: str) -> dict[str, Any]:
    return {
        "Group": {
            "Type": "AWS::EC2::SecurityGroup",
            "Properties": {
                "GroupDescription": "efa",
                "VpcId": vpc,
                "SecurityGroupIngress": [
                    {
                        "IpProtocol": "tcp",
                        "FromPort": 22,
                        "ToPort": 22,
                        "CidrIp": ingress_cidr,
                        "Description": "ssh v4",
                    },
                    {
                        "IpProtocol": "tcp",
                        "FromPort": 22,
                        "ToPort": 22,
                        "CidrIpv6": "2001:db8::/32",
                        "Description": "ssh v6",
                    },
                ],
                "SecurityGroupEgress": [{"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "CidrIp": "10.0.0.0/8"}],
            },
        },
        "SelfEgress": {
            "Type": "AWS::EC2::SecurityGroupEgress",
            "Properties": {
                "GroupId": {"Ref": "Group"},
                "IpProtocol": "-1",
                "DestinationSecurityGroupId": {"Ref": "Group"},
                "Description": "to members",
            },
        },
    }


def test_security_group_egress_resource(aws: boto3.session.Session) -> None:
    cfn, ec2 = aws.client("cloudformation"), aws.client("ec2")
    vpc, _ = vpc_and_subnet(ec2)
    out = outputs_of(deploy(cfn, "sg", template(_group_resources(vpc, "203.0.113.0/24"), {"Id": {"Ref": "Group"}})))
    group = ec2.describe_security_groups(GroupIds=[out["Id"]])["SecurityGroups"][0]
    to_self = [r for r in group["IpPermissionsEgress"] if r["UserIdGroupPairs"]]
    assert to_self == [
        {
            "IpProtocol": "-1",
            "UserIdGroupPairs": [{"Description": "to members", "UserId": "123456789012", "GroupId": out["Id"]}],
            "IpRanges": [],
            "Ipv6Ranges": [],
            "PrefixListIds": [],
        }
    ]
    resource = cfn.describe_stack_resource(StackName="sg", LogicalResourceId="SelfEgress")["StackResourceDetail"]
    assert resource["PhysicalResourceId"].startswith("sgr-")


def test_security_group_inline_rules(aws: boto3.session.Session) -> None:
    cfn, ec2 = aws.client("cloudformation"), aws.client("ec2")
    vpc, _ = vpc_and_subnet(ec2)
    out = outputs_of(deploy(cfn, "sg", template(_group_resources(vpc, "203.0.113.0/24"), {"Id": {"Ref": "Group"}})))
    group = ec2.describe_security_groups(GroupIds=[out["Id"]])["SecurityGroups"][0]
    ssh = [r for r in group["IpPermissions"] if r.get("FromPort") == 22]
    assert [r["IpRanges"] for r in ssh if r["IpRanges"]] == [[{"Description": "ssh v4", "CidrIp": "203.0.113.0/24"}]]
    assert [r["Ipv6Ranges"] for r in ssh if r["Ipv6Ranges"]] == [
        [{"Description": "ssh v6", "CidrIpv6": "2001:db8::/32"}]
    ]
    # Inline egress replaces the default allow-all rule.
    assert not any(r["IpProtocol"] == "-1" and r["IpRanges"] for r in group["IpPermissionsEgress"])
    assert any(r.get("FromPort") == 443 for r in group["IpPermissionsEgress"])

    # A changed rule is changed in place: same group id, old source gone, new one there.
    updated = deploy(
        cfn, "sg", template(_group_resources(vpc, "198.51.100.0/24"), {"Id": {"Ref": "Group"}}), kind="UPDATE"
    )
    assert updated["StackStatus"] == "UPDATE_COMPLETE" and outputs_of(updated)["Id"] == out["Id"]
    group = ec2.describe_security_groups(GroupIds=[out["Id"]])["SecurityGroups"][0]
    v4 = {r["CidrIp"] for rule in group["IpPermissions"] for r in rule["IpRanges"]}
    assert v4 == {"198.51.100.0/24"}


def test_default_security_group_allows_its_members(aws: boto3.session.Session) -> None:
    ec2 = aws.client("ec2")
    vpc, _ = vpc_and_subnet(ec2)
    default = ec2.describe_security_groups(
        Filters=[{"Name": "vpc-id", "Values": [vpc]}, {"Name": "group-name", "Values": ["default"]}]
    )["SecurityGroups"][0]
    assert [(r["IpProtocol"], [p["GroupId"] for p in r["UserIdGroupPairs"]]) for r in default["IpPermissions"]] == [
        ("-1", [default["GroupId"]])
    ]


def test_vpc_resource_applies_dns_attributes(aws: boto3.session.Session) -> None:
    ec2, cfn = aws.client("ec2"), aws.client("cloudformation")
    props = {"CidrBlock": "10.60.0.0/16", "EnableDnsSupport": True, "EnableDnsHostnames": True}
    stack = deploy(
        cfn, "dns", template({"Vpc": {"Type": "AWS::EC2::VPC", "Properties": props}}, {"Id": {"Ref": "Vpc"}})
    )
    vpc = outputs_of(stack)["Id"]
    for attribute, key in (("enableDnsSupport", "EnableDnsSupport"), ("enableDnsHostnames", "EnableDnsHostnames")):
        assert ec2.describe_vpc_attribute(VpcId=vpc, Attribute=attribute)[key]["Value"] is True


def _network_resources() -> dict[str, Any]:
    """The pieces a CDK Vpc with a NAT gateway, an S3 endpoint and flow logs is made of."""
    vpc = {"Ref": "Vpc"}
    return {
        "Vpc": {"Type": "AWS::EC2::VPC", "Properties": {"CidrBlock": "10.50.0.0/16"}},
        "Igw": {"Type": "AWS::EC2::InternetGateway", "Properties": {}},
        "IgwAttachment": {
            "Type": "AWS::EC2::VPCGatewayAttachment",
            "Properties": {"VpcId": vpc, "InternetGatewayId": {"Ref": "Igw"}},
        },
        "Public": {
            "Type": "AWS::EC2::Subnet",
            "Properties": {"VpcId": vpc, "CidrBlock": "10.50.1.0/24", "AvailabilityZone": "us-east-1a"},
        },
        "Private": {
            "Type": "AWS::EC2::Subnet",
            "Properties": {"VpcId": vpc, "CidrBlock": "10.50.0.0/24", "AvailabilityZone": "us-east-1a"},
        },
        "PublicTable": {"Type": "AWS::EC2::RouteTable", "Properties": {"VpcId": vpc}},
        "PublicAssoc": {
            "Type": "AWS::EC2::SubnetRouteTableAssociation",
            "Properties": {"RouteTableId": {"Ref": "PublicTable"}, "SubnetId": {"Ref": "Public"}},
        },
        "PublicDefault": {
            "Type": "AWS::EC2::Route",
            "Properties": {
                "RouteTableId": {"Ref": "PublicTable"},
                "DestinationCidrBlock": "0.0.0.0/0",
                "GatewayId": {"Ref": "Igw"},
            },
            "DependsOn": ["IgwAttachment"],
        },
        "Eip": {"Type": "AWS::EC2::EIP", "Properties": {"Domain": "vpc"}},
        "Nat": {
            "Type": "AWS::EC2::NatGateway",
            "Properties": {"SubnetId": {"Ref": "Public"}, "AllocationId": {"Fn::GetAtt": ["Eip", "AllocationId"]}},
            "DependsOn": ["PublicDefault", "PublicAssoc"],
        },
        "PrivateTable": {"Type": "AWS::EC2::RouteTable", "Properties": {"VpcId": vpc}},
        "PrivateAssoc": {
            "Type": "AWS::EC2::SubnetRouteTableAssociation",
            "Properties": {"RouteTableId": {"Ref": "PrivateTable"}, "SubnetId": {"Ref": "Private"}},
        },
        "PrivateDefault": {
            "Type": "AWS::EC2::Route",
            "Properties": {
                "RouteTableId": {"Ref": "PrivateTable"},
                "DestinationCidrBlock": "0.0.0.0/0",
                "NatGatewayId": {"Ref": "Nat"},
            },
        },
        "S3Endpoint": {
            "Type": "AWS::EC2::VPCEndpoint",
            "Properties": {
                "VpcId": vpc,
                "ServiceName": {"Fn::Join": ["", ["com.amazonaws.", {"Ref": "AWS::Region"}, ".s3"]]},
                "VpcEndpointType": "Gateway",
                "RouteTableIds": [{"Ref": "PrivateTable"}],
            },
        },
        "FlowLogRole": {
            "Type": "AWS::IAM::Role",
            "Properties": {
                "AssumeRolePolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"Service": "vpc-flow-logs.amazonaws.com"},
                            "Action": "sts:AssumeRole",
                        }
                    ],
                }
            },
        },
        "FlowLogGroup": {"Type": "AWS::Logs::LogGroup", "Properties": {}},
        "FlowLog": {
            "Type": "AWS::EC2::FlowLog",
            "Properties": {
                "ResourceId": vpc,
                "ResourceType": "VPC",
                "TrafficType": "REJECT",
                "LogDestinationType": "cloud-watch-logs",
                "LogGroupName": {"Ref": "FlowLogGroup"},
                "DeliverLogsPermissionArn": {"Fn::GetAtt": ["FlowLogRole", "Arn"]},
            },
        },
    }


def test_network_resources_are_deleted_with_the_stack(aws: boto3.session.Session) -> None:
    cfn, ec2 = aws.client("cloudformation"), aws.client("ec2")
    out = outputs_of(
        deploy(cfn, "net", template(_network_resources(), {"Vpc": {"Ref": "Vpc"}, "Private": {"Ref": "Private"}}))
    )
    # The association is real: the private subnet routes through the NAT gateway.
    table = ec2.describe_route_tables(Filters=[{"Name": "association.subnet-id", "Values": [out["Private"]]}])[
        "RouteTables"
    ]
    assert len(table) == 1 and any(r.get("NatGatewayId", "").startswith("nat-") for r in table[0]["Routes"])
    assoc = cfn.describe_stack_resource(StackName="net", LogicalResourceId="PrivateAssoc")["StackResourceDetail"]
    assert assoc["PhysicalResourceId"].startswith("rtbassoc-")

    cfn.delete_stack(StackName="net")
    stacks = cfn.list_stacks()["StackSummaries"]
    assert [s["StackStatus"] for s in stacks if s["StackName"] == "net"] == ["DELETE_COMPLETE"]
    assert [v["VpcId"] for v in ec2.describe_vpcs()["Vpcs"] if not v["IsDefault"]] == []
    assert ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [out["Vpc"]]}])["Subnets"] == []
    assert ec2.describe_internet_gateways()["InternetGateways"] == []
    assert ec2.describe_addresses()["Addresses"] == []
    assert ec2.describe_flow_logs()["FlowLogs"] == []
    assert ec2.describe_network_interfaces()["NetworkInterfaces"] == []
    # AWS, too, lists deleted NAT gateways and endpoints for a while.
    assert {n["State"] for n in ec2.describe_nat_gateways()["NatGateways"]} == {"deleted"}
    assert {e["State"] for e in ec2.describe_vpc_endpoints()["VpcEndpoints"]} == {"deleted"}


def test_deletion_order_puts_dependents_first() -> None:
    resources = {
        "Vpc": {"Type": "T"},
        "Table": {"Type": "T", "Properties": {"VpcId": {"Ref": "Vpc"}}},
        "Endpoint": {"Type": "T", "Properties": {"RouteTableIds": [{"Ref": "Table"}]}},
        "Role": {"Type": "T"},
        "Log": {"Type": "T", "Properties": {"Arn": {"Fn::Sub": "${Role.Arn}/x"}, "Name": {"Fn::GetAtt": "Vpc.Id"}}},
        "Late": {"Type": "T", "DependsOn": "Log"},
    }
    order = compat.deletion_order(resources)
    assert sorted(order) == sorted(resources)
    for dependent, dependency in [
        ("Table", "Vpc"),
        ("Endpoint", "Table"),
        ("Log", "Role"),
        ("Log", "Vpc"),
        ("Late", "Log"),
    ]:
        assert order.index(dependent) < order.index(dependency), (dependent, dependency, order)


# ---------------------------------------------------------------------------------------------
# AWS Batch
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def batch_parts(aws: boto3.session.Session) -> dict[str, str]:
    """A subnet, a security group, an instance profile and an EFA-style launch template."""
    ec2, iam = aws.client("ec2"), aws.client("iam")
    vpc, subnet = vpc_and_subnet(ec2)
    group = ec2.create_security_group(GroupName="efa", Description="efa", VpcId=vpc)["GroupId"]
    iam.create_role(RoleName="node", AssumeRolePolicyDocument="{}")
    profile = iam.create_instance_profile(InstanceProfileName="node")["InstanceProfile"]["Arn"]
    iam.add_role_to_instance_profile(InstanceProfileName="node", RoleName="node")
    interfaces = [{"NetworkCardIndex": 0, "DeviceIndex": 0, "InterfaceType": "efa", "Groups": [group]}]
    template_id = ec2.create_launch_template(
        LaunchTemplateName="efa", LaunchTemplateData={"NetworkInterfaces": interfaces}
    )["LaunchTemplate"]["LaunchTemplateId"]
    return {"vpc": vpc, "subnet": subnet, "group": group, "profile": profile, "template": template_id}


def _resources(parts: dict[str, str], **extra: Any) -> dict[str, Any]:
    return {
        "type": "EC2",
        "minvCpus": 0,
        "maxvCpus": 192,
        "instanceTypes": ["p4d.24xlarge"],
        "subnets": [parts["subnet"]],
        "instanceRole": parts["profile"],
        **extra,
    }


def test_compute_environment_without_service_role(aws: boto3.session.Session, batch_parts: dict[str, str]) -> None:
    batch, iam = aws.client("batch"), aws.client("iam")
    batch.create_compute_environment(
        computeEnvironmentName="ce-one",
        type="MANAGED",
        computeResources=_resources(batch_parts, securityGroupIds=[batch_parts["group"]]),
    )
    env = batch.describe_compute_environments(computeEnvironments=["ce-one"])["computeEnvironments"][0]
    role = iam.get_role(RoleName="AWSServiceRoleForBatch")["Role"]
    assert env["serviceRole"] == role["Arn"] and role["Path"] == "/aws-service-role/batch.amazonaws.com/"


def test_compute_environment_takes_groups_from_launch_template(
    aws: boto3.session.Session, batch_parts: dict[str, str]
) -> None:
    batch = aws.client("batch")
    template = {"launchTemplateId": batch_parts["template"], "version": "1"}
    batch.create_compute_environment(
        computeEnvironmentName="ce-one",
        type="MANAGED",
        computeResources=_resources(batch_parts, launchTemplate=template),
    )
    env = batch.describe_compute_environments(computeEnvironments=["ce-one"])["computeEnvironments"][0]
    assert env["status"] == "VALID" and "securityGroupIds" not in env["computeResources"]

    with pytest.raises(ClientError, match="exclusively allowed"):
        batch.create_compute_environment(
            computeEnvironmentName="both",
            type="MANAGED",
            computeResources=_resources(batch_parts, launchTemplate=template, securityGroupIds=[batch_parts["group"]]),
        )
    with pytest.raises(ClientError, match="At least 1 security group"):
        batch.create_compute_environment(
            computeEnvironmentName="none", type="MANAGED", computeResources=_resources(batch_parts)
        )


def test_update_compute_environment_applies_compute_resources(
    aws: boto3.session.Session, batch_parts: dict[str, str]
) -> None:
    batch, ec2 = aws.client("batch"), aws.client("ec2")
    first = {"launchTemplateId": batch_parts["template"], "version": "1"}
    batch.create_compute_environment(
        computeEnvironmentName="ce-one", type="MANAGED", computeResources=_resources(batch_parts, launchTemplate=first)
    )
    ec2.create_launch_template_version(
        LaunchTemplateId=batch_parts["template"],
        LaunchTemplateData={
            "NetworkInterfaces": [
                {"NetworkCardIndex": 0, "DeviceIndex": 0, "InterfaceType": "efa", "Groups": [batch_parts["group"]]}
            ]
        },
    )
    second = {"launchTemplateId": batch_parts["template"], "version": "2"}
    batch.update_compute_environment(
        computeEnvironment="ce-one", computeResources={"launchTemplate": second, "maxvCpus": 384}
    )
    resources = batch.describe_compute_environments(computeEnvironments=["ce-one"])["computeEnvironments"][0][
        "computeResources"
    ]
    assert resources["launchTemplate"] == second and resources["maxvCpus"] == 384 and resources["minvCpus"] == 0


def _batch_stack(parts: dict[str, str], max_vcpus: int, volume_gib: int, priority: int) -> str:
    interfaces = [{"NetworkCardIndex": 0, "DeviceIndex": 0, "InterfaceType": "efa", "Groups": [parts["group"]]}]
    volume = [{"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": volume_gib, "VolumeType": "gp3", "Encrypted": True}}]
    resources = {
        "Template": {
            "Type": "AWS::EC2::LaunchTemplate",
            "Properties": {"LaunchTemplateData": {"NetworkInterfaces": interfaces, "BlockDeviceMappings": volume}},
        },
        "Ce": {
            "Type": "AWS::Batch::ComputeEnvironment",
            "Properties": {
                "Type": "managed",  # as the CDK L2 writes it
                "State": "ENABLED",
                "ReplaceComputeEnvironment": False,
                "Tags": {"Project": "Kit"},
                "ComputeResources": {
                    "Type": "EC2",
                    "MinvCpus": 0,
                    "MaxvCpus": max_vcpus,
                    "InstanceTypes": ["p4d.24xlarge"],
                    "Subnets": [parts["subnet"]],
                    "InstanceRole": parts["profile"],
                    "Tags": {"Project": "Kit"},
                    "LaunchTemplate": {
                        "LaunchTemplateId": {"Ref": "Template"},
                        "Version": {"Fn::GetAtt": ["Template", "LatestVersionNumber"]},
                    },
                },
            },
        },
        "Queue": {
            "Type": "AWS::Batch::JobQueue",
            "Properties": {
                "Priority": priority,
                "ComputeEnvironmentOrder": [{"Order": 1, "ComputeEnvironment": {"Ref": "Ce"}}],
                "JobStateTimeLimitActions": [
                    {
                        "Action": "CANCEL",
                        "State": "RUNNABLE",
                        "Reason": "CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY",
                        "MaxTimeSeconds": 3600,
                    }
                ],
                "Tags": {"Project": "Kit"},
            },
        },
    }
    outputs = {
        "CeRef": {"Ref": "Ce"},
        "CeArn": {"Fn::GetAtt": ["Ce", "ComputeEnvironmentArn"]},
        "QueueRef": {"Ref": "Queue"},
        "QueueArn": {"Fn::GetAtt": ["Queue", "JobQueueArn"]},
    }
    return template(resources, outputs)


def test_compute_environment_resource(aws: boto3.session.Session, batch_parts: dict[str, str]) -> None:
    cfn, batch = aws.client("cloudformation"), aws.client("batch")
    out = outputs_of(deploy(cfn, "mn", _batch_stack(batch_parts, 192, 200, 1)))
    assert out["CeArn"] == out["CeRef"] and ":compute-environment/" in out["CeArn"]
    env = batch.describe_compute_environments(computeEnvironments=[out["CeArn"]])["computeEnvironments"][0]
    assert env["type"] == "MANAGED" and env["tags"] == {"Project": "Kit"}
    assert env["computeResources"]["tags"] == {"Project": "Kit"}  # tag keys keep their case
    assert env["serviceRole"].endswith("role/aws-service-role/batch.amazonaws.com/AWSServiceRoleForBatch")

    # ReplaceComputeEnvironment false: changed compute resources update the CE in place.
    out2 = outputs_of(deploy(cfn, "mn", _batch_stack(batch_parts, 384, 200, 1), kind="UPDATE"))
    assert out2["CeArn"] == out["CeArn"]
    env = batch.describe_compute_environments(computeEnvironments=[out["CeArn"]])["computeEnvironments"][0]
    assert env["computeResources"]["maxvCpus"] == 384

    cfn.delete_stack(StackName="mn")
    assert batch.describe_compute_environments()["computeEnvironments"] == []


def test_job_queue_resource(aws: boto3.session.Session, batch_parts: dict[str, str]) -> None:
    cfn, batch = aws.client("cloudformation"), aws.client("batch")
    out = outputs_of(deploy(cfn, "mn", _batch_stack(batch_parts, 192, 200, 1)))
    assert out["QueueArn"] == out["QueueRef"] and ":job-queue/" in out["QueueArn"]
    queue = batch.describe_job_queues(jobQueues=[out["QueueArn"]])["jobQueues"][0]
    assert queue["jobStateTimeLimitActions"] == [
        {
            "reason": "CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY",
            "state": "RUNNABLE",
            "maxTimeSeconds": 3600,
            "action": "CANCEL",
        }
    ]
    assert queue["tags"] == {"Project": "Kit"}
    assert queue["computeEnvironmentOrder"] == [{"order": 1, "computeEnvironment": out["CeArn"]}]

    out2 = outputs_of(deploy(cfn, "mn", _batch_stack(batch_parts, 192, 200, 5), kind="UPDATE"))
    assert out2["QueueArn"] == out["QueueArn"]
    assert batch.describe_job_queues(jobQueues=[out["QueueArn"]])["jobQueues"][0]["priority"] == 5

    cfn.delete_stack(StackName="mn")
    assert batch.describe_job_queues()["jobQueues"] == []


def test_dependents_follow_a_new_launch_template_version(
    aws: boto3.session.Session, batch_parts: dict[str, str]
) -> None:
    cfn, batch, ec2 = aws.client("cloudformation"), aws.client("batch"), aws.client("ec2")
    out = outputs_of(deploy(cfn, "mn", _batch_stack(batch_parts, 192, 200, 1)))
    stack = deploy(cfn, "mn", _batch_stack(batch_parts, 192, 300, 1), kind="UPDATE")
    assert stack["StackStatus"] == "UPDATE_COMPLETE"
    env = batch.describe_compute_environments(computeEnvironments=[out["CeArn"]])["computeEnvironments"][0]
    spec = env["computeResources"]["launchTemplate"]
    assert spec["version"] == "2" and outputs_of(stack)["CeArn"] == out["CeArn"]
    data = ec2.describe_launch_template_versions(LaunchTemplateId=spec["launchTemplateId"], Versions=["2"])
    assert data["LaunchTemplateVersions"][0]["LaunchTemplateData"]["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"] == 300


def test_multinode_job_definition_describes_its_nodes(aws: boto3.session.Session) -> None:
    batch = aws.client("batch")
    container = {
        "image": "busybox",
        "command": ["true"],
        "resourceRequirements": [{"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "512"}],
    }
    nodes = {"numNodes": 3, "mainNode": 0, "nodeRangeProperties": [{"targetNodes": "0:", "container": container}]}
    batch.register_job_definition(jobDefinitionName="mnp", type="multinode", nodeProperties=nodes)
    definition = batch.describe_job_definitions(jobDefinitionName="mnp")["jobDefinitions"][0]
    described = definition["nodeProperties"]
    assert (described["numNodes"], described["mainNode"]) == (3, 0)
    assert described["nodeRangeProperties"][0]["targetNodes"] == "0:"
    assert described["nodeRangeProperties"][0]["container"]["image"] == "busybox"


# ---------------------------------------------------------------------------------------------
# CloudFormation
# ---------------------------------------------------------------------------------------------


def _simple_stack(label: str, instance_type: str = "p5.48xlarge") -> str:
    """A resource moto supports on its own, so that these tests isolate CloudFormation's gaps."""
    lt = {"Type": "AWS::EC2::LaunchTemplate", "Properties": {"LaunchTemplateData": {"InstanceType": instance_type}}}
    return template({"Template": lt}, {"Id": {"Ref": "Template"}, "Label": label})


def test_change_sets_are_per_stack(aws: boto3.session.Session) -> None:
    cfn = aws.client("cloudformation")
    for stack in ("a", "b"):
        cfn.create_change_set(
            StackName=stack, ChangeSetName="cs", TemplateBody=_simple_stack(stack), ChangeSetType="CREATE"
        )
    assert cfn.describe_change_set(ChangeSetName="cs", StackName="a")["StackName"] == "a"
    assert [s["StackName"] for s in cfn.list_change_sets(StackName="b")["Summaries"]] == ["b"]

    cfn.execute_change_set(ChangeSetName="cs", StackName="a")
    statuses = {s["StackName"]: s["StackStatus"] for s in cfn.describe_stacks()["Stacks"]}
    assert statuses == {"a": "CREATE_COMPLETE", "b": "REVIEW_IN_PROGRESS"}

    cfn.delete_change_set(ChangeSetName="never-made", StackName="a")  # succeeds, as in AWS
    with pytest.raises(ClientError) as missing:
        cfn.describe_change_set(ChangeSetName="never-made", StackName="a")
    assert error_code(missing) == "ChangeSetNotFound"


def test_change_set_execution_reads_outputs_and_removes_change_sets(aws: boto3.session.Session) -> None:
    cfn = aws.client("cloudformation")
    stack = deploy(cfn, "a", _simple_stack("a"))
    assert outputs_of(stack)["Label"] == "a" and outputs_of(stack)["Id"].startswith("lt-")
    assert cfn.list_change_sets(StackName="a")["Summaries"] == []
    # The same template again is "no changes", which is how `cdk deploy` stays idempotent.
    cfn.create_change_set(StackName="a", ChangeSetName="again", TemplateBody=_simple_stack("a"), ChangeSetType="UPDATE")
    again = cfn.describe_change_set(ChangeSetName="again", StackName="a")
    assert again["Status"] == "FAILED" and "didn't contain changes" in again["StatusReason"]


def test_failed_change_set_fails_the_stack(aws: boto3.session.Session) -> None:
    cfn, ec2 = aws.client("cloudformation"), aws.client("ec2")
    body = template(
        {
            "Template": {"Type": "AWS::EC2::LaunchTemplate", "Properties": {"LaunchTemplateData": {}}},
            "Queue": {
                "Type": "AWS::Batch::JobQueue",
                "Properties": {
                    "Priority": 1,
                    "ComputeEnvironmentOrder": [
                        {
                            "Order": 1,
                            "ComputeEnvironment": "arn:aws:batch:us-east-1:123456789012:compute-environment/none",
                        }
                    ],
                },
                "DependsOn": "Template",
            },
        }
    )
    stack = deploy(cfn, "broken", body)  # ExecuteChangeSet itself succeeds, as in AWS
    assert stack["StackStatus"] == "ROLLBACK_COMPLETE"
    events = cfn.describe_stack_events(StackName="broken")["StackEvents"]
    assert any(
        e["ResourceStatus"] == "CREATE_FAILED" and "computeEnvironmentOrder" in e["ResourceStatusReason"]
        for e in events
    )
    assert ec2.describe_launch_templates()["LaunchTemplates"] == []  # rolled back


def test_undeletable_stack_is_delete_failed(aws: boto3.session.Session) -> None:
    cfn, ec2 = aws.client("cloudformation"), aws.client("ec2")
    out = outputs_of(
        deploy(
            cfn,
            "net",
            template(
                {"Vpc": {"Type": "AWS::EC2::VPC", "Properties": {"CidrBlock": "10.60.0.0/16"}}}, {"Vpc": {"Ref": "Vpc"}}
            ),
        )
    )
    ec2.create_subnet(VpcId=out["Vpc"], CidrBlock="10.60.0.0/24")  # made outside the stack
    cfn.delete_stack(StackName="net")
    stack = cfn.describe_stacks(StackName="net")["Stacks"][0]
    assert stack["StackStatus"] == "DELETE_FAILED"
    events = cfn.describe_stack_events(StackName="net")["StackEvents"]
    assert any(
        e["ResourceStatus"] == "DELETE_FAILED" and "DependencyViolation" in e["ResourceStatusReason"] for e in events
    )
    resources = cfn.list_stack_resources(StackName="net")["StackResourceSummaries"]
    assert [r["PhysicalResourceId"] for r in resources] == [out["Vpc"]]
    assert len([v for v in ec2.describe_vpcs()["Vpcs"] if not v["IsDefault"]]) == 1  # nothing re-created


def test_use_previous_value_of_ssm_parameter(aws: boto3.session.Session) -> None:
    cfn, ssm = aws.client("cloudformation"), aws.client("ssm")
    ssm.put_parameter(Name="/cdk-bootstrap/hnb659fds/version", Value="30", Type="String")
    parameters = {
        "BootstrapVersion": {
            "Type": "AWS::SSM::Parameter::Value<String>",
            "Default": "/cdk-bootstrap/hnb659fds/version",
        }
    }
    body = json.loads(_simple_stack("v1"))
    deploy(cfn, "cdk", json.dumps({**body, "Parameters": parameters}))
    body = json.loads(_simple_stack("v2", instance_type="p4d.24xlarge"))
    previous = [{"ParameterKey": "BootstrapVersion", "UsePreviousValue": True}]
    stack = deploy(cfn, "cdk", json.dumps({**body, "Parameters": parameters}), kind="UPDATE", Parameters=previous)
    assert stack["StackStatus"] == "UPDATE_COMPLETE"
