"""Every rule a config must meet before anything is synthesized or deployed.

Each validator is a small pure function ``(config, catalog) -> list[Finding]`` in the
manner of AWS ParallelCluster's validators; `validate()` runs them all and returns every
finding at once. Messages name the key path, what is wrong, and what would be valid, and
cite the rule from ../shared/aws-facts.md where one applies. No aws_cdk import here:
`python -m kit validate` must stay fast.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from typing import Any

from constructs_lib.efa_layout import P5_LAYOUT_FAMILIES, efa_cards, provisioned_gbps
from stacks.catalog import Catalog, InstanceFacts, load_catalog
from stacks.config import Finding, KitConfig, QueueConfig, parse_config
from stacks.plan import (
    PUBLIC_SUBNET_PREFIX,
    plan_queue,
    private_subnet_prefix,
    resolve_efa_count,
    subnet_capacity,
)

Check = Callable[[KitConfig, Catalog], list[Finding]]

REGION_RE = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d$")
STACK_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,127}$")
# Queue names end up in construct ids, output keys and Metaflow decorators.
QUEUE_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,23}$")
ACCOUNT_RE = re.compile(r"^\d{12}$")
VPC_ID_RE = re.compile(r"^vpc-([0-9a-f]{8}|[0-9a-f]{17})$")
SUBNET_ID_RE = re.compile(r"^subnet-([0-9a-f]{8}|[0-9a-f]{17})$")
SG_ID_RE = re.compile(r"^sg-([0-9a-f]{8}|[0-9a-f]{17})$")
AMI_ID_RE = re.compile(r"^ami-([0-9a-f]{8}|[0-9a-f]{17})$")
ROLE_ARN_RE = re.compile(r"^arn:aws(-[a-z]+)*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")
PROFILE_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

ROOT_VOLUME_MIN_GIB = 30  # the ECS-optimized AL2023 GPU AMI's snapshot is 30 GiB
ROOT_VOLUME_MAX_GIB = 16384  # gp3 maximum
CAPACITY_WAIT_MIN, CAPACITY_WAIT_MAX = 10, 1440  # JobStateTimeLimitActions: 600..86400 s
MAX_TAGS = 45  # 50 per resource, less the ones CloudFormation and CDK add


def _err(path: str, msg: str) -> Finding:
    return Finding("error", path, msg)


def _warn(path: str, msg: str) -> Finding:
    return Finding("warning", path, msg)


# --- top level ---------------------------------------------------------------------------


def check_region_and_az(cfg: KitConfig, _: Catalog) -> list[Finding]:
    out = []
    if not REGION_RE.match(cfg.region):
        out.append(_err("region", f'{cfg.region!r} is not an AWS region name; e.g. "us-east-1"'))
    if not re.fullmatch(re.escape(cfg.region) + r"[a-z]", cfg.availability_zone):
        out.append(
            _err(
                "availabilityZone",
                f"{cfg.availability_zone!r} is not an Availability Zone of region {cfg.region!r}; "
                f'use the region name plus a letter, e.g. "{cfg.region}a"',
            )
        )
    return out


def check_names(cfg: KitConfig, _: Catalog) -> list[Finding]:
    out = []
    if not STACK_NAME_RE.match(cfg.stack_name):
        out.append(
            _err("stackName", f"{cfg.stack_name!r} is not a CloudFormation stack name; use letters, digits and "
                 "hyphens, starting with a letter, at most 128 characters")
        )
    if cfg.account is not None and not ACCOUNT_RE.match(cfg.account):
        out.append(_err("account", f"{cfg.account!r} is not an AWS account id; use the 12 digits"))
    if not PROFILE_RE.match(cfg.metaflow.profile):
        out.append(
            _err("metaflow.profile", f"{cfg.metaflow.profile!r} cannot name a Metaflow profile file; use letters, "
                 "digits, '-' and '_'")
        )
    arn = cfg.metaflow.s3_access_role_arn
    if arn is not None and not ROLE_ARN_RE.match(arn):
        out.append(
            _err("metaflow.s3AccessRoleArn", f"{arn!r} is not an IAM role ARN; e.g. "
                 '"arn:aws:iam::123456789012:role/metaflow-task"')
        )
    return out


def check_tags(cfg: KitConfig, _: Catalog) -> list[Finding]:
    out = []
    if len(cfg.tags) > MAX_TAGS:
        out.append(_err("tags", f"{len(cfg.tags)} tags; AWS allows 50 per resource and the kit needs a few: "
                        f"use at most {MAX_TAGS}"))
    for key, value in cfg.tags:
        if not 1 <= len(key) <= 128 or key.lower().startswith("aws:"):
            out.append(_err(f"tags.{key}", "tag keys must be 1-128 characters and must not start with 'aws:'"))
        if len(value) > 256:
            out.append(_err(f"tags.{key}", f"tag values are at most 256 characters, this one has {len(value)}"))
    return out


# --- network -----------------------------------------------------------------------------


def check_network_ids(cfg: KitConfig, _: Catalog) -> list[Finding]:
    net, out = cfg.network, []
    if net.vpc_id is not None and not VPC_ID_RE.match(net.vpc_id):
        out.append(_err("network.vpcId", f"{net.vpc_id!r} is not a VPC id; e.g. \"vpc-0abc1234def567890\""))
    for i, subnet in enumerate(net.subnet_ids):
        if not SUBNET_ID_RE.match(subnet):
            out.append(_err(f"network.subnetIds[{i}]", f"{subnet!r} is not a subnet id; e.g. \"subnet-0abc1234def567890\""))
    if len(set(net.subnet_ids)) != len(net.subnet_ids):
        out.append(_err("network.subnetIds", "lists the same subnet twice; list each once"))
    if net.vpc_id is not None and not net.subnet_ids:
        out.append(_err("network.subnetIds", "is required with network.vpcId: list the VPC's private subnets in "
                        f"{cfg.availability_zone} (MNP nodes need private subnets with a NAT route)"))
    if net.vpc_id is None and net.subnet_ids:
        out.append(_err("network.vpcId", "is required with network.subnetIds: name the VPC the subnets belong to, "
                        "or remove subnetIds to let the kit create a VPC"))
    return out


def check_vpc_cidr(cfg: KitConfig, _: Catalog) -> list[Finding]:
    if not cfg.creates_vpc:
        return []
    try:
        net = ipaddress.IPv4Network(cfg.network.vpc_cidr, strict=True)
    except ValueError as exc:
        return [_err("network.vpcCidr", f"{cfg.network.vpc_cidr!r} is not an IPv4 CIDR ({exc}); e.g. \"10.40.0.0/16\"")]
    if not 16 <= net.prefixlen <= 23:
        return [_err("network.vpcCidr", f"/{net.prefixlen} is out of range: the VPC needs a /16 to /23 block "
                     "(AWS allows /16 to /28, and the kit puts a /24 public subnet beside the private one)")]
    if not net.is_private:
        return [_warn("network.vpcCidr", f"{net} is not an RFC 1918 private range; use e.g. 10.40.0.0/16 unless "
                      "you really mean to use public address space inside the VPC")]
    return []


def check_ssh_sources(cfg: KitConfig, _: Catalog) -> list[Finding]:
    net, out = cfg.network, []
    for i, src in enumerate(net.ssh_sources):
        path = f"network.sshSources[{i}]"
        if src.startswith("sg-"):
            if not SG_ID_RE.match(src):
                out.append(_err(path, f"{src!r} is not a security group id; e.g. \"sg-0abc1234def567890\""))
            continue
        try:
            cidr = ipaddress.ip_network(src, strict=True)
        except ValueError as exc:
            out.append(_err(path, f"{src!r} is neither a CIDR nor a security group id ({exc}); "
                            'e.g. "203.0.113.0/24" or "sg-0abc1234def567890"'))
            continue
        if cidr.prefixlen == 0 and not net.allow_ssh_from_anywhere:
            out.append(_err(path, f"{src} opens SSH to the whole internet; name your office or bastion CIDR, or set "
                            "network.allowSshFromAnywhere to true if you really mean it"))
    if net.allow_ssh_from_anywhere:
        out.append(_warn("network.allowSshFromAnywhere", "is true: SSH may be opened to the whole internet; prefer a "
                         "bastion or SSM Session Manager"))
    return out


def check_subnet_capacity(cfg: KitConfig, catalog: Catalog) -> list[Finding]:
    """A new VPC's private subnet must hold every queue's maxNodes x addresses per node."""
    if not cfg.creates_vpc:
        return []
    try:
        vpc = ipaddress.IPv4Network(cfg.network.vpc_cidr, strict=True)
    except ValueError:
        return []  # reported by check_vpc_cidr
    plans = [p for p in (_plan(q, catalog) for q in cfg.queues) if p is not None]
    total = sum(p.addresses for p in plans)
    prefix = private_subnet_prefix(total)
    room = 2 ** (32 - vpc.prefixlen) - 2 ** (32 - PUBLIC_SUBNET_PREFIX)
    if prefix >= 0 and 2 ** (32 - prefix) <= room:
        return []
    parts = ", ".join(f"{p.queue.name}: {p.queue.max_nodes} nodes x {p.addresses_per_node}" for p in plans)
    biggest = subnet_capacity(max(prefix, vpc.prefixlen + 1))
    return [
        _err("network.vpcCidr", f"the private subnet must hold {total} addresses ({parts}; each node takes its "
             "IP-bearing interfaces plus the container's awsvpc ENI) and AWS reserves 5 per subnet, but "
             f"{vpc} leaves room for a subnet of at most {biggest} usable addresses; use a larger vpcCidr "
             "(e.g. a /16) or lower maxNodes")
    ]


# --- queues ------------------------------------------------------------------------------


def check_queue_names(cfg: KitConfig, _: Catalog) -> list[Finding]:
    out, seen = [], {}
    from stacks.plan import pascal

    for i, q in enumerate(cfg.queues):
        path = f"queues[{i}].name"
        if not QUEUE_NAME_RE.match(q.name):
            out.append(_err(path, f"{q.name!r} cannot become a resource name; use 1-24 lower-case letters, digits and "
                            "hyphens, starting with a letter, e.g. \"train\""))
            continue
        key = pascal(q.name)
        if key in seen:
            out.append(_err(path, f"{q.name!r} clashes with queues[{seen[key]}].name (same resource names); "
                            "give every queue a distinct name"))
        else:
            seen[key] = i
    return out


def _plan(q: QueueConfig, catalog: Catalog):  # type: ignore[no-untyped-def]
    facts = catalog.get(q.instance_type)
    if facts is None or not facts.efa_supported:
        return None
    count = resolve_efa_count(q, facts)
    if not 1 <= count <= len(efa_cards(facts.network_cards)):
        return None
    return plan_queue(q, facts)


def _queue_checks(cfg: KitConfig, catalog: Catalog, check: Callable[[str, QueueConfig, Catalog], list[Finding]]) -> list[Finding]:
    out: list[Finding] = []
    for i, q in enumerate(cfg.queues):
        out.extend(check(f"queues[{i}]", q, catalog))
    return out


def _instance_type(path: str, q: QueueConfig, catalog: Catalog) -> list[Finding]:
    facts = catalog.get(q.instance_type)
    p = f"{path}.instanceType"
    if facts is None:
        import difflib

        close = difflib.get_close_matches(q.instance_type, [t.name for t in catalog.efa_capable()], n=3)
        hint = f"did you mean {', '.join(close)}?" if close else "see stacks/data/instance_types.json"
        return [_err(p, f"{q.instance_type!r} is not in the instance catalog of EFA and accelerated types; {hint}")]
    out = []
    if not facts.efa_supported:
        bigger = sorted(t.name for t in catalog.efa_capable() if t.family == facts.family)
        hint = f"EFA sizes of {facts.family}: {', '.join(bigger)}" if bigger else "pick an EFA-capable type"
        out.append(_err(p, f"{q.instance_type} does not support EFA, which multi-node training needs; {hint}"))
    if not facts.supports_cluster_placement:
        out.append(_err(p, f"{q.instance_type} cannot run in a cluster placement group, which AWS requires for "
                        "EFA multi-node jobs; pick another type"))
    if facts.accelerator == "none":
        out.append(_warn(p, f"{q.instance_type} has no GPU or Trainium accelerator; the kit targets accelerated "
                         "training"))
    if facts.accelerator == "neuron" and q.image_id is None:
        out.append(_err(f"{path}.imageId", f"{q.instance_type} is a Trainium/Inferentia type: the ECS_AL2023_NVIDIA "
                        "image has no Neuron driver; set imageId to an ECS-optimized AL2023 Neuron AMI"))
    if facts.family in ("p3", "p3dn", "g3", "g3s") and q.image_id is None:
        out.append(_err(f"{path}.imageId", f"{facts.family} is not supported by the ECS_AL2023_NVIDIA image; set "
                        "imageId to an AMI that supports it, or use a newer family"))
    return out


def _efa_interfaces(path: str, q: QueueConfig, catalog: Catalog) -> list[Finding]:
    facts = catalog.get(q.instance_type)
    if facts is None or not facts.efa_supported:
        return []
    usable = len(efa_cards(facts.network_cards))
    p = f"{path}.efaInterfaces"
    if q.efa_interfaces == "max":
        return []
    n = int(q.efa_interfaces)
    if not 1 <= n <= usable:
        return [_err(p, f"{n} is out of range for {q.instance_type}: use 1 to {usable} (one per network card), "
                     'or "max"')]
    if n == usable:
        return []
    plan = plan_queue(q, facts)
    full = facts.total_peak_gbps
    got = provisioned_gbps(facts.network_cards, plan.slots)
    out = [_warn(p, f"{n} of {usable} EFA interfaces: about {got:g} of {full:g} Gbps of {q.instance_type}'s network "
                 f"bandwidth stays unused; use \"max\" unless you need the cards for something else")]
    if facts.family in P5_LAYOUT_FAMILIES:
        out.append(_warn(p, f"{facts.family} has its own documented EFA layout (EC2 guide, \"EFA configuration for "
                         "P5 and P5e instances\"), tuned for all 32 cards; a partial layout is untested by AWS"))
    return out


def _nodes(path: str, q: QueueConfig, catalog: Catalog) -> list[Finding]:
    out = []
    if q.min_nodes < 0:
        out.append(_err(f"{path}.minNodes", f"{q.min_nodes} is negative; use 0 (scale to zero) or more"))
    if q.max_nodes < 2:
        out.append(_err(f"{path}.maxNodes", f"{q.max_nodes} is below 2: a multi-node job needs at least two nodes"))
    elif q.max_nodes < q.min_nodes:
        out.append(_err(f"{path}.maxNodes", f"{q.max_nodes} is below minNodes ({q.min_nodes}); raise maxNodes or "
                        "lower minNodes"))
    facts = catalog.get(q.instance_type)
    if q.min_nodes > 0 and facts is not None:
        out.append(_warn(f"{path}.minNodes", f"{q.min_nodes} x {q.instance_type} stay running (and billed) with no "
                         "job; use 0 unless start-up time matters more than idle cost"))
    return out


def _root_volume(path: str, q: QueueConfig, _: Catalog) -> list[Finding]:
    if ROOT_VOLUME_MIN_GIB <= q.root_volume_gib <= ROOT_VOLUME_MAX_GIB:
        return []
    return [_err(f"{path}.rootVolumeGiB", f"{q.root_volume_gib} is out of range: use {ROOT_VOLUME_MIN_GIB} (the AMI's "
                 f"snapshot size) to {ROOT_VOLUME_MAX_GIB} (gp3 maximum)")]


def _image_and_wait(path: str, q: QueueConfig, _: Catalog) -> list[Finding]:
    out = []
    if q.image_id is not None and not AMI_ID_RE.match(q.image_id):
        out.append(_err(f"{path}.imageId", f"{q.image_id!r} is not an AMI id; e.g. \"ami-0abc1234def567890\""))
    if not CAPACITY_WAIT_MIN <= q.capacity_wait_minutes <= CAPACITY_WAIT_MAX:
        out.append(_err(f"{path}.capacityWaitMinutes", f"{q.capacity_wait_minutes} is out of range: AWS Batch "
                        f"accepts {CAPACITY_WAIT_MIN} to {CAPACITY_WAIT_MAX} minutes before it cancels a job "
                        "stuck waiting for capacity"))
    return out


def check_queues(cfg: KitConfig, catalog: Catalog) -> list[Finding]:
    out: list[Finding] = []
    for check in (_instance_type, _efa_interfaces, _nodes, _root_volume, _image_and_wait):
        out.extend(_queue_checks(cfg, catalog, check))
    return out


CHECKS: tuple[Check, ...] = (
    check_region_and_az,
    check_names,
    check_tags,
    check_network_ids,
    check_vpc_cidr,
    check_ssh_sources,
    check_queue_names,
    check_queues,
    check_subnet_capacity,
)


def validate_model(cfg: KitConfig, catalog: Catalog | None = None) -> list[Finding]:
    catalog = catalog or load_catalog()
    findings: list[Finding] = []
    for check in CHECKS:
        findings.extend(check(cfg, catalog))
    return findings


def validate(raw: Any, env: Mapping[str, str] | None = None) -> tuple[KitConfig | None, list[Finding]]:
    """Parse and check a raw config; returns the model (None on any error) and every finding."""
    cfg, findings = parse_config(raw, env)
    if cfg is not None:
        findings = findings + validate_model(cfg)
    ok = cfg is not None and not any(f.level == "error" for f in findings)
    return (cfg if ok else None), findings
