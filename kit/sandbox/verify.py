"""Check, with boto3, that a deployed stack's resources are what its config asks for.

Used by `python -m kit demo` after `cdk deploy` and by the sandbox tests (tests/sandbox/): the
cdk CLI's success message is not proof (aws-facts.md, "The moto emulator"), the resources are.
Every check returns a list of problems (empty = fine), each naming the resource and what is off;
`verify_deployment` runs them all. Expected values come from the validated config and the same
plan the stack is built from (stacks/plan.py), so a rule has one implementation.

Works against any endpoint boto3 is pointed at (the sandbox, or real AWS with read access).
"""

from __future__ import annotations

import base64
import email
import ipaddress
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stacks.config import KitConfig
from stacks.outputs import QueueOutputs, StackOutputs, parse_outputs
from stacks.plan import QueuePlan

GOOD_STACK_STATES = ("CREATE_COMPLETE", "UPDATE_COMPLETE")
BATCH_SERVICE_LINKED_ROLE_PATH = "role/aws-service-role/batch.amazonaws.com/"
SSH_PORT = 22
# IMDS through a container is one hop more than from the host (aws-facts.md).
MIN_HOP_LIMIT = 2


@dataclass(frozen=True)
class Expected:
    """What the kit built from: the config and the per-queue plans (stacks.plan.plan_queues)."""

    config: KitConfig
    plans: tuple[QueuePlan, ...]
    user_data_scripts: tuple[Path, ...]
    root_device: str
    gpu_image_type: str
    capacity_reason: str

    def plan(self, name: str) -> QueuePlan | None:
        return next((p for p in self.plans if p.queue.name == name), None)


def expected_for(config: KitConfig) -> Expected:
    # The stack's modules import aws_cdk (a few seconds); only verification needs them here.
    # Node 20 makes jsii print an end-of-life banner (aws-facts.md, tooling).
    os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
    from constructs_lib.efa_launch_template import ROOT_DEVICE
    from constructs_lib.multinode_queue import CAPACITY_REASON, GPU_IMAGE_TYPE
    from stacks.catalog import load_catalog
    from stacks.multinode_stack import user_data_scripts
    from stacks.plan import plan_queues

    return Expected(
        config=config,
        plans=plan_queues(config, load_catalog()),
        user_data_scripts=tuple(user_data_scripts()),
        root_device=ROOT_DEVICE,
        gpu_image_type=GPU_IMAGE_TYPE,
        capacity_reason=CAPACITY_REASON,
    )


@dataclass
class Clients:
    cloudformation: Any
    ec2: Any
    batch: Any

    @classmethod
    def from_session(cls, session: Any) -> Clients:
        return cls(session.client("cloudformation"), session.client("ec2"), session.client("batch"))


@dataclass
class Verification:
    stack_name: str
    outputs: StackOutputs | None
    problems: list[str] = field(default_factory=list)
    # Per area ("stack", "network", "security group", "queue <name>"), for tests and reports.
    by_area: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", type(exc).__name__))


# ------------------------------------------------------------------------------------------
# Stack and outputs
# ------------------------------------------------------------------------------------------


def describe_stack(cloudformation: Any, stack_name: str) -> dict[str, Any] | None:
    try:
        stacks = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    except Exception as exc:
        if _error_code(exc) == "ValidationError":
            return None
        raise
    stack: dict[str, Any] | None = stacks[0] if stacks else None
    return stack


def check_stack(cloudformation: Any, stack_name: str) -> tuple[StackOutputs | None, list[str]]:
    """The stack exists in a good state and has every output the kit's commands read."""
    stack = describe_stack(cloudformation, stack_name)
    if stack is None:
        return None, [f"stack {stack_name}: not found"]
    problems = []
    status = stack.get("StackStatus", "")
    if status not in GOOD_STACK_STATES:
        reason = stack.get("StackStatusReason") or _last_failure(cloudformation, stack_name)
        problems.append(f"stack {stack_name}: status {status}" + (f" ({reason})" if reason else ""))
    try:
        outputs = parse_outputs(stack.get("Outputs") or [])
    except KeyError as exc:
        return None, [*problems, f"stack {stack_name}: output {exc.args[0]} is missing"]
    except ValueError as exc:
        return None, [*problems, f"stack {stack_name}: an output is malformed ({exc})"]
    return outputs, problems


def _last_failure(cloudformation: Any, stack_name: str) -> str:
    paginator = cloudformation.get_paginator("describe_stack_events")
    for page in paginator.paginate(StackName=stack_name):
        for event in page["StackEvents"]:
            if str(event.get("ResourceStatus", "")).endswith("FAILED") and event.get("ResourceStatusReason"):
                return str(event["ResourceStatusReason"])
    return ""


def check_outputs(expected: Expected, outputs: StackOutputs) -> list[str]:
    """Stack-wide and per-queue output values that follow from the config alone."""
    cfg, problems = expected.config, []
    where = "stack outputs"
    if outputs.availability_zone != cfg.availability_zone:
        problems.append(f"{where}: AvailabilityZone {outputs.availability_zone}, config says {cfg.availability_zone}")
    if [q.name for q in outputs.queues] != [q.name for q in cfg.queues]:
        problems.append(
            f"{where}: QueueNames {[q.name for q in outputs.queues]}, config has {[q.name for q in cfg.queues]}"
        )
    if outputs.metaflow_profile != cfg.metaflow.profile:
        problems.append(f"{where}: MetaflowProfile {outputs.metaflow_profile}, config says {cfg.metaflow.profile}")
    if outputs.s3_access_role_arn != cfg.metaflow.s3_access_role_arn:
        problems.append(
            f"{where}: S3AccessRoleArn {outputs.s3_access_role_arn}, config says {cfg.metaflow.s3_access_role_arn}"
        )
    if not cfg.creates_vpc and outputs.vpc_id != cfg.network.vpc_id:
        problems.append(f"{where}: VpcId {outputs.vpc_id}, config says {cfg.network.vpc_id}")
    for plan in expected.plans:
        q = outputs.queue(plan.queue.name)
        if q is None:
            continue
        wanted = {
            "EfaInterfaces": (q.efa_interfaces, plan.efa_count),
            "GpusPerNode": (q.gpus_per_node, plan.facts.gpus),
            "InstanceType": (q.instance_type, plan.queue.instance_type),
            "MaxNodes": (q.max_nodes, plan.queue.max_nodes),
        }
        for key, (got, want) in wanted.items():
            if got != want:
                problems.append(f"{where}: queue {plan.queue.name} {key} is {got}, expected {want}")
    return problems


# ------------------------------------------------------------------------------------------
# Network and security group
# ------------------------------------------------------------------------------------------


def _is_self_all_traffic(rule: Mapping[str, Any], group_id: str) -> bool:
    return str(rule.get("IpProtocol")) == "-1" and any(
        p.get("GroupId") == group_id for p in rule.get("UserIdGroupPairs", [])
    )


def _is_all_traffic_anywhere(rule: Mapping[str, Any]) -> bool:
    return str(rule.get("IpProtocol")) == "-1" and any(r.get("CidrIp") == "0.0.0.0/0" for r in rule.get("IpRanges", []))


def check_network(ec2: Any, expected: Expected, outputs: StackOutputs) -> list[str]:
    """Subnets in the one AZ of the VPC, private with a NAT route (MNP awsvpc ENIs get no public
    IP), and a default security group whose members may talk to each other (aws-facts.md, MNP)."""
    cfg, problems = expected.config, []
    if not outputs.subnet_ids:
        return ["network: the stack names no subnets"]
    if not cfg.creates_vpc and set(outputs.subnet_ids) != set(cfg.network.subnet_ids):
        problems.append(f"network: subnets {list(outputs.subnet_ids)}, config says {list(cfg.network.subnet_ids)}")
    try:
        subnets = ec2.describe_subnets(SubnetIds=list(outputs.subnet_ids))["Subnets"]
    except Exception as exc:
        return [*problems, f"network: subnets {list(outputs.subnet_ids)} cannot be described ({_error_code(exc)})"]
    for subnet in subnets:
        sid = subnet["SubnetId"]
        if subnet.get("AvailabilityZone") != cfg.availability_zone:
            problems.append(
                f"network: subnet {sid} is in {subnet.get('AvailabilityZone')}, not {cfg.availability_zone}"
            )
        if subnet.get("VpcId") != outputs.vpc_id:
            problems.append(f"network: subnet {sid} belongs to {subnet.get('VpcId')}, not {outputs.vpc_id}")
        if subnet.get("MapPublicIpOnLaunch"):
            problems.append(f"network: subnet {sid} gives instances public IPs; MNP nodes belong in private subnets")
    if cfg.creates_vpc:
        vpcs = ec2.describe_vpcs(VpcIds=[outputs.vpc_id])["Vpcs"]
        if not vpcs:
            problems.append(f"network: VPC {outputs.vpc_id} not found")
        elif vpcs[0].get("CidrBlock") != cfg.network.vpc_cidr:
            problems.append(
                f"network: VPC {outputs.vpc_id} has CIDR {vpcs[0].get('CidrBlock')}, config says {cfg.network.vpc_cidr}"
            )
        problems += _check_private_routes(ec2, outputs)
    problems += _check_default_group(ec2, outputs.vpc_id)
    return problems


def _route_table_of(ec2: Any, vpc_id: str, subnet_id: str) -> dict[str, Any] | None:
    by_subnet = ec2.describe_route_tables(Filters=[{"Name": "association.subnet-id", "Values": [subnet_id]}])
    if by_subnet["RouteTables"]:
        table: dict[str, Any] = by_subnet["RouteTables"][0]
        return table
    main = ec2.describe_route_tables(
        Filters=[{"Name": "vpc-id", "Values": [vpc_id]}, {"Name": "association.main", "Values": ["true"]}]
    )["RouteTables"]
    return main[0] if main else None


def _check_private_routes(ec2: Any, outputs: StackOutputs) -> list[str]:
    problems = []
    for subnet_id in outputs.subnet_ids:
        table = _route_table_of(ec2, outputs.vpc_id, subnet_id)
        routes = (table or {}).get("Routes", [])
        default = [r for r in routes if r.get("DestinationCidrBlock") == "0.0.0.0/0"]
        if not any(r.get("NatGatewayId") for r in default):
            problems.append(f"network: subnet {subnet_id} has no 0.0.0.0/0 route through a NAT gateway")
        if any(str(r.get("GatewayId", "")).startswith("igw-") for r in default):
            problems.append(f"network: subnet {subnet_id} routes 0.0.0.0/0 to an internet gateway (public subnet)")
    return problems


def _check_default_group(ec2: Any, vpc_id: str) -> list[str]:
    groups = ec2.describe_security_groups(
        Filters=[{"Name": "vpc-id", "Values": [vpc_id]}, {"Name": "group-name", "Values": ["default"]}]
    )["SecurityGroups"]
    if not groups:
        return [f"network: VPC {vpc_id} has no default security group"]
    group = groups[0]
    if not any(_is_self_all_traffic(r, group["GroupId"]) for r in group.get("IpPermissions", [])):
        return [
            f"network: default security group {group['GroupId']} of {vpc_id} lost its all-traffic rule from itself; "
            "MNP task ENIs use it when the CE names no groups (aws-facts.md)"
        ]
    return []


def _ssh_rules(rules: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    def covers_ssh(rule: Mapping[str, Any]) -> bool:
        if str(rule.get("IpProtocol")) in ("-1", "all"):
            return True
        return str(rule.get("IpProtocol")) in ("tcp", "6") and rule.get("FromPort", 0) <= SSH_PORT <= rule.get(
            "ToPort", -1
        )

    return [r for r in rules if covers_ssh(r)]


def check_security_group(ec2: Any, expected: Expected, outputs: StackOutputs) -> list[str]:
    """EFA: all traffic in from the group itself and out to it (or out to anywhere); SSH only
    from the configured sources, nothing else from outside (aws-facts.md, EFA)."""
    group_id = outputs.security_group_id
    where = f"security group {group_id}"
    try:
        groups = ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"]
    except Exception as exc:
        return [f"{where}: cannot be described ({_error_code(exc)})"]
    if not groups:
        return [f"{where}: not found"]
    group, problems = groups[0], []
    if group.get("VpcId") != outputs.vpc_id:
        problems.append(f"{where}: in {group.get('VpcId')}, not in the stack's VPC {outputs.vpc_id}")
    ingress, egress = group.get("IpPermissions", []), group.get("IpPermissionsEgress", [])
    if not any(_is_self_all_traffic(r, group_id) for r in ingress):
        problems.append(f"{where}: no inbound all-traffic rule from itself (EFA needs it)")
    if not any(_is_self_all_traffic(r, group_id) or _is_all_traffic_anywhere(r) for r in egress):
        problems.append(f"{where}: no outbound all-traffic rule to itself or to 0.0.0.0/0 (EFA needs it)")

    allowed: set[str] = set(expected.config.network.ssh_sources)
    for source in sorted(allowed):
        if not any(_rule_has_source(r, source) for r in _ssh_rules(ingress)):
            problems.append(f"{where}: SSH (tcp/22) from {source} is missing")
    for rule in ingress:
        for source in _rule_sources(rule):
            if source == group_id or _same_source(source, allowed):
                continue
            problems.append(f"{where}: unexpected inbound rule {rule.get('IpProtocol')} from {source}")
    return problems


def _rule_sources(rule: Mapping[str, Any]) -> list[str]:
    return (
        [r["CidrIp"] for r in rule.get("IpRanges", [])]
        + [r["CidrIpv6"] for r in rule.get("Ipv6Ranges", [])]
        + [p["GroupId"] for p in rule.get("UserIdGroupPairs", []) if p.get("GroupId")]
        + [p["PrefixListId"] for p in rule.get("PrefixListIds", [])]
    )


def _same_source(source: str, allowed: set[str]) -> bool:
    if source in allowed:
        return True
    try:
        network = ipaddress.ip_network(source, strict=False)
    except ValueError:
        return False
    return any(_network_equal(network, a) for a in allowed)


def _network_equal(network: ipaddress.IPv4Network | ipaddress.IPv6Network, other: str) -> bool:
    try:
        return network == ipaddress.ip_network(other, strict=False)
    except ValueError:
        return False


def _rule_has_source(rule: Mapping[str, Any], source: str) -> bool:
    return _same_source(source, set(_rule_sources(rule))) or any(_same_source(s, {source}) for s in _rule_sources(rule))


# ------------------------------------------------------------------------------------------
# Per queue: placement group, launch template, compute environment, job queue
# ------------------------------------------------------------------------------------------


def check_placement_group(ec2: Any, name: str) -> list[str]:
    where = f"placement group {name}"
    try:
        groups = ec2.describe_placement_groups(GroupNames=[name])["PlacementGroups"]
    except Exception as exc:
        return [f"{where}: not found ({_error_code(exc)})"]
    if len(groups) != 1:
        return [f"{where}: not found"]
    problems = []
    if groups[0].get("Strategy") != "cluster":
        problems.append(f"{where}: strategy {groups[0].get('Strategy')}; EFA nodes need a cluster placement group")
    if groups[0].get("State") != "available":
        problems.append(f"{where}: state {groups[0].get('State')}")
    return problems


def check_launch_template(
    ec2: Any, expected: Expected, plan: QueuePlan, queue: QueueOutputs, security_group_id: str
) -> list[str]:
    """EFA interfaces as planned (card, device, type) with the EFA group on each and none at the
    template level, IMDSv2, an encrypted gp3 root volume of the configured size, and MIME
    multi-part user data carrying the launch_templates/ scripts (aws-facts.md)."""
    where = f"launch template {queue.launch_template_id}"
    try:
        template = ec2.describe_launch_templates(LaunchTemplateIds=[queue.launch_template_id])["LaunchTemplates"][0]
        version = ec2.describe_launch_template_versions(
            LaunchTemplateId=queue.launch_template_id, Versions=[queue.launch_template_version]
        )["LaunchTemplateVersions"][0]
    except Exception as exc:
        return [f"{where} version {queue.launch_template_version}: not found ({_error_code(exc)})"]
    problems = []
    if str(template.get("LatestVersionNumber")) != str(queue.launch_template_version):
        problems.append(
            f"{where}: the stack names version {queue.launch_template_version}, "
            f"the latest is {template.get('LatestVersionNumber')}"
        )
    data = version.get("LaunchTemplateData", {})
    problems += [f"{where}: {p}" for p in _interface_problems(data, plan, security_group_id)]
    problems += [f"{where}: {p}" for p in _metadata_problems(data)]
    problems += [f"{where}: {p}" for p in _volume_problems(data, expected.root_device, plan.queue.root_volume_gib)]
    problems += [f"{where}: {p}" for p in _user_data_problems(data, expected.user_data_scripts)]
    return problems


def _interface_problems(data: Mapping[str, Any], plan: QueuePlan, group_id: str) -> list[str]:
    interfaces = sorted(
        data.get("NetworkInterfaces", []), key=lambda i: (i.get("NetworkCardIndex", 0), i.get("DeviceIndex", 0))
    )
    got = [
        (i.get("NetworkCardIndex", 0), i.get("DeviceIndex"), i.get("InterfaceType", "interface")) for i in interfaces
    ]
    want = sorted((s.network_card_index, s.device_index, s.interface_type) for s in plan.slots)
    problems = []
    if got != want:
        problems.append(f"network interfaces (card, device, type) are {got}, the plan is {want}")
    for i in interfaces:
        if list(i.get("Groups", [])) != [group_id]:
            problems.append(
                f"interface card {i.get('NetworkCardIndex', 0)}/device {i.get('DeviceIndex')} has groups "
                f"{i.get('Groups', [])}, expected [{group_id}]"
            )
    if data.get("SecurityGroupIds") or data.get("SecurityGroups"):
        problems.append("template-level security groups next to network interfaces (EC2 rejects the launch)")
    return problems


def _metadata_problems(data: Mapping[str, Any]) -> list[str]:
    meta, problems = data.get("MetadataOptions", {}), []
    if meta.get("HttpTokens") != "required":
        problems.append(f"IMDSv2 not enforced (HttpTokens {meta.get('HttpTokens')})")
    if meta.get("HttpEndpoint", "enabled") != "enabled":
        problems.append(f"instance metadata endpoint {meta.get('HttpEndpoint')} (the ECS agent needs it)")
    if int(meta.get("HttpPutResponseHopLimit") or 1) < MIN_HOP_LIMIT:
        problems.append(
            f"HttpPutResponseHopLimit {meta.get('HttpPutResponseHopLimit')}; containers need >= {MIN_HOP_LIMIT}"
        )
    return problems


def _volume_problems(data: Mapping[str, Any], root_device: str, size_gib: int) -> list[str]:
    roots = [m for m in data.get("BlockDeviceMappings", []) if m.get("DeviceName") == root_device]
    if not roots:
        return [f"no block device mapping for the root device {root_device}"]
    ebs, problems = roots[0].get("Ebs", {}), []
    if ebs.get("Encrypted") is not True:
        problems.append("root volume not encrypted")
    if ebs.get("VolumeType") != "gp3":
        problems.append(f"root volume type {ebs.get('VolumeType')}, expected gp3")
    if ebs.get("VolumeSize") != size_gib:
        problems.append(f"root volume {ebs.get('VolumeSize')} GiB, config says {size_gib}")
    return problems


def decode_user_data(data: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(content type, text) of each part of a launch template's MIME multi-part user data."""
    raw = base64.b64decode(data.get("UserData") or "")
    message = email.message_from_bytes(raw)
    if not message.is_multipart():
        raise ValueError(f"user data is {message.get_content_type()}, not MIME multi-part")
    parts = []
    for part in message.get_payload():
        assert isinstance(part, email.message.Message)
        payload = part.get_payload(decode=True)
        text = payload.decode("utf-8") if isinstance(payload, bytes) else str(part.get_payload())
        parts.append((part.get_content_type(), text))
    return parts


def _user_data_problems(data: Mapping[str, Any], scripts: Sequence[Path]) -> list[str]:
    if not data.get("UserData"):
        return ["no user data"]
    try:
        parts = decode_user_data(data)
    except (ValueError, TypeError) as exc:
        return [f"user data: {exc}"]
    problems = []
    if len(base64.b64decode(data["UserData"])) > 16 * 1024:
        problems.append("user data is larger than EC2's 16 KB")
    want = [s.read_text(encoding="utf-8") for s in scripts]
    got = [text for kind, text in parts if kind == "text/x-shellscript"]
    if got != want:
        names = [s.name for s in scripts]
        problems.append(f"user data shell scripts do not match launch_templates/ ({', '.join(names)}), in that order")
    return problems


def check_compute_environment(
    batch: Any, expected: Expected, plan: QueuePlan, queue: QueueOutputs, outputs: StackOutputs
) -> list[str]:
    """A managed EC2 CE for MNP: one instance type, vCPUs from nodes, the queue's placement group
    and launch template at its latest version, no security groups next to the template's
    interfaces, no custom service role, BEST_FIT_PROGRESSIVE (aws-facts.md, MNP)."""
    where = f"compute environment {queue.compute_environment_arn.rsplit('/', 1)[-1]}"
    found = batch.describe_compute_environments(computeEnvironments=[queue.compute_environment_arn])
    envs = found.get("computeEnvironments", [])
    if len(envs) != 1:
        return [f"{where}: not found"]
    env, problems = envs[0], []
    cr = env.get("computeResources", {})
    checks: list[tuple[str, Any, Any]] = [
        ("state", env.get("state"), "ENABLED"),
        ("status", env.get("status"), "VALID"),
        ("type", env.get("type"), "MANAGED"),
        ("compute type", cr.get("type"), "EC2"),
        ("allocation strategy", cr.get("allocationStrategy"), "BEST_FIT_PROGRESSIVE"),
        ("instance types", cr.get("instanceTypes"), [plan.queue.instance_type]),
        ("minvCpus", cr.get("minvCpus"), plan.min_vcpus),
        ("maxvCpus", cr.get("maxvCpus"), plan.max_vcpus),
        ("subnets", sorted(cr.get("subnets", [])), sorted(outputs.subnet_ids)),
        ("placement group", cr.get("placementGroup"), queue.placement_group_name),
        ("launch template id", (cr.get("launchTemplate") or {}).get("launchTemplateId"), queue.launch_template_id),
        (
            "launch template version",
            str((cr.get("launchTemplate") or {}).get("version")),
            str(queue.launch_template_version),
        ),
        (
            "image type",
            [c.get("imageType") for c in cr.get("ec2Configuration", [])],
            [expected.gpu_image_type],
        ),
    ]
    for label, got, want in checks:
        if got != want:
            problems.append(f"{where}: {label} is {got}, expected {want}")
    if plan.queue.image_id and [c.get("imageIdOverride") for c in cr.get("ec2Configuration", [])] != [
        plan.queue.image_id
    ]:
        problems.append(f"{where}: image override is not {plan.queue.image_id}")
    if cr.get("securityGroupIds"):
        problems.append(f"{where}: sends securityGroupIds next to the launch template's interfaces (aws/aws-cdk#21577)")
    role = env.get("serviceRole")
    if role and BATCH_SERVICE_LINKED_ROLE_PATH not in role:
        problems.append(f"{where}: custom service role {role} blocks in-place updates; omit it")
    return problems


def check_job_queue(batch: Any, expected: Expected, plan: QueuePlan, queue: QueueOutputs) -> list[str]:
    """Enabled, fed by exactly this queue's CE, and cancelling jobs that wait too long for capacity."""
    where = f"job queue {queue.job_queue_name}"
    found = batch.describe_job_queues(jobQueues=[queue.job_queue_arn]).get("jobQueues", [])
    if len(found) != 1:
        return [f"{where}: not found"]
    jq, problems = found[0], []
    if jq.get("jobQueueName") != queue.job_queue_name:
        problems.append(f"{where}: named {jq.get('jobQueueName')}")
    if jq.get("state") != "ENABLED" or jq.get("status") != "VALID":
        problems.append(f"{where}: state {jq.get('state')}, status {jq.get('status')}")
    order = [(o.get("order"), o.get("computeEnvironment")) for o in jq.get("computeEnvironmentOrder", [])]
    if order != [(1, queue.compute_environment_arn)]:
        problems.append(f"{where}: compute environment order {order}, expected [(1, {queue.compute_environment_arn})]")
    capacity = [a for a in jq.get("jobStateTimeLimitActions", []) if a.get("reason") == expected.capacity_reason]
    wait = plan.queue.capacity_wait_minutes * 60
    if not any(a.get("action") == "CANCEL" and a.get("maxTimeSeconds") == wait for a in capacity):
        problems.append(f"{where}: no CANCEL after {wait} s for {expected.capacity_reason}")
    return problems


# ------------------------------------------------------------------------------------------


def verify_deployment(clients: Clients, expected: Expected) -> Verification:
    """Every check above for the config's stack. Never raises for a missing resource: that is a problem."""
    name = expected.config.stack_name
    outputs, problems = check_stack(clients.cloudformation, name)
    result = Verification(stack_name=name, outputs=outputs)

    def add(area: str, found: list[str]) -> None:
        result.by_area.setdefault(area, []).extend(found)
        result.problems.extend(found)

    add("stack", problems)
    if outputs is None:
        return result
    add("outputs", check_outputs(expected, outputs))
    add("network", check_network(clients.ec2, expected, outputs))
    add("security group", check_security_group(clients.ec2, expected, outputs))
    for plan in expected.plans:
        queue = outputs.queue(plan.queue.name)
        area = f"queue {plan.queue.name}"
        if queue is None:
            add(area, [f"{area}: no outputs for it"])
            continue
        add(area, check_placement_group(clients.ec2, queue.placement_group_name))
        add(area, check_launch_template(clients.ec2, expected, plan, queue, outputs.security_group_id))
        add(area, check_compute_environment(clients.batch, expected, plan, queue, outputs))
        add(area, check_job_queue(clients.batch, expected, plan, queue))
    return result
