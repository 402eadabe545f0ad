"""Template-assertion tests: each rule of aws-facts.md that the template must meet, checked
on the synthesized templates (one synth per config per session, see conftest)."""

from __future__ import annotations

import base64
import email
import json
from pathlib import Path

import pytest
from aws_cdk.assertions import Capture, Match

from stacks import outputs as out

ALL = ["default", "p5", "p4d", "imported-vpc", "two-queues", "capacity"]
LAUNCH_TEMPLATE_DIR = Path(__file__).resolve().parents[2] / "launch_templates"


def _lt_data(s, index: int = 0) -> dict:  # type: ignore[no-untyped-def]
    lts = sorted(s.resources("AWS::EC2::LaunchTemplate").items())
    return lts[index][1]["Properties"]["LaunchTemplateData"]


def _sg_logical_id(s) -> str:  # type: ignore[no-untyped-def]
    (sg_id,) = s.resources("AWS::EC2::SecurityGroup").keys()
    return sg_id


# --- EFA security group --------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_security_group_allows_all_traffic_from_and_to_itself(synth, name):
    s = synth.get(name)
    sg = _sg_logical_id(s)
    self_ref = {"Fn::GetAtt": [sg, "GroupId"]}
    s.template.has_resource_properties(
        "AWS::EC2::SecurityGroupIngress",
        {"IpProtocol": "-1", "GroupId": self_ref, "SourceSecurityGroupId": self_ref},
    )
    s.template.has_resource_properties(
        "AWS::EC2::SecurityGroupEgress",
        {"IpProtocol": "-1", "GroupId": self_ref, "DestinationSecurityGroupId": self_ref},
    )


@pytest.mark.parametrize("name", ALL)
def test_no_ingress_from_the_internet(synth, name):
    s = synth.get(name)
    for sg in s.resources("AWS::EC2::SecurityGroup").values():
        for rule in sg["Properties"].get("SecurityGroupIngress", []):
            assert rule.get("CidrIp") != "0.0.0.0/0" and rule.get("CidrIpv6") != "::/0", rule
    for ingress in s.resources("AWS::EC2::SecurityGroupIngress").values():
        assert ingress["Properties"].get("CidrIp") != "0.0.0.0/0"


def test_ssh_only_from_the_configured_sources(synth):
    s = synth.get("p5")
    sg = s.one("AWS::EC2::SecurityGroup")["Properties"]
    ssh = [r for r in sg.get("SecurityGroupIngress", []) if r.get("FromPort") == 22]
    s.template.has_resource_properties(
        "AWS::EC2::SecurityGroup",
        {"SecurityGroupIngress": Match.array_with([Match.object_like({"CidrIp": "203.0.113.0/24", "FromPort": 22})])},
    )
    assert sorted((r.get("CidrIp") or r.get("SourceSecurityGroupId"), r["ToPort"], r["IpProtocol"]) for r in ssh) == [
        ("203.0.113.0/24", 22, "tcp"),
        ("sg-0123456789abcdef0", 22, "tcp"),
    ]
    # The default config names no SSH source: only the group itself may reach port 22.
    d = synth.get("default").one("AWS::EC2::SecurityGroup")["Properties"]
    assert not d.get("SecurityGroupIngress")


# --- placement group -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_one_cluster_placement_group_per_queue_used_by_its_ce(synth, name):
    s = synth.get(name)
    pgs = s.resources("AWS::EC2::PlacementGroup")
    given = [q.placement_group for q in s.config.queues if q.placement_group]
    assert len(pgs) == len(s.config.queues) - len(given)
    assert all(pg["Properties"]["Strategy"] == "cluster" for pg in pgs.values())
    used = [
        ce["Properties"]["ComputeResources"]["PlacementGroup"]
        for ce in s.resources("AWS::Batch::ComputeEnvironment").values()
    ]
    assert {u["Ref"] for u in used if isinstance(u, dict)} == set(pgs)
    # A named existing group (the one a capacity reservation lives in) is used as given.
    assert sorted(u for u in used if isinstance(u, str)) == sorted(given)


# --- launch template ---------------------------------------------------------------------------


def _layout(s, index=0):  # type: ignore[no-untyped-def]
    return [
        (n["NetworkCardIndex"], n["DeviceIndex"], n["InterfaceType"]) for n in _lt_data(s, index)["NetworkInterfaces"]
    ]


def test_p5_gets_32_efa_interfaces_on_32_cards_in_the_p5_layout(synth):
    layout = _layout(synth.get("p5"))
    efa = [x for x in layout if x[2] in ("efa", "efa-only")]
    assert len(efa) == 32
    assert {card for card, _, _ in efa} == set(range(32))
    # EC2 guide, "EFA configuration for P5 and P5e instances": EFA (with ENA) primary,
    # EFA-only at device 1 on every further card.
    assert layout[0] == (0, 0, "efa")
    assert all(x == (card, 1, "efa-only") for card, x in zip(range(1, 32), layout[1:], strict=True))


def test_p4d_uses_the_generic_layout(synth):
    # ENA primary, EFA-only at card 0 device 1, EFA-only at device 0 of cards 1..3.
    assert _layout(synth.get("p4d")) == [
        (0, 0, "interface"),
        (0, 1, "efa-only"),
        (1, 0, "efa-only"),
        (2, 0, "efa-only"),
        (3, 0, "efa-only"),
    ]


def test_p6_b300_skips_card_0_which_has_no_efa(synth):
    # p6-b300: 17 cards, card 0 is ENA-only, 16 EFA cards (DescribeInstanceTypes).
    layout = _layout(synth.get("two-queues"), index=0)
    assert layout[0] == (0, 0, "interface")
    assert layout[1:] == [(card, 0, "efa-only") for card in range(1, 17)]


def test_partial_efa_count_is_honoured(synth):
    # small-g6e asks for 1 of 2 interfaces.
    assert _layout(synth.get("two-queues"), index=1) == [(0, 0, "interface"), (0, 1, "efa-only")]


@pytest.mark.parametrize("name", ALL)
def test_interfaces_are_unique_carry_the_group_and_primary_is_not_efa_only(synth, name):
    s = synth.get(name)
    sg = _sg_logical_id(s)
    for lt in s.resources("AWS::EC2::LaunchTemplate").values():
        nics = lt["Properties"]["LaunchTemplateData"]["NetworkInterfaces"]
        pairs = [(n["NetworkCardIndex"], n["DeviceIndex"]) for n in nics]
        assert len(pairs) == len(set(pairs)), "duplicate (NetworkCardIndex, DeviceIndex)"
        primary = [n for n in nics if (n["NetworkCardIndex"], n["DeviceIndex"]) == (0, 0)]
        assert len(primary) == 1 and primary[0]["InterfaceType"] != "efa-only"
        for nic in nics:
            assert nic["Groups"] == [{"Fn::GetAtt": [sg, "GroupId"]}]
            assert "SubnetId" not in nic  # Batch places the interfaces in the CE's subnets


@pytest.mark.parametrize("name", ALL)
def test_launch_template_enforces_imdsv2_and_encrypted_gp3_root(synth, name):
    # cdk-nag has no rule for Batch launch templates, so the kit checks them here.
    s = synth.get(name)
    for lt in s.resources("AWS::EC2::LaunchTemplate").values():
        data = lt["Properties"]["LaunchTemplateData"]
        assert data["MetadataOptions"] == {
            "HttpEndpoint": "enabled",
            "HttpTokens": "required",
            "HttpPutResponseHopLimit": 2,
        }
        (root,) = data["BlockDeviceMappings"]
        assert root["DeviceName"] == "/dev/xvda"
        assert root["Ebs"]["Encrypted"] is True and root["Ebs"]["VolumeType"] == "gp3"
        assert all(bdm.get("Ebs", {}).get("Encrypted") for bdm in data["BlockDeviceMappings"])
    sizes = sorted(
        lt["Properties"]["LaunchTemplateData"]["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"]
        for lt in s.resources("AWS::EC2::LaunchTemplate").values()
    )
    assert sizes == sorted(q.root_volume_gib for q in s.config.queues)


def test_user_data_is_mime_multipart_with_the_launch_template_scripts(synth):
    data = _lt_data(synth.get("default"))
    rendered = data["UserData"]["Fn::Base64"]
    assert len(rendered.encode()) <= 16 * 1024  # EC2's user-data limit
    message = email.message_from_string(rendered)
    assert message.is_multipart() and message.get_content_type() == "multipart/mixed"
    parts = [p for p in message.walk() if p.get_content_type() == "text/x-shellscript"]
    scripts = sorted(LAUNCH_TEMPLATE_DIR.glob("*.sh"))
    assert len(parts) == len(scripts) >= 2
    for part, script in zip(parts, scripts, strict=True):
        payload = part.get_payload(decode=True).decode()
        assert payload.strip() == script.read_text().strip()
        assert "set -euo pipefail" in payload
    # The same bytes base64-encode below the limit too (what EC2 measures).
    assert len(base64.b64encode(rendered.encode())) <= 22 * 1024


# --- compute environment and queue -------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_compute_environment_meets_the_mnp_rules(synth, name):
    s = synth.get(name)
    lts = s.resources("AWS::EC2::LaunchTemplate")
    ces = s.resources("AWS::Batch::ComputeEnvironment")
    assert len(ces) == len(s.config.queues)
    for ce in ces.values():
        props = ce["Properties"]
        res = props["ComputeResources"]
        assert props["Type"] == "MANAGED" and res["Type"] == "EC2"
        assert len(res["InstanceTypes"]) == 1 and "optimal" not in res["InstanceTypes"]
        assert res["AllocationStrategy"] == "BEST_FIT_PROGRESSIVE"
        assert "ServiceRole" not in props  # service-linked role: in-place updates
        assert "ComputeEnvironmentName" not in props  # fixed names break replacement
        assert "SecurityGroupIds" not in res  # the launch template's interfaces carry the group
        assert res["Ec2Configuration"][0]["ImageType"] == "ECS_AL2023_NVIDIA"
        lt_ref = res["LaunchTemplate"]["LaunchTemplateId"]["Ref"]
        assert lt_ref in lts
        assert res["LaunchTemplate"]["Version"] == {"Fn::GetAtt": [lt_ref, "LatestVersionNumber"]}
        assert res["UpdateToLatestImageVersion"] is True
        assert props["ReplaceComputeEnvironment"] is False


def test_vcpus_are_derived_from_nodes(synth):
    s = synth.get("two-queues")
    capture_min, capture_max = Capture(), Capture()
    s.template.has_resource_properties(
        "AWS::Batch::ComputeEnvironment",
        {
            "ComputeResources": Match.object_like(
                {"InstanceTypes": ["g6e.24xlarge"], "MinvCpus": capture_min, "MaxvCpus": capture_max}
            )
        },
    )
    assert (capture_min.as_number(), capture_max.as_number()) == (96, 192)  # 1 and 2 nodes x 96 vCPUs
    s.template.has_resource_properties(
        "AWS::Batch::ComputeEnvironment",
        {
            "ComputeResources": Match.object_like(
                {"InstanceTypes": ["p6-b300.48xlarge"], "MinvCpus": 0, "MaxvCpus": 4 * 192}
            )
        },
    )


@pytest.mark.parametrize("name", ALL)
def test_every_ce_subnet_is_in_the_one_az(synth, name):
    s = synth.get(name)
    for ce in s.resources("AWS::Batch::ComputeEnvironment").values():
        subnets = ce["Properties"]["ComputeResources"]["Subnets"]
        if s.config.creates_vpc:
            for ref in subnets:
                subnet = s.template_json["Resources"][ref["Ref"]]["Properties"]
                assert subnet["AvailabilityZone"] == s.config.availability_zone
                assert subnet["MapPublicIpOnLaunch"] is False
        else:
            assert subnets == list(s.config.network.subnet_ids)


@pytest.mark.parametrize("name", ALL)
def test_job_queue_is_dedicated_and_cancels_stuck_jobs(synth, name):
    s = synth.get(name)
    ces = s.resources("AWS::Batch::ComputeEnvironment")
    for queue in s.resources("AWS::Batch::JobQueue").values():
        props = queue["Properties"]
        assert "JobQueueName" not in props
        (order,) = props["ComputeEnvironmentOrder"]
        assert order["ComputeEnvironment"]["Ref"] in ces
        reasons = {a["Reason"]: a for a in props["JobStateTimeLimitActions"]}
        assert reasons["CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY"]["Action"] == "CANCEL"
        assert all(600 <= a["MaxTimeSeconds"] <= 86400 and a["State"] == "RUNNABLE" for a in reasons.values())


# --- network ------------------------------------------------------------------------------------


def test_new_vpc_is_single_az_with_nat_endpoint_and_flow_logs(synth):
    s = synth.get("default")
    s.template.resource_count_is("AWS::EC2::VPC", 1)
    s.template.resource_count_is("AWS::EC2::NatGateway", 1)
    s.template.has_resource_properties(
        "AWS::EC2::VPC", {"CidrBlock": "10.40.0.0/16", "EnableDnsHostnames": True, "EnableDnsSupport": True}
    )
    s.template.has_resource_properties(
        "AWS::EC2::VPCEndpoint", {"VpcEndpointType": "Gateway", "ServiceName": Match.any_value()}
    )
    s.template.has_resource_properties("AWS::EC2::FlowLog", {"ResourceType": "VPC"})
    azs = {sub["Properties"]["AvailabilityZone"] for sub in s.resources("AWS::EC2::Subnet").values()}
    assert azs == {"us-east-1a"}
    # MNP task ENIs use the default security group: CDK must not strip its rules.
    assert not [r for r in s.template_json["Resources"].values() if "RestrictDefaultSG" in r["Type"]]


def test_private_subnet_is_sized_for_every_queues_nodes(synth):
    s = synth.get("p5")
    private = [
        sub["Properties"]
        for sub in s.resources("AWS::EC2::Subnet").values()
        if sub["Properties"]["MapPublicIpOnLaunch"] is False
    ]
    (subnet,) = private
    prefix = int(subnet["CidrBlock"].split("/")[1])
    # 16 nodes x (1 IP-bearing interface + the container's ENI) + 5 reserved -> /24 at least.
    assert 2 ** (32 - prefix) - 5 >= 16 * 2


def test_imported_vpc_creates_no_network(synth):
    s = synth.get("imported-vpc")
    for kind in ("AWS::EC2::VPC", "AWS::EC2::Subnet", "AWS::EC2::NatGateway", "AWS::EC2::FlowLog"):
        s.template.resource_count_is(kind, 0)
    s.template.has_resource_properties("AWS::EC2::SecurityGroup", {"VpcId": "vpc-0a1b2c3d4e5f67890"})


# --- outputs, tags, nag ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_outputs_give_metaflow_everything(synth, name):
    s = synth.get(name)
    outputs = s.template_json["Outputs"]
    for key in (
        out.VPC_ID,
        out.SECURITY_GROUP_ID,
        out.SUBNET_IDS,
        out.AVAILABILITY_ZONE,
        out.QUEUE_NAMES,
        out.METAFLOW_PROFILE,
    ):
        assert key in outputs
    from stacks.plan import pascal

    for q in s.config.queues:
        for field in out.QUEUE_FIELDS:
            assert out.queue_key(pascal(q.name), field) in outputs
    assert (out.S3_ACCESS_ROLE_ARN in outputs) == (s.config.metaflow.s3_access_role_arn is not None)


def test_output_values_for_p5(synth):
    outputs = synth.get("p5").template_json["Outputs"]
    assert outputs["H100EfaInterfaces"]["Value"] == "32"
    assert outputs["H100GpusPerNode"]["Value"] == "8"
    assert outputs["H100MaxNodes"]["Value"] == "16"
    assert outputs["QueueNames"]["Value"] == "h100"
    assert outputs["S3AccessRoleArn"]["Value"] == "arn:aws:iam::123456789012:role/metaflow-task"
    assert outputs["H100LaunchTemplateVersion"]["Value"]["Fn::GetAtt"][1] == "LatestVersionNumber"


def test_config_tags_reach_resources(synth):
    s = synth.get("p5")
    s.template.has_resource_properties(
        "AWS::EC2::VPC", {"Tags": Match.array_with([{"Key": "team", "Value": "ml-platform"}])}
    )
    # Instances get the user's tags; the CE's own (create-only) Tags keep only the kit's, so a
    # changed tag never replaces the compute environment.
    s.template.has_resource_properties(
        "AWS::Batch::ComputeEnvironment",
        {
            "ComputeResources": Match.object_like({"Tags": Match.object_like({"team": "ml-platform"})}),
            "Tags": {"metaflow-multinode:stack": "mn-p5"},
        },
    )
    s.template.has_resource_properties("AWS::Batch::JobQueue", {"Tags": Match.object_like({"team": "ml-platform"})})
    data = _lt_data(s)
    kinds = {spec["ResourceType"] for spec in data["TagSpecifications"]}
    assert kinds == {"instance", "volume", "network-interface"}


@pytest.mark.parametrize("name", ALL)
def test_cdk_nag_passes_with_only_the_documented_acknowledgement(synth, name):
    s = synth.get(name)
    report = json.loads((s.outdir / "validation-report.json").read_text())
    failures = [v for r in report.get("pluginReports", []) for v in r.get("violations", [])]
    assert failures == []
    acks = []
    for node in s.stack.node.find_all():
        for entry in node.node.metadata:
            if entry.type == "aws:cdk:acknowledged-rules":
                acks.append(entry.data)
    flat = json.dumps(acks)
    assert (
        "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
        "AmazonEC2ContainerServiceforEC2Role]" in flat
    )
    assert "ECS agent" in flat  # the acknowledgement says why


@pytest.mark.parametrize("name", ALL)
def test_synth_needs_no_lookup_even_with_an_account(synth, name):
    # p5 and imported-vpc name an account: a context lookup would make `cdk synth` call AWS.
    s = synth.get(name)
    manifest = json.loads((s.outdir / "manifest.json").read_text())
    assert "missing" not in manifest


# --- capacity reservations and Capacity Blocks -----------------------------------------------


def _lt_for_queue(s, queue_id_name: str) -> dict:  # type: ignore[no-untyped-def]
    (lt,) = [v for k, v in s.resources("AWS::EC2::LaunchTemplate").items() if k.startswith(queue_id_name)]
    data: dict = lt["Properties"]["LaunchTemplateData"]
    return data


def test_targeted_reservation_goes_into_the_launch_template(synth):
    data = _lt_for_queue(synth.get("capacity"), "Odcr")
    assert data["CapacityReservationSpecification"] == {
        "CapacityReservationTarget": {"CapacityReservationId": "cr-0123456789abcdef0"}
    }
    assert "InstanceMarketOptions" not in data


def test_reservation_group_goes_into_the_launch_template(synth):
    data = _lt_for_queue(synth.get("capacity"), "Group")
    assert data["CapacityReservationSpecification"] == {
        "CapacityReservationTarget": {
            "CapacityReservationResourceGroupArn": "arn:aws:resource-groups:us-east-1:123456789012:group/"
            "gpu-reservations"
        }
    }


def test_capacity_block_sets_market_type(synth):
    data = _lt_for_queue(synth.get("capacity"), "Block")
    assert data["CapacityReservationSpecification"]["CapacityReservationTarget"] == {
        "CapacityReservationId": "cr-0fedcba9876543210"
    }
    assert data["InstanceMarketOptions"] == {"MarketType": "capacity-block"}


def test_no_capacity_means_plain_on_demand(synth):
    data = _lt_data(synth.get("default"))
    assert "CapacityReservationSpecification" not in data and "InstanceMarketOptions" not in data


def test_updates_let_running_jobs_finish_and_user_tags_never_replace(synth):
    s = synth.get("p5")
    for ce in s.resources("AWS::Batch::ComputeEnvironment").values():
        assert ce["Properties"]["UpdatePolicy"] == {"JobExecutionTimeoutMinutes": 360, "TerminateJobsOnUpdate": False}
    # Placement group Tags are create-only too: only the kit's stable tag goes there.
    for pg in s.resources("AWS::EC2::PlacementGroup").values():
        assert pg["Properties"]["Tags"] == [{"Key": "metaflow-multinode:stack", "Value": "mn-p5"}]
