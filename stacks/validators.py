"""Every rule a config must meet before anything is synthesized or deployed.

Each validator is a small pure function ``(config, catalog) -> list[Finding]`` in the
manner of AWS ParallelCluster's validators; `validate()` parses, runs them all and returns
every finding at once. Messages name the key path, what is wrong, and what would be valid,
and cite the rule from ../shared/aws-facts.md where one applies. No aws_cdk import here:
`python -m kit validate` must stay fast.
"""

from __future__ import annotations

import difflib
import importlib.util
import ipaddress
import json
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from constructs_lib.efa_layout import CONTAINER_ENIS_ON_CARD_0, P5_LAYOUT_FAMILIES, efa_cards, provisioned_gbps
from stacks import outputs
from stacks.catalog import Catalog, InstanceFacts, load_catalog
from stacks.config import Finding, KitConfig, QueueConfig, parse_config
from stacks.plan import PUBLIC_SUBNET_PREFIX, QueuePlan, pascal, plan_queue, private_subnet_prefix, subnet_capacity

Check = Callable[[KitConfig, Catalog], list[Finding]]
QueueCheck = Callable[[str, QueueConfig, Catalog], list[Finding]]

REGION_RE = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d$")
STACK_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,127}$")
# Queue names end up in construct ids, output keys, tags and Metaflow decorators.
QUEUE_NAME_RE = re.compile(r"^(?=.{1,24}$)[a-z][a-z0-9]*(-[a-z0-9]+)*$")
ACCOUNT_RE = re.compile(r"^\d{12}$")
VPC_ID_RE = re.compile(r"^vpc-([0-9a-f]{8}|[0-9a-f]{17})$")
SUBNET_ID_RE = re.compile(r"^subnet-([0-9a-f]{8}|[0-9a-f]{17})$")
SG_ID_RE = re.compile(r"^sg-([0-9a-f]{8}|[0-9a-f]{17})$")
AMI_ID_RE = re.compile(r"^ami-([0-9a-f]{8}|[0-9a-f]{17})$")
ROLE_ARN_RE = re.compile(r"^arn:aws(-[a-z]+)*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")
PROFILE_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
PLACEMENT_GROUP_RE = re.compile(r"^[A-Za-z0-9][\w.+=,@-]{0,254}$")
RESERVATION_ID_RE = re.compile(r"^cr-([0-9a-f]{8}|[0-9a-f]{17})$")
RESOURCE_GROUP_ARN_RE = re.compile(r"^arn:aws(-[a-z]+)*:resource-groups:[a-z0-9-]+:\d{12}:group/[\w.-]{1,300}$")

ROOT_VOLUME_MIN_GIB = 30  # the ECS-optimized AL2023 GPU AMI's snapshot is 30 GiB
ROOT_VOLUME_MAX_GIB = 16384  # gp3 maximum
CAPACITY_WAIT_MIN, CAPACITY_WAIT_MAX = 10, 1440  # JobStateTimeLimitActions: 600..86400 s
MAX_TAGS = 45  # 50 per resource, less the ones CloudFormation and the kit add
KIT_TAG_PREFIX = "metaflow-multinode:"  # the stack and queue tags the kit sets itself
# CloudFormation and the Batch API carry maxvCpus as a 32-bit integer.
MAX_VCPUS = 2**31 - 1
# Batch User Guide, "Node groups": up to 1,000 nodes in one job (ECS cluster default limit).
MNP_DEFAULT_MAX_NODES = 1000
# CloudFormation quota: 200 outputs per template (not adjustable); the stack writes the
# stack-wide outputs plus one per queue field.
CFN_MAX_OUTPUTS = 200
STACK_WIDE_OUTPUTS = (
    outputs.VPC_ID,
    outputs.SECURITY_GROUP_ID,
    outputs.SUBNET_IDS,
    outputs.AVAILABILITY_ZONE,
    outputs.QUEUE_NAMES,
    outputs.S3_ACCESS_ROLE_ARN,
    outputs.METAFLOW_PROFILE,
)
MAX_QUEUES = (CFN_MAX_OUTPUTS - len(STACK_WIDE_OUTPUTS)) // len(outputs.QUEUE_FIELDS)
# EC2 quota: 60 inbound rules per security group (adjustable); the EFA self rule takes one.
MAX_SSH_SOURCES = 59
# AWS accepts /16 to /28 VPCs; the kit's public /24 must fit beside the private subnet.
VPC_MIN_PREFIX, VPC_MAX_PREFIX = 16, PUBLIC_SUBNET_PREFIX - 1
# Docker's default bridge on the ECS-optimized AMIs: hosts cannot reach VPC addresses in it.
DOCKER_BRIDGE = ipaddress.IPv4Network("172.17.0.0/16")


def _err(path: str, msg: str) -> Finding:
    return Finding("error", path, msg)


def _warn(path: str, msg: str) -> Finding:
    return Finding("warning", path, msg)


@lru_cache(maxsize=1)
def known_regions() -> frozenset[str]:
    """Region names of every AWS partition, from botocore's partitions.json (read as data,
    without importing botocore). Empty when botocore is not installed."""
    spec = importlib.util.find_spec("botocore")
    if spec is None or spec.origin is None:
        return frozenset()
    try:
        data = json.loads((Path(spec.origin).parent / "data" / "partitions.json").read_text(encoding="utf-8"))
        return frozenset(
            name for part in data["partitions"] for name in part["regions"] if not name.endswith("-global")
        )
    except (OSError, ValueError, KeyError, TypeError):
        return frozenset()


def efa_limit(facts: InstanceFacts) -> int:
    """Most EFA interfaces the kit can give one instance: the type's maximum, and at most
    one per network card that takes an EFA-only interface."""
    return min(facts.max_efa_interfaces, len(efa_cards(facts.network_cards)))


def requested_efa(q: QueueConfig, facts: InstanceFacts) -> int:
    return facts.max_efa_interfaces if q.efa_interfaces == "max" else int(q.efa_interfaces)


def queue_plan(q: QueueConfig, catalog: Catalog) -> QueuePlan | None:
    """The queue's plan, or None when its type or EFA count is invalid (reported elsewhere)."""
    facts = catalog.get(q.instance_type)
    if facts is None or not facts.efa_supported or not 1 <= requested_efa(q, facts) <= efa_limit(facts):
        return None
    return plan_queue(q, facts)


# --- top level ---------------------------------------------------------------------------


def check_region_and_az(cfg: KitConfig, _: Catalog) -> list[Finding]:
    if not cfg.region:
        return []  # missing or not a string: reported by the parser
    regions = known_regions()
    # botocore's list when it is there (it knows every partition); else the usual shape.
    known = cfg.region in regions if regions else REGION_RE.match(cfg.region) is not None
    if not known:
        close = difflib.get_close_matches(cfg.region, sorted(regions), n=1)
        hint = f"did you mean {close[0]!r}?" if close else 'e.g. "us-east-1"'
        return [_err("region", f"{cfg.region!r} is not an AWS region; {hint}")]
    if cfg.availability_zone and not re.fullmatch(re.escape(cfg.region) + r"[a-z]", cfg.availability_zone):
        return [
            _err(
                "availabilityZone",
                f"{cfg.availability_zone!r} is not an Availability Zone of region {cfg.region!r}; "
                f'use the region name plus a letter, e.g. "{cfg.region}a"',
            )
        ]
    return []


def check_stack_and_account(cfg: KitConfig, _: Catalog) -> list[Finding]:
    out = []
    if not STACK_NAME_RE.match(cfg.stack_name):
        out.append(
            _err(
                "stackName",
                f"{cfg.stack_name!r} is not a CloudFormation stack name; use letters, digits and "
                "hyphens, starting with a letter, at most 128 characters",
            )
        )
    if cfg.account is not None and not ACCOUNT_RE.match(cfg.account):
        out.append(_err("account", f"{cfg.account!r} is not an AWS account id; use the 12 digits"))
    return out


def check_metaflow(cfg: KitConfig, _: Catalog) -> list[Finding]:
    out = []
    if not PROFILE_RE.match(cfg.metaflow.profile):
        out.append(
            _err(
                "metaflow.profile",
                f"{cfg.metaflow.profile!r} cannot name a Metaflow profile file; use 1-64 letters, digits, '-' and '_'",
            )
        )
    arn = cfg.metaflow.s3_access_role_arn
    if arn is not None and not ROLE_ARN_RE.match(arn):
        out.append(
            _err(
                "metaflow.s3AccessRoleArn",
                f'{arn!r} is not an IAM role ARN; e.g. "arn:aws:iam::123456789012:role/metaflow-task"',
            )
        )
    return out


def _tag_text_ok(text: str) -> bool:
    # AWS tag pattern: Unicode letters, digits, white space and _ . : / = + - @
    return all(unicodedata.category(c)[0] in "LNZ" or c in "_.:/=+-@" for c in text)


def check_tags(cfg: KitConfig, _: Catalog) -> list[Finding]:
    out = []
    if len(cfg.tags) > MAX_TAGS:
        out.append(
            _err(
                "tags",
                f"{len(cfg.tags)} tags; AWS allows 50 per resource and the kit needs a few: use at most {MAX_TAGS}",
            )
        )
    for key, value in cfg.tags:
        path = f"tags.{key}"
        if not 1 <= len(key) <= 128 or key.lower().startswith("aws:"):
            out.append(_err(path, "tag keys must be 1-128 characters and must not start with 'aws:'"))
        elif key.startswith(KIT_TAG_PREFIX):
            out.append(_err(path, f"keys starting with {KIT_TAG_PREFIX!r} are set by the kit; use another key"))
        elif not _tag_text_ok(key):
            out.append(_err(path, "tag keys may hold letters, digits, spaces and _ . : / = + - @ only"))
        if len(value) > 256:
            out.append(_err(path, f"tag values are at most 256 characters, this one has {len(value)}"))
        elif not _tag_text_ok(value):
            out.append(_err(path, "tag values may hold letters, digits, spaces and _ . : / = + - @ only"))
    return out


# --- network -----------------------------------------------------------------------------


def check_network_ids(cfg: KitConfig, _: Catalog) -> list[Finding]:
    net, out = cfg.network, []
    if net.vpc_id is not None and not VPC_ID_RE.match(net.vpc_id):
        out.append(_err("network.vpcId", f'{net.vpc_id!r} is not a VPC id; e.g. "vpc-0abc1234def567890"'))
    for i, subnet in enumerate(net.subnet_ids):
        if not SUBNET_ID_RE.match(subnet):
            out.append(
                _err(f"network.subnetIds[{i}]", f'{subnet!r} is not a subnet id; e.g. "subnet-0abc1234def567890"')
            )
    if len(set(net.subnet_ids)) != len(net.subnet_ids):
        out.append(_err("network.subnetIds", "lists the same subnet twice; list each once"))
    if net.vpc_id is not None and not net.subnet_ids:
        out.append(
            _err(
                "network.subnetIds",
                "is required with network.vpcId: list the VPC's private subnets in "
                f"{cfg.availability_zone or 'the availabilityZone'} (MNP nodes need private subnets with a NAT route)",
            )
        )
    if net.vpc_id is None and net.subnet_ids:
        out.append(
            _err(
                "network.vpcId",
                "is required with network.subnetIds: name the VPC the subnets belong to, "
                "or remove subnetIds to let the kit create a VPC",
            )
        )
    return out


def check_vpc_cidr(cfg: KitConfig, _: Catalog) -> list[Finding]:
    if not cfg.creates_vpc:
        return []
    try:
        net = ipaddress.IPv4Network(cfg.network.vpc_cidr, strict=True)
    except ValueError as exc:
        return [_err("network.vpcCidr", f'{cfg.network.vpc_cidr!r} is not an IPv4 CIDR ({exc}); e.g. "10.40.0.0/16"')]
    if not VPC_MIN_PREFIX <= net.prefixlen <= VPC_MAX_PREFIX:
        return [
            _err(
                "network.vpcCidr",
                f"/{net.prefixlen} is out of range: the VPC needs a /{VPC_MIN_PREFIX} to /{VPC_MAX_PREFIX} block "
                "(AWS allows /16 to /28, and the kit puts a /24 public subnet beside the private one)",
            )
        ]
    if net.overlaps(DOCKER_BRIDGE):
        return [
            _warn(
                "network.vpcCidr",
                f"{net} overlaps {DOCKER_BRIDGE}, Docker's default bridge on the ECS-optimized AMI: hosts cannot "
                "reach VPC addresses inside it; use e.g. 10.40.0.0/16",
            )
        ]
    if not net.is_private:
        return [
            _warn(
                "network.vpcCidr",
                f"{net} is not an RFC 1918 private range; use e.g. 10.40.0.0/16 unless "
                "you really mean to use public address space inside the VPC",
            )
        ]
    return []


def _ssh_source(path: str, src: str, allow_anywhere: bool) -> list[Finding]:
    if src.startswith("sg-"):
        if SG_ID_RE.match(src):
            return []
        return [_err(path, f'{src!r} is not a security group id; e.g. "sg-0abc1234def567890"')]
    if "/" not in src:
        try:
            addr = ipaddress.ip_address(src)
        except ValueError:
            pass
        else:
            return [_err(path, f'{src!r} has no prefix length; write "{src}/{addr.max_prefixlen}" for one address')]
    try:
        cidr = ipaddress.ip_network(src, strict=True)
    except ValueError as exc:
        try:
            fixed = ipaddress.ip_network(src, strict=False)
        except ValueError:
            return [
                _err(
                    path,
                    f"{src!r} is neither a CIDR nor a security group id ({exc}); "
                    'e.g. "203.0.113.0/24" or "sg-0abc1234def567890"',
                )
            ]
        return [_err(path, f'{src!r} has host bits set; did you mean "{fixed}"?')]
    if cidr.prefixlen == 0 and not allow_anywhere:
        return [
            _err(
                path,
                f"{src} opens SSH to the whole internet; name your office or bastion CIDR, or set "
                "network.allowSshFromAnywhere to true if you really mean it",
            )
        ]
    return []


def check_ssh_sources(cfg: KitConfig, _: Catalog) -> list[Finding]:
    net, out = cfg.network, []
    for i, src in enumerate(net.ssh_sources):
        out.extend(_ssh_source(f"network.sshSources[{i}]", src, net.allow_ssh_from_anywhere))
    if len(set(net.ssh_sources)) > MAX_SSH_SOURCES:
        out.append(
            _warn(
                "network.sshSources",
                f"{len(set(net.ssh_sources))} sources; a security group takes 60 inbound rules by default and the "
                f"EFA self rule uses one: more than {MAX_SSH_SOURCES} fails unless the quota was raised",
            )
        )
    if net.allow_ssh_from_anywhere:
        out.append(
            _warn(
                "network.allowSshFromAnywhere",
                "is true: SSH may be opened to the whole internet; prefer a bastion or SSM Session Manager",
            )
        )
    return out


def check_subnet_capacity(cfg: KitConfig, catalog: Catalog) -> list[Finding]:
    """A new VPC's private subnet must hold every queue's maxNodes x addresses per node."""
    if not cfg.creates_vpc:
        return []
    try:
        vpc = ipaddress.IPv4Network(cfg.network.vpc_cidr, strict=True)
    except ValueError:
        return []  # reported by check_vpc_cidr
    if not VPC_MIN_PREFIX <= vpc.prefixlen <= VPC_MAX_PREFIX:
        return []  # reported by check_vpc_cidr
    plans = [p for p in (queue_plan(q, catalog) for q in cfg.queues) if p is not None and p.queue.max_nodes > 0]
    total = sum(p.addresses for p in plans)
    prefix = private_subnet_prefix(total)
    # The private subnet sits at the start of the block with a /24 public subnet after it.
    room = vpc.num_addresses - 2 ** (32 - PUBLIC_SUBNET_PREFIX)
    if prefix >= 0 and 2 ** (32 - prefix) <= room:
        return []
    parts = ", ".join(f"{p.queue.name}: {p.queue.max_nodes} nodes x {p.addresses_per_node}" for p in plans)
    biggest = subnet_capacity(vpc.prefixlen + 1)
    return [
        _err(
            "network.vpcCidr",
            f"the private subnet must hold {total} addresses ({parts}; each node takes its "
            "IP-bearing interfaces plus the container's awsvpc ENI) and AWS reserves 5 per subnet, but "
            f"{vpc} leaves room for a subnet of at most {biggest} usable addresses; use a larger vpcCidr "
            "(e.g. a /16) or lower maxNodes",
        )
    ]


# --- queues ------------------------------------------------------------------------------


def check_queue_count(cfg: KitConfig, _: Catalog) -> list[Finding]:
    if len(cfg.queues) <= MAX_QUEUES:
        return []
    return [
        _err(
            "queues",
            f"{len(cfg.queues)} queues; CloudFormation allows {CFN_MAX_OUTPUTS} outputs per stack and each queue "
            f"writes {len(outputs.QUEUE_FIELDS)}: use at most {MAX_QUEUES} queues per stack (or a second stack)",
        )
    ]


def check_queue_names(cfg: KitConfig, _: Catalog) -> list[Finding]:
    out: list[Finding] = []
    seen: dict[str, int] = {}
    for i, q in enumerate(cfg.queues):
        path = f"queues[{i}].name"
        if not QUEUE_NAME_RE.match(q.name):
            out.append(
                _err(
                    path,
                    f"{q.name!r} cannot become a resource name; use 1-24 lower-case letters and digits, starting "
                    'with a letter, with single hyphens between words, e.g. "train" or "h100-big"',
                )
            )
            continue
        # Construct ids and output keys use the PascalCase form, where "a1" and "a-1" are both "A1".
        key = pascal(q.name)
        if key in seen:
            out.append(
                _err(
                    path,
                    f"{q.name!r} clashes with queues[{seen[key]}].name (same resource names); "
                    "give every queue a distinct name",
                )
            )
        else:
            seen[key] = i
    return out


def per_queue(check: QueueCheck) -> Check:
    """Runs a one-queue check on every queue, with the queue's key path."""

    def run(cfg: KitConfig, catalog: Catalog) -> list[Finding]:
        return [f for i, q in enumerate(cfg.queues) for f in check(f"queues[{i}]", q, catalog)]

    run.__name__ = check.__name__
    return run


def queue_instance_type(path: str, q: QueueConfig, catalog: Catalog) -> list[Finding]:
    facts = catalog.get(q.instance_type)
    p = f"{path}.instanceType"
    if facts is None:
        close = difflib.get_close_matches(q.instance_type, [t.name for t in catalog.efa_capable()], n=3)
        hint = f"did you mean {', '.join(close)}?" if close else "see stacks/data/instance_types.json"
        return [_err(p, f"{q.instance_type!r} is not in the instance catalog of EFA and accelerated types; {hint}")]
    out = []
    if not facts.efa_supported:
        bigger = sorted(t.name for t in catalog.efa_capable() if t.family == facts.family)
        hint = f"EFA sizes of {facts.family}: {', '.join(bigger)}" if bigger else "pick an EFA-capable type"
        out.append(_err(p, f"{q.instance_type} does not support EFA, which multi-node training needs; {hint}"))
    if not facts.supports_cluster_placement:
        out.append(
            _err(
                p,
                f"{q.instance_type} cannot run in a cluster placement group, which AWS requires for "
                "EFA multi-node jobs; pick another type",
            )
        )
    if facts.accelerator == "none":
        out.append(
            _warn(p, f"{q.instance_type} has no GPU or Trainium accelerator; the kit targets accelerated training")
        )
    if facts.accelerator == "neuron" and q.image_id is None:
        out.append(
            _err(
                f"{path}.imageId",
                f"{q.instance_type} is a Trainium/Inferentia type: the ECS_AL2023_NVIDIA "
                "image has no Neuron driver; set imageId to an ECS-optimized AL2023 Neuron AMI",
            )
        )
    if facts.family in ("p3", "p3dn", "g3", "g3s") and q.image_id is None:
        out.append(
            _err(
                f"{path}.imageId",
                f"{facts.family} is not supported by the ECS_AL2023_NVIDIA image (aws-facts.md, AMIs); set "
                "imageId to an AMI that supports it, or use a newer family",
            )
        )
    return out


def queue_interface_layout(path: str, q: QueueConfig, catalog: Catalog) -> list[Finding]:
    """Every network card must take the interfaces the EFA layout puts on it, or EC2
    refuses to launch the instance."""
    plan = queue_plan(q, catalog)
    if plan is None:
        return []
    used = Counter(s.network_card_index for s in plan.slots)
    # The MNP container's own awsvpc ENI goes on card 0 too.
    used[0] += CONTAINER_ENIS_ON_CARD_0
    limits = {c.index: c.max_interfaces for c in plan.facts.network_cards}
    return [
        _err(
            f"{path}.instanceType",
            f"the EFA layout plus the container's ENI need {n} interfaces on network card {card} of "
            f"{q.instance_type}, which takes {limits.get(card, 0)}: the instance or the job could not start; "
            "pick another type",
        )
        for card, n in sorted(used.items())
        if n > limits.get(card, 0)
    ]


def queue_efa_interfaces(path: str, q: QueueConfig, catalog: Catalog) -> list[Finding]:
    facts = catalog.get(q.instance_type)
    if facts is None or not facts.efa_supported:
        return []  # reported by queue_instance_type
    limit, n = efa_limit(facts), requested_efa(q, facts)
    p = f"{path}.efaInterfaces"
    if not 1 <= n <= limit:
        given = '"max"' if q.efa_interfaces == "max" else str(n)
        return [
            _err(
                p,
                f"{given} is out of range for {q.instance_type}: use 1 to {limit} (its maximum, one per network "
                'card), or "max"',
            )
        ]
    if n == limit:
        return []
    got = provisioned_gbps(facts.network_cards, plan_queue(q, facts).slots)
    full = provisioned_gbps(
        facts.network_cards, plan_queue(QueueConfig("", q.instance_type, 0, efa_interfaces=limit), facts).slots
    )
    out = [
        _warn(
            p,
            f"{n} of {limit} EFA interfaces: about {full - got:g} of {full:g} Gbps of {q.instance_type}'s EFA "
            f'bandwidth stays unused (aws-facts.md: full bandwidth needs one EFA per network card); use "max" '
            "unless you need those cards for something else",
        )
    ]
    if facts.family in P5_LAYOUT_FAMILIES:
        out.append(
            _warn(
                p,
                f'{facts.family} has its own documented EFA layout (EC2 guide, "EFA configuration for '
                f'P5 and P5e instances"), made for all {limit} cards; a partial layout is untested by AWS: use "max"',
            )
        )
    return out


def queue_nodes(path: str, q: QueueConfig, catalog: Catalog) -> list[Finding]:
    out = []
    if q.min_nodes < 0:
        out.append(_err(f"{path}.minNodes", f"{q.min_nodes} is negative; use 0 (scale to zero) or more"))
    if q.max_nodes < 2:
        out.append(_err(f"{path}.maxNodes", f"{q.max_nodes} is below 2: a multi-node job needs at least two nodes"))
    elif q.max_nodes < q.min_nodes:
        out.append(
            _err(
                f"{path}.maxNodes", f"{q.max_nodes} is below minNodes ({q.min_nodes}); raise maxNodes or lower minNodes"
            )
        )
    facts = catalog.get(q.instance_type)
    if facts is None:
        return out
    if q.max_nodes * facts.vcpus > MAX_VCPUS:
        out.append(
            _err(
                f"{path}.maxNodes",
                f"{q.max_nodes} nodes x {facts.vcpus} vCPUs exceeds the largest maxvCpus AWS Batch accepts "
                f"({MAX_VCPUS}); use at most {MAX_VCPUS // facts.vcpus}",
            )
        )
    elif q.max_nodes > MNP_DEFAULT_MAX_NODES:
        out.append(
            _warn(
                f"{path}.maxNodes",
                f"{q.max_nodes} nodes: AWS Batch runs up to {MNP_DEFAULT_MAX_NODES} nodes per multi-node job by "
                "default (the ECS cluster instance limit); request a quota increase first",
            )
        )
    if q.min_nodes > 0:
        accel = f"{facts.gpus} GPUs" if facts.gpus else f"{facts.neuron_devices} Neuron devices"
        out.append(
            _warn(
                f"{path}.minNodes",
                f"{q.min_nodes} x {q.instance_type} ({accel} each) stay running and billed while no job runs; "
                "the kit has no price data yet, so it cannot say what that costs per hour; use 0 unless start-up "
                "time matters more than idle cost",
            )
        )
    return out


def queue_root_volume(path: str, q: QueueConfig, _: Catalog) -> list[Finding]:
    if ROOT_VOLUME_MIN_GIB <= q.root_volume_gib <= ROOT_VOLUME_MAX_GIB:
        return []
    return [
        _err(
            f"{path}.rootVolumeGiB",
            f"{q.root_volume_gib} is out of range: use {ROOT_VOLUME_MIN_GIB} (the AMI's "
            f"snapshot size) to {ROOT_VOLUME_MAX_GIB} (gp3 maximum)",
        )
    ]


def queue_image_and_wait(path: str, q: QueueConfig, _: Catalog) -> list[Finding]:
    out = []
    if q.image_id is not None and not AMI_ID_RE.match(q.image_id):
        out.append(_err(f"{path}.imageId", f'{q.image_id!r} is not an AMI id; e.g. "ami-0abc1234def567890"'))
    if not CAPACITY_WAIT_MIN <= q.capacity_wait_minutes <= CAPACITY_WAIT_MAX:
        out.append(
            _err(
                f"{path}.capacityWaitMinutes",
                f"{q.capacity_wait_minutes} is out of range: AWS Batch "
                f"accepts {CAPACITY_WAIT_MIN} to {CAPACITY_WAIT_MAX} minutes before it cancels a job "
                "stuck waiting for capacity",
            )
        )
    return out


def queue_placement_group(path: str, q: QueueConfig, _: Catalog) -> list[Finding]:
    if q.placement_group is None or PLACEMENT_GROUP_RE.match(q.placement_group):
        return []
    return [
        _err(
            f"{path}.placementGroup",
            f"{q.placement_group!r} is not a placement group name; use the name (not the ARN) of an existing "
            'cluster placement group, e.g. "gpu-cluster-a"',
        )
    ]


def queue_capacity(path: str, q: QueueConfig, catalog: Catalog) -> list[Finding]:
    """Capacity reservations and Capacity Blocks (aws-facts.md, Capacity)."""
    cap = q.capacity
    if cap is None:
        return []
    cpath = f"{path}.capacity"
    out = []
    if cap.kind == "reservation-group":
        arn = cap.reservation_group_arn or ""
        if not RESOURCE_GROUP_ARN_RE.match(arn):
            out.append(
                _err(
                    f"{cpath}.reservationGroupArn",
                    f"{arn!r} is not a resource group ARN; e.g. "
                    '"arn:aws:resource-groups:us-east-1:123456789012:group/my-reservations"',
                )
            )
        return out + _reservation_placement(path, q)
    key = "capacityBlockId" if cap.kind == "capacity-block" else "reservationId"
    if not RESERVATION_ID_RE.match(cap.reservation_id or ""):
        out.append(
            _err(
                f"{cpath}.{key}",
                f'{cap.reservation_id!r} is not a capacity reservation id; e.g. "cr-0123456789abcdef0"',
            )
        )
    facts = catalog.get(q.instance_type)
    if cap.kind == "capacity-block":
        if facts is not None and "capacity-block" not in facts.usage_classes:
            out.append(
                _err(
                    f"{path}.instanceType",
                    f"{q.instance_type} is not sold as EC2 Capacity Blocks for ML "
                    "(DescribeInstanceTypes SupportedUsageClasses); use a reservationId instead, or a "
                    "type such as p5.48xlarge",
                )
            )
        if q.min_nodes > 0:
            out.append(
                _warn(
                    f"{path}.minNodes",
                    "a Capacity Block exists only for its time window: keep minNodes "
                    "0, or instances stay requested after the block ends and the CE cannot scale",
                )
            )
        out.append(
            _warn(
                cpath,
                "Capacity Block instances are already placed together; the kit's cluster placement "
                "group must match the block or launches fail. If jobs stay RUNNABLE, check the CE's "
                "activity with `python -m kit doctor`. Set maxNodes to the block's instance count; when "
                "the block ends its instances are terminated and running jobs fail",
            )
        )
    return out + _reservation_placement(path, q)


def _reservation_placement(path: str, q: QueueConfig) -> list[Finding]:
    """A reservation serves launches into a cluster placement group only if it was created in
    that group (aws-facts.md, Capacity): the kit's own new group can never match one."""
    cap = q.capacity
    if cap is None or cap.kind == "capacity-block":
        return []
    if q.placement_group is None:
        return [
            _err(
                f"{path}.placementGroup",
                "is required with a capacity reservation: name the cluster placement group the reservation was "
                "created in (a reservation only serves launches into its own group; a group the kit creates "
                "could never match it)",
            )
        ]
    return [
        _warn(
            f"{path}.capacity",
            f"the reservation must have been created in placement group {q.placement_group!r}, for "
            f"{q.instance_type} in this availabilityZone; `python -m kit doctor` checks it after deploy",
        )
    ]


CHECKS: tuple[Check, ...] = (
    check_region_and_az,
    check_stack_and_account,
    check_metaflow,
    check_tags,
    check_network_ids,
    check_vpc_cidr,
    check_ssh_sources,
    check_queue_count,
    check_queue_names,
    per_queue(queue_instance_type),
    per_queue(queue_interface_layout),
    per_queue(queue_efa_interfaces),
    per_queue(queue_nodes),
    per_queue(queue_root_volume),
    per_queue(queue_image_and_wait),
    per_queue(queue_placement_group),
    per_queue(queue_capacity),
    check_subnet_capacity,
)


def validate_model(cfg: KitConfig, catalog: Catalog | None = None) -> list[Finding]:
    catalog = catalog or load_catalog()
    findings: list[Finding] = []
    for check in CHECKS:
        findings.extend(check(cfg, catalog))
    return findings


# Findings are listed in the order a config file is usually written.
_SECTION_ORDER = ("stackName", "region", "account", "availabilityZone", "network", "queues", "metaflow", "tags")
_SECTION_RE = re.compile(r"^([A-Za-z]+)(?:\[(\d+)\])?")


def _reading_order(f: Finding) -> tuple[int, int]:
    m = _SECTION_RE.match(f.path)
    if m is None:
        return (-1, -1)  # the whole config
    rank = _SECTION_ORDER.index(m[1]) if m[1] in _SECTION_ORDER else len(_SECTION_ORDER)
    return (rank, int(m[2]) if m[2] else -1)


def _covered(path: str, prefixes: Iterable[str]) -> bool:
    return any(path == p or path.startswith((f"{p}.", f"{p}[")) for p in prefixes)


def validate(
    raw: Any, env: Mapping[str, str] | None = None, catalog: Catalog | None = None
) -> tuple[KitConfig | None, list[Finding]]:
    """Parse and check a raw config; returns the model (None on any error) and every finding.

    A field the parser rejected holds a default or placeholder, so a validator's finding
    about it (or anything under it) would only repeat the parser's: those are dropped.
    """
    cfg, findings = parse_config(raw, env)
    shape_errors = {f.path for f in findings if f.level == "error"}
    findings += [f for f in validate_model(cfg, catalog) if not _covered(f.path, shape_errors)]
    ok = not any(f.level == "error" for f in findings)
    return (cfg if ok else None), sorted(findings, key=_reading_order)
