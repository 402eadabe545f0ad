"""The checks behind `python -m kit doctor`: each reads the LIVE resources of a deployed
stack with boto3 (not the template) and returns verdicts (PASS / WARN / FAIL / SKIP), with a
one-line fix for anything that is not a PASS.

Every check is a small function. `Live` reads and caches what they share (the compute
environment, the launch-template version it uses, subnets, security groups), so a check
costs only the calls nobody made before it. `run_checks` runs them one by one and turns an
API the endpoint does not implement (moto, partial emulators) into a SKIP with the reason,
never a crash. The rules come from ../shared/aws-facts.md; each check cites the one it
enforces.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Literal

from botocore.exceptions import ClientError
from botocore.parsers import ResponseParserError

from constructs_lib.efa_layout import (
    InterfaceSlot,
    addresses_per_node,
    efa_cards,
    efa_device_count,
    plan_interfaces,
    provisioned_gbps,
)
from stacks.catalog import Catalog, InstanceFacts
from stacks.outputs import QueueOutputs, StackOutputs

Status = Literal["PASS", "WARN", "FAIL", "SKIP"]
STATUSES: tuple[Status, ...] = ("PASS", "WARN", "FAIL", "SKIP")

# Error codes and HTTP statuses with which an endpoint says "I do not have this API".
UNSUPPORTED_CODES = frozenset(
    {
        "NotImplemented",
        "NotImplementedException",
        "NotImplementedError",
        "InvalidAction",
        "UnsupportedOperation",
        "UnknownOperationException",
        "InternalFailure",
        "InternalError",
        "InternalServerError",
        "500",
        "501",
    }
)
DENIED_CODES = frozenset({"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "UnauthorizedAccess"})

ANYWHERE_V4 = "0.0.0.0/0"
# Metaflow keeps the @batch efa value on the decorator; a profile key for it, if a tool
# writes one, is recognized by an EFA word in its name (METAFLOW_BATCH_EFA, ..._EFA_INTERFACES).
EFA_KEY_RE = re.compile(r"(?:^|_)EFA(?:_|$)", re.IGNORECASE)
QUEUE_KEY = "METAFLOW_BATCH_JOB_QUEUE"
RUNNABLE_SHOWN = 5  # jobs described one by one; the rest are counted
DNS_FLAGS = {"enableDnsSupport": "enable-dns-support", "enableDnsHostnames": "enable-dns-hostnames"}


@dataclass(frozen=True)
class Verdict:
    status: Status
    detail: str
    fix: str = ""


@dataclass(frozen=True)
class CheckResult:
    check: str  # stable id, e.g. "ce.state"
    title: str  # what was checked, in words
    queue: str | None  # the kit's queue name; None for stack-wide checks
    status: Status
    detail: str
    fix: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Missing(Exception):
    """A resource a check needs does not exist (any more). The check that owns the resource
    reports a FAIL; every other check that needs it is skipped with this reason."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


# --- errors ---------------------------------------------------------------------------------


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def http_status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def is_unsupported(exc: BaseException) -> bool:
    """The endpoint has no such API: moto raises NotImplementedError in-process and answers
    500 (as HTML botocore cannot parse) as a server; other emulators say NotImplemented/501."""
    if isinstance(exc, NotImplementedError):
        return True
    if isinstance(exc, ResponseParserError):
        return "500" in str(exc) or "501" in str(exc)
    if isinstance(exc, ClientError):
        message = str(exc.response.get("Error", {}).get("Message", "")).lower()
        return error_code(exc) in UNSUPPORTED_CODES or http_status(exc) == 501 or "not been implemented" in message
    return False


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        op = getattr(exc, "operation_name", "") or "call"
        return f"{op}: {err.get('Code', '?')}: {err.get('Message', '')}".strip()
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


# --- small helpers --------------------------------------------------------------------------


def as_int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def as_bool(value: Any) -> bool:
    """Emulators echo booleans back as given, sometimes as the strings "true"/"false"."""
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)


def short_id(arn_or_name: str) -> str:
    """A Batch ARN's last path segment (its name); names pass through."""
    return arn_or_name.rsplit("/", 1)[-1]


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def efa_word(slot: InterfaceSlot) -> str:
    return f"card {slot.network_card_index}/device {slot.device_index} {slot.interface_type}"


def _first(slots: Iterable[InterfaceSlot], shown: int = 3) -> str:
    """A few slots in card/device order, for a message ("none" when empty)."""
    ordered = sorted(slots, key=lambda s: (s.network_card_index, s.device_index))
    text = ", ".join(efa_word(s) for s in ordered[:shown])
    return (text + (f" and {len(ordered) - shown} more" if len(ordered) > shown else "")) or "none"


def facts_from_describe(raw: Mapping[str, Any]) -> InstanceFacts:
    """InstanceFacts from one live DescribeInstanceTypes record, through the same
    conversion the catalog generator uses (one rule, one implementation)."""
    from kit.catalog import catalog_entry
    from stacks.catalog import facts_from_entry

    return facts_from_entry(str(raw["InstanceType"]), catalog_entry(raw))


# --- what the checks share ------------------------------------------------------------------


@dataclass(frozen=True)
class TemplateUse:
    """The launch template a compute environment names and the version it runs."""

    template_id: str
    template_name: str
    named_version: str  # as the CE names it: "3", "$Latest" or "$Default"
    latest: int
    default: int
    version: int  # the version whose data doctor inspects
    data: Mapping[str, Any]

    @property
    def slots(self) -> tuple[InterfaceSlot, ...]:
        return tuple(
            InterfaceSlot(
                network_card_index=as_int(ni.get("NetworkCardIndex"), 0),
                device_index=as_int(ni.get("DeviceIndex"), 0),
                interface_type=str(ni.get("InterfaceType") or "interface"),
            )
            for ni in self.data.get("NetworkInterfaces") or []
        )


@dataclass
class Live:
    """Cached reads of the live resources behind one stack's outputs."""

    session: Any  # boto3.Session
    outputs: StackOutputs
    stack_name: str
    catalog: Catalog
    stack: Mapping[str, Any] | None = None  # the DescribeStacks record, when read from CloudFormation
    env: Mapping[str, str] = field(default_factory=dict)
    metaflow_profile: str | None = None  # --profile; None means the stack's MetaflowProfile output
    now: datetime | None = None
    _clients: dict[str, Any] = field(default_factory=dict, init=False, repr=False)
    _cache: dict[tuple[str, ...], Any] = field(default_factory=dict, init=False, repr=False)

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = self.session.client(service)
        return self._clients[service]

    def _cached(self, key: tuple[str, ...], read: Callable[[], Any]) -> Any:
        if key not in self._cache:
            try:
                self._cache[key] = read()
            except Missing as exc:
                self._cache[key] = exc
        value = self._cache[key]
        if isinstance(value, Missing):
            raise value
        return value

    # Batch

    def compute_environment(self, arn: str) -> dict[str, Any]:
        def read() -> dict[str, Any]:
            found = self.client("batch").describe_compute_environments(computeEnvironments=[arn])
            envs = found.get("computeEnvironments") or []
            if not envs:
                raise Missing(f"compute environment {short_id(arn)}")
            return dict(envs[0])

        result: dict[str, Any] = self._cached(("ce", arn), read)
        return result

    def compute_resources(self, q: QueueOutputs) -> dict[str, Any]:
        return dict(self.compute_environment(q.compute_environment_arn).get("computeResources") or {})

    def job_queue(self, arn: str) -> dict[str, Any]:
        def read() -> dict[str, Any]:
            queues = self.client("batch").describe_job_queues(jobQueues=[arn]).get("jobQueues") or []
            if not queues:
                raise Missing(f"job queue {short_id(arn)}")
            return dict(queues[0])

        result: dict[str, Any] = self._cached(("jq", arn), read)
        return result

    # EC2

    def template_use(self, q: QueueOutputs) -> TemplateUse:
        spec = self.compute_resources(q).get("launchTemplate") or {}
        lt_id, lt_name = spec.get("launchTemplateId"), spec.get("launchTemplateName")
        if not lt_id and not lt_name:
            raise Missing(f"launch template of compute environment {short_id(q.compute_environment_arn)}")
        # Batch's default when the CE names no version is $Default.
        named = str(spec.get("version") or "$Default")

        def read() -> TemplateUse:
            ec2 = self.client("ec2")
            ident = {"LaunchTemplateIds": [lt_id]} if lt_id else {"LaunchTemplateNames": [lt_name]}
            try:
                template = ec2.describe_launch_templates(**ident)["LaunchTemplates"][0]
            except ClientError as exc:
                if "NotFound" in error_code(exc) or "Malformed" in error_code(exc):
                    raise Missing(f"launch template {lt_id or lt_name}") from exc
                raise
            latest = as_int(template.get("LatestVersionNumber"), 1)
            default = as_int(template.get("DefaultVersionNumber"), 1)
            version = latest if named == "$Latest" else default if named == "$Default" else as_int(named, 0)
            try:
                versions = ec2.describe_launch_template_versions(
                    LaunchTemplateId=template["LaunchTemplateId"], Versions=[str(version)]
                )["LaunchTemplateVersions"]
            except ClientError as exc:
                if "NotFound" in error_code(exc):
                    raise Missing(f"version {named} of launch template {template['LaunchTemplateId']}") from exc
                raise
            if not versions:
                raise Missing(f"version {named} of launch template {template['LaunchTemplateId']}")
            return TemplateUse(
                template_id=str(template["LaunchTemplateId"]),
                template_name=str(template.get("LaunchTemplateName", "")),
                named_version=named,
                latest=latest,
                default=default,
                version=version,
                data=versions[0].get("LaunchTemplateData") or {},
            )

        result: TemplateUse = self._cached(("lt", str(lt_id or lt_name), named), read)
        return result

    def subnets(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        def read() -> list[dict[str, Any]]:
            try:
                pages = self.client("ec2").get_paginator("describe_subnets").paginate(SubnetIds=list(ids))
                return [dict(s) for page in pages for s in page["Subnets"]]
            except ClientError as exc:
                if "NotFound" in error_code(exc):
                    raise Missing(f"subnet(s) {', '.join(ids)}: {exc.response['Error'].get('Message', '')}") from exc
                raise

        result: list[dict[str, Any]] = self._cached(("subnets", *ids), read)
        return result

    def queue_subnet_ids(self, q: QueueOutputs) -> list[str]:
        """The subnets the CE launches into (live), else the stack's."""
        try:
            live = list(self.compute_resources(q).get("subnets") or [])
        except Missing:
            live = []
        return live or list(self.outputs.subnet_ids)

    def route_table(self, subnet: Mapping[str, Any]) -> dict[str, Any] | None:
        """The subnet's own route table, or its VPC's main one (what an unassociated subnet uses)."""
        subnet_id, vpc_id = str(subnet["SubnetId"]), str(subnet["VpcId"])

        def read() -> dict[str, Any] | None:
            paginator = self.client("ec2").get_paginator("describe_route_tables")
            for filters in (
                [{"Name": "association.subnet-id", "Values": [subnet_id]}],
                [{"Name": "vpc-id", "Values": [vpc_id]}, {"Name": "association.main", "Values": ["true"]}],
            ):
                tables = [t for page in paginator.paginate(Filters=filters) for t in page["RouteTables"]]
                if tables:
                    return dict(tables[0])
            return None

        result: dict[str, Any] | None = self._cached(("rt", subnet_id), read)
        return result

    def security_group(self, group_id: str) -> dict[str, Any]:
        def read() -> dict[str, Any]:
            try:
                groups = self.client("ec2").describe_security_groups(GroupIds=[group_id])["SecurityGroups"]
            except ClientError as exc:
                if "NotFound" in error_code(exc):
                    raise Missing(f"security group {group_id}") from exc
                raise
            if not groups:
                raise Missing(f"security group {group_id}")
            return dict(groups[0])

        result: dict[str, Any] = self._cached(("sg", group_id), read)
        return result

    def default_security_group(self, vpc_id: str) -> dict[str, Any]:
        def read() -> dict[str, Any]:
            groups = self.client("ec2").describe_security_groups(
                Filters=[{"Name": "vpc-id", "Values": [vpc_id]}, {"Name": "group-name", "Values": ["default"]}]
            )["SecurityGroups"]
            if not groups:
                raise Missing(f"default security group of {vpc_id}")
            return dict(groups[0])

        result: dict[str, Any] = self._cached(("default-sg", vpc_id), read)
        return result

    def instance_facts(self, name: str) -> tuple[InstanceFacts | None, str]:
        """Facts of an instance type and where they came from: the endpoint's
        DescribeInstanceTypes where it has one, else the kit's catalog."""

        def read() -> tuple[InstanceFacts | None, str]:
            try:
                found = self.client("ec2").describe_instance_types(InstanceTypes=[name])["InstanceTypes"]
                if found:
                    return facts_from_describe(found[0]), "ec2:DescribeInstanceTypes"
            except (ClientError, ResponseParserError, NotImplementedError) as exc:
                if not (is_unsupported(exc) or (isinstance(exc, ClientError) and "InvalidInstanceType" in str(exc))):
                    raise
            return self.catalog.get(name), "the kit's catalog"

        result: tuple[InstanceFacts | None, str] = self._cached(("type", name), read)
        return result

    def queue_facts(self, q: QueueOutputs) -> InstanceFacts:
        """Facts of the type the CE launches (live), else the stack's."""
        try:
            types = list(self.compute_resources(q).get("instanceTypes") or [])
        except Missing:
            types = []
        name = types[0] if len(types) == 1 else q.instance_type
        facts, _ = self.instance_facts(name)
        if facts is None:
            raise Missing(f"instance-type facts for {name}")
        return facts

    def timestamp(self) -> datetime:
        return self.now or datetime.now(UTC)


Verdicts = Verdict | list[Verdict]


# --- the stack ------------------------------------------------------------------------------


def check_stack_status(live: Live) -> Verdicts:
    if live.stack is None:
        return Verdict("SKIP", "outputs were given directly; no CloudFormation stack was read")
    status = str(live.stack.get("StackStatus", "?"))
    reason = live.stack.get("StackStatusReason")
    detail = status + (f" ({reason})" if reason else "")
    if status.endswith("_IN_PROGRESS"):
        return Verdict("WARN", detail, "wait for CloudFormation to finish, then run doctor again")
    if status == "UPDATE_ROLLBACK_COMPLETE":
        return Verdict(
            "WARN",
            f"{detail}: the last update failed and was rolled back; the stack runs the previous template",
            f"read the stack's events (aws cloudformation describe-stack-events --stack-name {live.stack_name}), "
            "fix the cause, then cdk deploy",
        )
    if "ROLLBACK" in status or status.endswith("_FAILED"):
        return Verdict(
            "FAIL",
            detail,
            f"read the stack's events (aws cloudformation describe-stack-events --stack-name {live.stack_name}), "
            "fix the cause, then cdk deploy",
        )
    return Verdict("PASS", detail)


# --- security groups ------------------------------------------------------------------------


def _all_traffic(perm: Mapping[str, Any]) -> bool:
    return str(perm.get("IpProtocol")) == "-1"


def self_rules(group: Mapping[str, Any]) -> tuple[bool, bool]:
    """(all traffic in from itself, all traffic out to itself). An all-traffic egress to
    0.0.0.0/0 covers the outbound half (aws-facts.md, EFA)."""
    gid = group["GroupId"]
    ingress = any(
        _all_traffic(p) and any(pair.get("GroupId") == gid for pair in p.get("UserIdGroupPairs") or [])
        for p in group.get("IpPermissions") or []
    )
    egress = any(
        _all_traffic(p)
        and (
            any(pair.get("GroupId") == gid for pair in p.get("UserIdGroupPairs") or [])
            or any(r.get("CidrIp") == ANYWHERE_V4 for r in p.get("IpRanges") or [])
        )
        for p in group.get("IpPermissionsEgress") or []
    )
    return ingress, egress


def _self_rule_verdict(group: Mapping[str, Any], why: str) -> Verdict:
    gid = group["GroupId"]
    ingress, egress = self_rules(group)
    if ingress and egress:
        return Verdict("PASS", f"{gid}: all traffic in from and out to itself")
    missing = [half for half, ok in (("inbound from itself", ingress), ("outbound to itself", egress)) if not ok]
    pairs = f"IpProtocol=-1,UserIdGroupPairs=[{{GroupId={gid}}}]"
    commands = []
    if not ingress:
        commands.append(f"aws ec2 authorize-security-group-ingress --group-id {gid} --ip-permissions '{pairs}'")
    if not egress:
        commands.append(f"aws ec2 authorize-security-group-egress --group-id {gid} --ip-permissions '{pairs}'")
    return Verdict("FAIL", f"{gid} lacks all-traffic {' and '.join(missing)}: {why}", "; ".join(commands))


def check_efa_security_group(live: Live) -> Verdicts:
    try:
        group = live.security_group(live.outputs.security_group_id)
    except Missing as exc:
        return Verdict("FAIL", f"{exc.what} not found", f"cdk deploy {live.stack_name} recreates it")
    # aws-facts.md, EFA: ALL traffic inbound from itself AND outbound to itself.
    return _self_rule_verdict(group, "EFA and NCCL traffic between nodes is dropped")


def check_default_security_group(live: Live) -> Verdicts:
    # aws-facts.md, MNP: task ENIs use the VPC's default group when the CE names none,
    # which is always so with an EFA launch template.
    group = live.default_security_group(live.outputs.vpc_id)
    return _self_rule_verdict(group, "MNP task ENIs use this group, so the nodes of a job cannot reach each other")


def check_vpc_dns(live: Live) -> Verdicts:
    ec2 = live.client("ec2")
    vpc_id = live.outputs.vpc_id
    try:
        support = ec2.describe_vpc_attribute(VpcId=vpc_id, Attribute="enableDnsSupport")
        hostnames = ec2.describe_vpc_attribute(VpcId=vpc_id, Attribute="enableDnsHostnames")
    except ClientError as exc:
        if "NotFound" in error_code(exc):
            return Verdict("FAIL", f"VPC {vpc_id} not found", f"cdk deploy {live.stack_name}")
        raise
    off = [
        name
        for name, answer, key in (
            ("enableDnsSupport", support, "EnableDnsSupport"),
            ("enableDnsHostnames", hostnames, "EnableDnsHostnames"),
        )
        if not as_bool((answer.get(key) or {}).get("Value"))
    ]
    if not off:
        return Verdict("PASS", f"{vpc_id}: DNS support and DNS hostnames on")
    fix = "; ".join(
        f"aws ec2 modify-vpc-attribute --vpc-id {vpc_id} --{DNS_FLAGS[name]} '{{\"Value\":true}}'" for name in off
    )
    return Verdict("FAIL", f"{vpc_id}: {' and '.join(off)} off: nodes cannot resolve each other or AWS endpoints", fix)


# --- Metaflow -------------------------------------------------------------------------------


def metaflow_profile_path(env: Mapping[str, str], profile: str) -> Path:
    """Where Metaflow reads a profile: $METAFLOW_HOME (default ~/.metaflowconfig), file
    config_<profile>.json, or config.json for the unnamed profile (aws-facts.md, Metaflow)."""
    home = Path(env.get("METAFLOW_HOME") or "~/.metaflowconfig").expanduser()
    return home / (f"config_{profile}.json" if profile else "config.json")


def read_metaflow_profile(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(config, None), (None, None) when absent, or (None, what is wrong with it)."""
    if not path.is_file():
        return None, None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"{path} is not readable JSON ({str(exc).splitlines()[0]})"
    if not isinstance(raw, dict):
        return None, f"{path} holds a JSON {type(raw).__name__}, not an object of METAFLOW_* keys"
    return raw, None


def efa_keys(config: Mapping[str, Any]) -> list[str]:
    return sorted(k for k in config if EFA_KEY_RE.search(str(k)))


def _profile_name(live: Live) -> str:
    return live.outputs.metaflow_profile if live.metaflow_profile is None else live.metaflow_profile


def _metaflow_queue(live: Live, config: Mapping[str, Any]) -> QueueOutputs | None:
    named = str(config.get(QUEUE_KEY) or "")
    return next((q for q in live.outputs.queues if named in (q.job_queue_name, q.job_queue_arn)), None)


def check_metaflow_profile(live: Live) -> Verdicts:
    profile = _profile_name(live)
    path = metaflow_profile_path(live.env, profile)
    write = f"python -m kit metaflow-config --stack {live.stack_name}"
    config, problem = read_metaflow_profile(path)
    if problem:
        return Verdict("FAIL", problem, f"rewrite it: {write}")
    if config is None:
        return Verdict("SKIP", f"no Metaflow profile {profile!r} at {path}", f"{write} writes it")
    names = ", ".join(q.job_queue_name for q in live.outputs.queues)
    first = live.outputs.queues[0].job_queue_name if live.outputs.queues else "<queue>"
    if QUEUE_KEY not in config:
        return Verdict(
            "FAIL",
            f"{path} has no {QUEUE_KEY}: Metaflow's @batch steps go to no queue of this stack",
            f"set {QUEUE_KEY} to {first} in {path} ({write})",
        )
    queue = _metaflow_queue(live, config)
    if queue is None:
        return Verdict(
            "FAIL",
            f"{path}: {QUEUE_KEY}={config[QUEUE_KEY]!r} is not a queue of {live.stack_name} ({names})",
            f"set {QUEUE_KEY} to {first} in {path} ({write})",
        )
    return Verdict("PASS", f"{path}: {QUEUE_KEY}={queue.job_queue_name} (queue {queue.name})")


def check_metaflow_efa(live: Live) -> Verdicts:
    profile = _profile_name(live)
    path = metaflow_profile_path(live.env, profile)
    config, problem = read_metaflow_profile(path)
    queue = _metaflow_queue(live, config) if config else None
    target = queue or (live.outputs.queues[0] if live.outputs.queues else None)
    if target is None:
        return Verdict("SKIP", "the stack has no queues")
    decorator = f"@batch(efa={target.efa_interfaces}, ...) on the @parallel step (queue {target.name})"
    if config is None:
        why = problem or f"no Metaflow profile {profile!r} at {path}"
        return Verdict("SKIP", f"{why}; the efa value belongs on the decorator", f"use {decorator}")
    keys = efa_keys(config)
    if not keys:
        return Verdict("SKIP", f"{path} has no efa key: the efa value belongs on the decorator", f"use {decorator}")
    # Metaflow adds exactly N uverbs devices for @batch(efa=N): N must equal the EFA
    # interfaces of the launch template (aws-facts.md, EFA).
    wrong = [(k, config[k]) for k in keys if as_int(config[k], -1) != target.efa_interfaces]
    if not wrong:
        return Verdict("PASS", f"{path}: {keys[0]}={target.efa_interfaces} matches queue {target.name}")
    key, value = wrong[0]
    return Verdict(
        "FAIL",
        f"{path}: {key}={value!r} but queue {target.name}'s launch template has {target.efa_interfaces} EFA "
        "interfaces; Metaflow exposes that many uverbs devices",
        f"set {key} to {target.efa_interfaces} in {path} (and use {decorator})",
    )


# --- the compute environment ----------------------------------------------------------------


def _ce_name(live: Live, q: QueueOutputs) -> str:
    try:
        return str(live.compute_environment(q.compute_environment_arn).get("computeEnvironmentName"))
    except Missing:
        return short_id(q.compute_environment_arn)


def _update_ce(live: Live, q: QueueOutputs, resources: str) -> str:
    ce = _ce_name(live, q)
    return f"aws batch update-compute-environment --compute-environment {ce} --compute-resources {resources}"


def check_ce_status(live: Live, q: QueueOutputs) -> Verdicts:
    try:
        ce = live.compute_environment(q.compute_environment_arn)
    except Missing as exc:
        return Verdict("FAIL", f"{exc.what} not found", f"cdk deploy {live.stack_name} recreates it")
    status, reason = str(ce.get("status", "?")), ce.get("statusReason") or ""
    detail = f"{ce.get('computeEnvironmentName')}: {status}" + (f" ({reason})" if reason else "")
    if status == "VALID":
        return Verdict("PASS", detail)
    if status in ("CREATING", "UPDATING"):
        return Verdict("WARN", detail, "wait until it is VALID, then run doctor again")
    return Verdict(
        "FAIL", detail, f"fix what the reason names, then cdk deploy {live.stack_name} (or update the CE in place)"
    )


def check_ce_state(live: Live, q: QueueOutputs) -> Verdicts:
    ce = live.compute_environment(q.compute_environment_arn)
    state = str(ce.get("state", "?"))
    if state == "ENABLED":
        return Verdict("PASS", f"{ce.get('computeEnvironmentName')}: ENABLED")
    return Verdict(
        "FAIL",
        f"{ce.get('computeEnvironmentName')}: {state}: Batch launches no instances and jobs wait in RUNNABLE",
        f"aws batch update-compute-environment --compute-environment {ce.get('computeEnvironmentName')} "
        "--state ENABLED",
    )


def check_ce_type(live: Live, q: QueueOutputs) -> Verdicts:
    ce = live.compute_environment(q.compute_environment_arn)
    kind, resources = str(ce.get("type", "?")), live.compute_resources(q)
    ec2_type = str(resources.get("type", "?"))
    # aws-facts.md, MNP: only MANAGED compute environments of type EC2 (not SPOT/FARGATE).
    if kind == "MANAGED" and ec2_type == "EC2":
        return Verdict("PASS", "MANAGED, compute type EC2")
    return Verdict(
        "FAIL",
        f"{kind}, compute type {ec2_type}: multi-node parallel jobs run only on MANAGED EC2 environments",
        f"the type cannot change in place: redeploy the kit's stack (cdk deploy {live.stack_name})",
    )


def check_ce_instance_type(live: Live, q: QueueOutputs) -> Verdicts:
    types = [str(t) for t in live.compute_resources(q).get("instanceTypes") or []]
    fix = _update_ce(live, q, f"instanceTypes={q.instance_type}")
    # aws-facts.md, MNP: every node is the same type: exactly one, never "optimal" or a family.
    if len(types) != 1 or "." not in types[0]:
        return Verdict(
            "FAIL",
            f"instance types {types or '(none)'}: all nodes of a multi-node job must be one type, so the CE "
            "must list exactly one (not 'optimal', not a family)",
            fix,
        )
    name = types[0]
    facts, source = live.instance_facts(name)
    if facts is None:
        return Verdict("WARN", f"{name} is unknown to {source}; EFA and cluster placement unchecked", fix)
    problems = []
    if not facts.efa_supported or not efa_cards(facts.network_cards):
        problems.append("does not support EFA")
    if not facts.supports_cluster_placement:
        problems.append("cannot go in a cluster placement group")
    if problems:
        return Verdict("FAIL", f"{name} {' and '.join(problems)} (per {source})", fix)
    note = "" if name == q.instance_type else f" (the stack deployed {q.instance_type})"
    return Verdict("PASS", f"{name}: EFA and cluster placement supported (per {source}){note}")


def check_ce_max_vcpus(live: Live, q: QueueOutputs) -> Verdicts:
    resources = live.compute_resources(q)
    facts = live.queue_facts(q)
    max_vcpus = as_int(resources.get("maxvCpus"))
    need = q.max_nodes * facts.vcpus
    # aws-facts.md, MNP: a job stays RUNNABLE forever when maxvCpus < nodes x vCPUs.
    if max_vcpus >= need:
        return Verdict("PASS", f"maxvCpus {max_vcpus} >= maxNodes {q.max_nodes} x {facts.vcpus} vCPUs = {need}")
    fits = max_vcpus // facts.vcpus if facts.vcpus else 0
    return Verdict(
        "FAIL",
        f"maxvCpus {max_vcpus} < maxNodes {q.max_nodes} x {facts.vcpus} vCPUs = {need}: only {plural(fits, 'node')} "
        f"of {facts.name} fit, larger jobs stay RUNNABLE forever",
        _update_ce(live, q, f"maxvCpus={need}"),
    )


# --- the launch template --------------------------------------------------------------------


def check_launch_template_version(live: Live, q: QueueOutputs) -> Verdicts:
    try:
        use = live.template_use(q)
    except Missing as exc:
        return Verdict(
            "FAIL",
            f"{exc.what} not found: EFA interfaces, IMDSv2 and volume encryption come from it",
            f"cdk deploy {live.stack_name}",
        )
    pin = _update_ce(live, q, f"'launchTemplate={{launchTemplateId={use.template_id},version={use.latest}}}'")
    drift = "" if use.template_id == q.launch_template_id else f" (the stack created {q.launch_template_id})"
    where = f"{use.template_id}{drift}"
    # aws-facts.md, AMIs/launch templates: a CE keeps the version it was created with;
    # name the latest version explicitly (aws/aws-cdk#28137).
    if use.named_version not in ("$Latest", "$Default"):
        if use.version == use.latest:
            return Verdict("PASS", f"{where}: the CE uses version {use.version}, the latest")
        return Verdict(
            "FAIL",
            f"{where}: the CE uses version {use.version} but the latest is {use.latest}: new instances start "
            "from the older version",
            pin,
        )
    if use.latest == 1:
        return Verdict("PASS", f"{where}: the CE names {use.named_version} and the template has one version")
    if use.named_version == "$Default" and use.default != use.latest:
        return Verdict(
            "FAIL",
            f"{where}: the CE names $Default (version {use.default}) but the latest is {use.latest}",
            pin,
        )
    return Verdict(
        "WARN",
        f"{where}: the CE names {use.named_version}, which Batch resolves when the CE is created or updated; "
        f"instances may still start from a version older than {use.latest}",
        pin,
    )


def check_efa_interfaces(live: Live, q: QueueOutputs) -> Verdicts:
    use = live.template_use(q)
    facts = live.queue_facts(q)
    slots = use.slots
    v = f"{use.template_id} v{use.version}"
    redeploy = f"cdk deploy {live.stack_name} restores the kit's layout"
    if not slots:
        return Verdict("FAIL", f"{v} defines no network interfaces, so no EFA", redeploy)
    pairs = [(s.network_card_index, s.device_index) for s in slots]
    dupes = sorted({p for p in pairs if pairs.count(p) > 1})
    if dupes:
        return Verdict("FAIL", f"{v}: (card, device) pairs used twice: {dupes}; EC2 rejects the launch", redeploy)
    primary = next((s for s in slots if (s.network_card_index, s.device_index) == (0, 0)), None)
    if primary is None or primary.interface_type == "efa-only":
        return Verdict("FAIL", f"{v}: card 0/device 0 must be the primary ENA or efa interface", redeploy)
    bad_groups = [
        s
        for s, ni in zip(slots, use.data.get("NetworkInterfaces") or [], strict=False)
        if live.outputs.security_group_id not in (ni.get("Groups") or [])
    ]
    if bad_groups:
        return Verdict(
            "FAIL",
            f"{v}: {', '.join(efa_word(s) for s in bad_groups)} lack the EFA security group "
            f"{live.outputs.security_group_id}",
            redeploy,
        )
    count = efa_device_count(slots)
    supported = len(efa_cards(facts.network_cards))
    if count == 0:
        return Verdict("FAIL", f"{v} has no efa/efa-only interface", redeploy)
    if count > supported:
        return Verdict("FAIL", f"{v}: {count} EFA interfaces but {facts.name} supports {supported}", redeploy)
    expected = set(plan_interfaces(facts.network_cards, count, family=facts.family))
    if set(slots) != expected:
        missing, extra = _first(expected - set(slots)), _first(set(slots) - expected)
        return Verdict(
            "FAIL",
            f"{v}: layout differs from EC2's documented one for {facts.name}: missing {missing}; unexpected {extra}",
            redeploy,
        )
    if count != q.efa_interfaces:
        return Verdict(
            "FAIL",
            f"{v}: {count} EFA interfaces but the stack's EfaInterfaces output (Metaflow's efa value) is "
            f"{q.efa_interfaces}",
            redeploy,
        )
    if count < supported:
        full, got = (
            provisioned_gbps(facts.network_cards, plan_interfaces(facts.network_cards, supported, family=facts.family)),
            provisioned_gbps(facts.network_cards, slots),
        )
        return Verdict(
            "WARN",
            f"{v}: {count} of {supported} EFA interfaces: about {got:g} of {full:g} Gbps",
            'set efaInterfaces to "max" in the config, then cdk deploy',
        )
    return Verdict("PASS", f"{v}: {count} EFA interfaces, one per card, unique (card, device) pairs")


def check_imds(live: Live, q: QueueOutputs) -> Verdicts:
    use = live.template_use(q)
    meta = use.data.get("MetadataOptions") or {}
    v = f"{use.template_id} v{use.version}"
    tokens, hops = str(meta.get("HttpTokens") or "optional"), as_int(meta.get("HttpPutResponseHopLimit"), 1)
    endpoint = str(meta.get("HttpEndpoint") or "enabled")
    # aws-facts.md: IMDSv2 required; containers reach IMDS through a second hop.
    problems = []
    if endpoint != "enabled":
        problems.append(f"HttpEndpoint {endpoint} (the ECS agent needs instance metadata)")
    if tokens != "required":
        problems.append(f"HttpTokens {tokens} (IMDSv1 allowed)")
    if hops < 2:
        problems.append(f"hop limit {hops} (containers need >= 2)")
    if not problems:
        return Verdict("PASS", f"{v}: IMDSv2 required, hop limit {hops}")
    return Verdict(
        "FAIL",
        f"{v}: {'; '.join(problems)}",
        f"cdk deploy {live.stack_name} (the kit's template sets HttpTokens=required, hop limit 2)",
    )


def check_volume_encryption(live: Live, q: QueueOutputs) -> Verdicts:
    use = live.template_use(q)
    v = f"{use.template_id} v{use.version}"
    ebs = [(m.get("DeviceName", "?"), m.get("Ebs") or {}) for m in use.data.get("BlockDeviceMappings") or []]
    ebs = [(dev, e) for dev, e in ebs if e]
    plain = [dev for dev, e in ebs if not as_bool(e.get("Encrypted"))]
    # aws-facts.md: cdk-nag has no rule for Batch launch templates; the kit checks encryption.
    if ebs and not plain:
        return Verdict("PASS", f"{v}: {', '.join(dev for dev, _ in ebs)} encrypted")
    try:
        by_default = as_bool(live.client("ec2").get_ebs_encryption_by_default().get("EbsEncryptionByDefault"))
    except (ClientError, ResponseParserError, NotImplementedError) as exc:
        if not is_unsupported(exc):
            raise
        by_default = False
    what = f"{', '.join(plain)} not encrypted" if plain else "no EBS volume settings (the AMI's defaults apply)"
    if by_default:
        return Verdict("PASS", f"{v}: {what}, but EBS encryption by default is on in this region")
    return Verdict(
        "FAIL", f"{v}: {what}", f"cdk deploy {live.stack_name} (the kit's template encrypts the root volume)"
    )


# --- network --------------------------------------------------------------------------------


def check_subnet_zone(live: Live, q: QueueOutputs) -> Verdicts:
    ids = live.queue_subnet_ids(q)
    if not ids:
        return Verdict("FAIL", "the CE names no subnet and the stack output none", f"cdk deploy {live.stack_name}")
    try:
        subnets = live.subnets(ids)
    except Missing as exc:
        return Verdict("FAIL", f"{exc.what} not found", _update_ce(live, q, "subnets=<private subnets in one AZ>"))
    zones = sorted({str(s["AvailabilityZone"]) for s in subnets})
    foreign = [s["SubnetId"] for s in subnets if s.get("VpcId") != live.outputs.vpc_id]
    keep = [str(s["SubnetId"]) for s in subnets if s["AvailabilityZone"] == live.outputs.availability_zone]
    fix = _update_ce(live, q, f"subnets={','.join(keep) or '<subnets in ' + live.outputs.availability_zone + '>'}")
    if foreign:
        return Verdict("FAIL", f"{', '.join(foreign)} not in the stack's VPC {live.outputs.vpc_id}", fix)
    # aws-facts.md, MNP: a cluster placement group lives in one AZ; so must every subnet.
    if len(zones) > 1:
        by_zone = "; ".join(
            f"{z}: {', '.join(s['SubnetId'] for s in subnets if s['AvailabilityZone'] == z)}" for z in zones
        )
        return Verdict("FAIL", f"subnets span {len(zones)} AZs ({by_zone}); a cluster placement group needs one", fix)
    if zones and zones[0] != live.outputs.availability_zone:
        return Verdict(
            "WARN", f"all subnets in {zones[0]}, but the stack was configured for {live.outputs.availability_zone}"
        )
    return Verdict("PASS", f"{plural(len(subnets), 'subnet')}, all in {zones[0] if zones else '?'}")


def _egress(routes: Iterable[Mapping[str, Any]]) -> tuple[list[str], list[str], list[str]]:
    """(internet gateways on 0.0.0.0/0, private egress targets, VPC-endpoint routes); blackholes skipped."""
    igw, private, endpoints = [], [], []
    for r in routes:
        if r.get("State") == "blackhole":
            continue
        gateway = str(r.get("GatewayId") or "")
        if r.get("DestinationCidrBlock") == ANYWHERE_V4:
            if gateway.startswith("igw-"):
                igw.append(gateway)
            for key in (
                "NatGatewayId",
                "TransitGatewayId",
                "InstanceId",
                "NetworkInterfaceId",
                "VpcPeeringConnectionId",
            ):
                if r.get(key):
                    private.append(str(r[key]))
        elif gateway.startswith("vpce-"):
            endpoints.append(gateway)
    return igw, private, endpoints


def check_subnet_private(live: Live, q: QueueOutputs) -> Verdicts:
    subnets = live.subnets(live.queue_subnet_ids(q))
    public, cut_off, endpoints_only, ok = [], [], [], []
    for s in subnets:
        table = live.route_table(s)
        igw, private, endpoints = _egress((table or {}).get("Routes") or [])
        if igw:
            public.append(f"{s['SubnetId']} (0.0.0.0/0 -> {igw[0]})")
        elif private:
            ok.append(f"{s['SubnetId']} via {private[0]}")
        elif endpoints:
            endpoints_only.append(str(s["SubnetId"]))
        else:
            cut_off.append(str(s["SubnetId"]))
    # aws-facts.md, MNP: awsvpc task ENIs get no public IP: private subnets with a NAT route.
    if public:
        return Verdict(
            "FAIL",
            f"public: {', '.join(public)}; MNP task ENIs get no public IP, so nodes cannot reach ECR or S3",
            "use private subnets whose 0.0.0.0/0 route goes to a NAT gateway (network.subnetIds), then cdk deploy",
        )
    if cut_off:
        return Verdict(
            "FAIL",
            f"{', '.join(cut_off)}: no NAT route and no VPC endpoint route: images and S3 are unreachable",
            "add a 0.0.0.0/0 route to a NAT gateway in the subnets' route table",
        )
    if endpoints_only:
        return Verdict(
            "WARN",
            f"{', '.join(endpoints_only)}: VPC-endpoint routes only, no NAT: ECR, ECS and CloudWatch Logs need "
            "interface endpoints",
            "add a NAT route, or interface endpoints for ecr.api, ecr.dkr, ecs, ecs-agent, ecs-telemetry, logs",
        )
    return Verdict("PASS", f"private with egress: {', '.join(ok)}")


def check_subnet_addresses(live: Live, q: QueueOutputs) -> Verdicts:
    subnets = live.subnets(live.queue_subnet_ids(q))
    facts = live.queue_facts(q)
    try:
        slots: Sequence[InterfaceSlot] = live.template_use(q).slots
        basis = "launch template"
    except Missing:
        slots = ()
    if not slots:
        slots = plan_interfaces(facts.network_cards, q.efa_interfaces, family=facts.family)
        basis = "kit's layout"
    per_node = addresses_per_node(slots)
    try:
        desired = as_int(live.compute_resources(q).get("desiredvCpus"))
    except Missing:
        desired = 0
    # Running nodes already hold their addresses; only the rest still need free ones.
    running = math.ceil(desired / facts.vcpus) if facts.vcpus else 0
    to_come = max(q.max_nodes - running, 0)
    need = to_come * per_node
    free = sum(as_int(s.get("AvailableIpAddressCount")) for s in subnets)
    detail = f"{free} free addresses; {plural(to_come, 'more node')} x {per_node} per node ({basis}) = {need}"
    if free >= need:
        return Verdict("PASS", detail)
    return Verdict(
        "FAIL",
        f"{detail}: a {q.max_nodes}-node job cannot start",
        "free addresses in the subnets, use a larger subnet (network.subnetIds or a new VPC), or lower maxNodes",
    )


def check_placement_group(live: Live, q: QueueOutputs) -> Verdicts:
    name = str(live.compute_resources(q).get("placementGroup") or "")
    # aws-facts.md, EFA: all EFA instances of a job share one cluster placement group.
    if not name:
        return Verdict(
            "FAIL",
            "the CE names no placement group: nodes may land far apart and EFA bandwidth suffers",
            _update_ce(live, q, f"placementGroup={q.placement_group_name}"),
        )
    try:
        groups = live.client("ec2").describe_placement_groups(GroupNames=[name])["PlacementGroups"]
    except ClientError as exc:
        if error_code(exc).startswith("InvalidPlacementGroup"):
            groups = []
        else:
            raise
    if not groups:
        return Verdict("FAIL", f"placement group {name} does not exist", f"cdk deploy {live.stack_name}")
    group = groups[0]
    strategy, state = str(group.get("Strategy", "?")), str(group.get("State", "?"))
    if strategy == "cluster" and state == "available":
        return Verdict("PASS", f"{name}: cluster, available")
    return Verdict(
        "FAIL",
        f"{name}: strategy {strategy}, state {state}; want cluster, available",
        f"cdk deploy {live.stack_name} (the kit creates a cluster group)",
    )


# --- capacity reservations -------------------------------------------------------------------


def reservation_verdict(
    reservation: Mapping[str, Any], *, instance_type: str, zone: str, max_nodes: int, placement_group: str
) -> Verdict:
    """Judge one DescribeCapacityReservations record against the queue (aws-facts.md, Capacity)."""
    rid = str(reservation.get("CapacityReservationId", "?"))
    state = str(reservation.get("State", "?"))
    block = reservation.get("ReservationType") == "capacity-block"
    what = "Capacity Block" if block else "capacity reservation"
    if reservation.get("InstanceType") != instance_type:
        return Verdict(
            "FAIL",
            f"{what} {rid} is for {reservation.get('InstanceType')}, the queue runs {instance_type}",
            "point queues[].capacity at a reservation for this instance type and cdk deploy",
        )
    if reservation.get("AvailabilityZone") != zone:
        return Verdict(
            "FAIL",
            f"{what} {rid} is in {reservation.get('AvailabilityZone')}, the queue's subnets are in {zone}",
            "use a reservation in the stack's availabilityZone (or move the stack) and cdk deploy",
        )
    if state in ("scheduled", "payment-pending", "pending", "assessing"):
        start = reservation.get("StartDate")
        return Verdict(
            "WARN",
            f"{what} {rid} is {state}" + (f" (starts {start})" if start else "") + ": jobs wait in RUNNABLE until then",
            "submit jobs inside the reservation's window",
        )
    if state != "active":
        return Verdict(
            "FAIL",
            f"{what} {rid} is {state}: no instance can launch into it",
            "buy or name a new reservation in queues[].capacity and cdk deploy",
        )
    total = as_int(reservation.get("TotalInstanceCount"))
    available = as_int(reservation.get("AvailableInstanceCount"))
    pg_arn = str(reservation.get("PlacementGroupArn") or "")
    if pg_arn and not pg_arn.endswith(f"/{placement_group}"):
        return Verdict(
            "FAIL",
            f"{what} {rid} belongs to placement group {pg_arn.rsplit('/', 1)[-1]}, the CE uses {placement_group}",
            "a reservation only serves launches into its own cluster placement group: create the reservation in "
            "the kit's group, or point the CE at the reservation's group",
        )
    if total < max_nodes:
        return Verdict(
            "FAIL",
            f"{what} {rid} holds {total} instances, maxNodes is {max_nodes}: a job that size never starts",
            f"lower maxNodes to {total} or extend the reservation",
        )
    detail = f"{what} {rid}: active, {instance_type} in {zone}, {available} of {total} instances free"
    if not pg_arn and not block:
        return Verdict(
            "WARN",
            detail + "; not created in a placement group, so launches into the kit's cluster group may not use it",
            "create the reservation in the kit's cluster placement group (aws ec2 create-capacity-reservation "
            f"--placement-group-arn ...{placement_group})",
        )
    return Verdict("PASS", detail)


def check_capacity_reservation(live: Live, q: QueueOutputs) -> Verdicts:
    use = live.template_use(q)
    target = (use.data.get("CapacityReservationSpecification") or {}).get("CapacityReservationTarget") or {}
    rid, group = target.get("CapacityReservationId"), target.get("CapacityReservationResourceGroupArn")
    if not rid and not group:
        return Verdict("PASS", "no reservation targeted: instances launch On-Demand")
    ec2 = live.client("ec2")
    if group:
        ids = [
            r["Identifier"]["ResourceArn"].rsplit("/", 1)[-1]
            for page in live.client("resource-groups").get_paginator("list_group_resources").paginate(Group=group)
            for r in page.get("Resources", [])
            if r.get("Identifier", {}).get("ResourceType") == "AWS::EC2::CapacityReservation"
        ]
        if not ids:
            return Verdict(
                "FAIL",
                f"reservation group {group} holds no capacity reservation",
                "add reservations to the group or change queues[].capacity",
            )
    else:
        ids = [rid]
    try:
        found = ec2.describe_capacity_reservations(CapacityReservationIds=ids)["CapacityReservations"]
    except ClientError as exc:
        if "NotFound" in error_code(exc) or "Malformed" in error_code(exc):
            found = []
        else:
            raise
    if not found:
        return Verdict(
            "FAIL",
            f"capacity reservation {', '.join(ids)} not found in this account and region",
            "fix queues[].capacity and cdk deploy",
        )
    placement = str(live.compute_resources(q).get("placementGroup") or q.placement_group_name)
    # A group's reservations add up: judge each without the size rule, then the sum.
    verdicts = [
        reservation_verdict(
            r,
            instance_type=q.instance_type,
            zone=live.outputs.availability_zone,
            max_nodes=0 if group else q.max_nodes,
            placement_group=placement,
        )
        for r in found
    ]
    if group:
        total = sum(as_int(r.get("TotalInstanceCount")) for r in found if r.get("State") == "active")
        if total < q.max_nodes:
            verdicts.append(
                Verdict(
                    "FAIL",
                    f"active reservations of {group} hold {total} instances, maxNodes is {q.max_nodes}",
                    f"lower maxNodes to {total} or add reservations to the group",
                )
            )
    return verdicts


# --- the job queue --------------------------------------------------------------------------


def check_queue_state(live: Live, q: QueueOutputs) -> Verdicts:
    try:
        jq = live.job_queue(q.job_queue_arn)
    except Missing as exc:
        return Verdict("FAIL", f"{exc.what} not found", f"cdk deploy {live.stack_name} recreates it")
    name, state, status = jq.get("jobQueueName", q.job_queue_name), jq.get("state", "?"), jq.get("status", "?")
    reason = jq.get("statusReason") or ""
    detail = f"{name}: {state}, {status}" + (f" ({reason})" if reason and status != "VALID" else "")
    if state != "ENABLED":
        return Verdict(
            "FAIL",
            f"{detail}: the queue accepts no new jobs",
            f"aws batch update-job-queue --job-queue {name} --state ENABLED",
        )
    if status in ("CREATING", "UPDATING"):
        return Verdict("WARN", detail, "wait until it is VALID, then run doctor again")
    if status != "VALID":
        return Verdict("FAIL", detail, f"fix what the reason names, then cdk deploy {live.stack_name}")
    return Verdict("PASS", detail)


def check_queue_order(live: Live, q: QueueOutputs) -> Verdicts:
    jq = live.job_queue(q.job_queue_arn)
    order = sorted(jq.get("computeEnvironmentOrder") or [], key=lambda o: as_int(o.get("order")))
    ours = short_id(q.compute_environment_arn)
    names = [short_id(str(o.get("computeEnvironment", ""))) for o in order]
    name = jq.get("jobQueueName", q.job_queue_name)
    fix = (
        f"aws batch update-job-queue --job-queue {name} --compute-environment-order "
        f"order=1,computeEnvironment={q.compute_environment_arn}"
    )
    # Metaflow reads the platform from the queue's first CE (aws-facts.md, Metaflow).
    if names and names[0] == ours:
        others = f"; then {', '.join(names[1:])}" if names[1:] else ""
        return Verdict("PASS", f"{name}: {ours} first{others}")
    detail = f"{name} runs on {', '.join(names) or 'no compute environment'}"
    detail += "; ours is not first" if ours in names else f"; the stack's {ours} is not attached"
    return Verdict("FAIL", detail, fix)


# What Batch's statusReason codes for a RUNNABLE job mean (Batch user guide, "Jobs stuck in a
# RUNNABLE status"): (status, what it means, what to do). {type} is the CE's instance type.
KNOWN_REASONS: dict[str, tuple[Status, str, str]] = {
    "CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY": (
        "WARN",
        "EC2 has no free {type} capacity in the AZ right now",
        "wait, or buy capacity (On-Demand Capacity Reservation or Capacity Block) and target it from the launch "
        "template; the queue cancels such jobs after capacityWaitMinutes",
    ),
    "MISCONFIGURATION:COMPUTE_ENVIRONMENT_MAX_RESOURCE": (
        "FAIL",
        "the job needs more vCPUs than the CE's maxvCpus allows, so it can never start",
        "raise maxNodes (maxvCpus = maxNodes x vCPUs) and cdk deploy, or run fewer nodes (num_parallel)",
    ),
    "MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT": (
        "FAIL",
        "one node asks for more vCPUs, memory or GPUs than a {type} has",
        "lower the step's @batch/@resources cpu, memory or gpu to fit one {type}",
    ),
    "MISCONFIGURATION:SERVICE_ROLE_PERMISSIONS": (
        "FAIL",
        "Batch's service role may not launch the instances",
        "use the service-linked role (omit ServiceRole, as the kit does) or grant the missing permissions",
    ),
    "ACTION_REQUIRED": (
        "FAIL",
        "every compute environment of the queue is INVALID",
        "see the compute environment status check above",
    ),
}


def explain_runnable(
    job: Mapping[str, Any],
    *,
    instance_type: str,
    vcpus_per_node: int,
    max_vcpus: int,
    ce_enabled: bool,
    now: datetime,
) -> Verdict:
    """One RUNNABLE job (a ListJobs JobSummary) in plain words."""
    name = f"{job.get('jobName', '?')} ({job.get('jobId', '?')})"
    created = job.get("createdAt")
    if isinstance(created, int | float):
        minutes = max(int((now.timestamp() * 1000 - created) // 60000), 0)
        name += f", RUNNABLE for {minutes} min" if minutes else ""
    reason = str(job.get("statusReason") or "")
    code = reason.split(" - ", 1)[0].strip()
    nodes = as_int((job.get("nodeProperties") or {}).get("numNodes"), 1)
    if code in KNOWN_REASONS:
        status, meaning, fix = KNOWN_REASONS[code]
        return Verdict(status, f"{name}: {code}: {meaning.format(type=instance_type)}", fix.format(type=instance_type))
    if code.startswith("MISCONFIGURATION:"):
        return Verdict("FAIL", f"{name}: Batch reports a misconfiguration: {reason}", "fix what the reason names")
    if code.startswith("CAPACITY:"):
        return Verdict("WARN", f"{name}: Batch cannot get capacity: {reason}", "wait, or reserve capacity")
    # No code (yet): the classic causes, from what doctor knows of the environment.
    need = nodes * vcpus_per_node
    if vcpus_per_node and need > max_vcpus:
        return Verdict(
            "FAIL",
            f"{name}: needs {nodes} nodes x {vcpus_per_node} vCPUs = {need} but maxvCpus is {max_vcpus}: it stays "
            "RUNNABLE forever",
            f"raise maxNodes to at least {nodes} and cdk deploy, or run fewer nodes",
        )
    if not ce_enabled:
        return Verdict("FAIL", f"{name}: the compute environment is DISABLED", "enable it (see the CE state check)")
    said = f" (Batch says: {reason})" if reason else ""
    return Verdict(
        "WARN",
        f"{name}: waiting for capacity{said}: {nodes} x {instance_type} must all start before the job does; jobs "
        "ahead of it in the queue also hold it back",
        "wait a few minutes; if it persists, check EC2 capacity for the type in the AZ and the CE's Auto Scaling "
        "activity",
    )


def check_runnable_jobs(live: Live, q: QueueOutputs) -> Verdicts:
    paginator = live.client("batch").get_paginator("list_jobs")
    jobs = [
        j for page in paginator.paginate(jobQueue=q.job_queue_arn, jobStatus="RUNNABLE") for j in page["jobSummaryList"]
    ]
    if not jobs:
        return Verdict("PASS", "no job waiting in RUNNABLE")
    try:
        resources = live.compute_resources(q)
        ce_enabled = live.compute_environment(q.compute_environment_arn).get("state") == "ENABLED"
    except Missing:
        resources, ce_enabled = {}, False
    try:
        facts: InstanceFacts | None = live.queue_facts(q)
    except Missing:
        facts = None
    jobs.sort(key=lambda j: as_int(j.get("createdAt")))
    verdicts = [
        explain_runnable(
            j,
            instance_type=facts.name if facts else q.instance_type,
            vcpus_per_node=facts.vcpus if facts else 0,
            max_vcpus=as_int(resources.get("maxvCpus")),
            ce_enabled=ce_enabled,
            now=live.timestamp(),
        )
        for j in jobs[:RUNNABLE_SHOWN]
    ]
    if len(jobs) > RUNNABLE_SHOWN:
        verdicts.append(Verdict("WARN", f"{len(jobs) - RUNNABLE_SHOWN} more RUNNABLE jobs not shown", "see above"))
    return verdicts


# --- the registry and the runner ------------------------------------------------------------


@dataclass(frozen=True)
class StackCheck:
    id: str
    title: str
    run: Callable[[Live], Verdicts]


@dataclass(frozen=True)
class QueueCheck:
    id: str
    title: str
    run: Callable[[Live, QueueOutputs], Verdicts]


STACK_CHECKS: tuple[StackCheck, ...] = (
    StackCheck("stack.status", "CloudFormation stack status", check_stack_status),
    StackCheck("sg.efa-self", "EFA security group: all traffic to/from itself", check_efa_security_group),
    StackCheck("sg.default-self", "VPC default security group self rule (MNP task ENIs)", check_default_security_group),
    StackCheck("vpc.dns", "VPC DNS support and hostnames", check_vpc_dns),
    StackCheck("metaflow.profile", "Metaflow profile points at this stack's queue", check_metaflow_profile),
    StackCheck("metaflow.efa", "Metaflow efa value matches the launch template", check_metaflow_efa),
)

QUEUE_CHECKS: tuple[QueueCheck, ...] = (
    QueueCheck("ce.status", "compute environment status VALID", check_ce_status),
    QueueCheck("ce.state", "compute environment state ENABLED", check_ce_state),
    QueueCheck("ce.type", "compute environment MANAGED / EC2", check_ce_type),
    QueueCheck("ce.instance-type", "one instance type with EFA and cluster placement", check_ce_instance_type),
    QueueCheck("ce.max-vcpus", "maxvCpus >= maxNodes x vCPUs", check_ce_max_vcpus),
    QueueCheck(
        "lt.version", "compute environment uses the latest launch-template version", check_launch_template_version
    ),
    QueueCheck("lt.efa", "EFA interfaces of the launch template", check_efa_interfaces),
    QueueCheck("lt.imds", "IMDSv2 required, hop limit >= 2", check_imds),
    QueueCheck("lt.encryption", "EBS volumes encrypted", check_volume_encryption),
    QueueCheck("subnets.az", "subnets in one Availability Zone", check_subnet_zone),
    QueueCheck("subnets.private", "subnets private with a NAT or endpoint route", check_subnet_private),
    QueueCheck("subnets.addresses", "free IP addresses for maxNodes", check_subnet_addresses),
    QueueCheck("placement-group", "cluster placement group available", check_placement_group),
    QueueCheck("capacity", "capacity reservation active, matching and large enough", check_capacity_reservation),
    QueueCheck("queue.state", "job queue ENABLED and VALID", check_queue_state),
    QueueCheck("queue.order", "our compute environment first in the queue", check_queue_order),
    QueueCheck("queue.runnable", "jobs waiting in RUNNABLE", check_runnable_jobs),
)


def guarded(call: Callable[[], Verdicts]) -> list[Verdict]:
    """Run one check; what the endpoint cannot answer becomes a SKIP or WARN, never a crash."""
    try:
        result = call()
    except Missing as exc:
        return [Verdict("SKIP", f"skipped: {exc.what} not found (reported by its own check)")]
    except (ClientError, ResponseParserError, NotImplementedError) as exc:
        if is_unsupported(exc):
            return [Verdict("SKIP", f"the endpoint does not implement this API ({describe_error(exc)})")]
        if isinstance(exc, ClientError) and error_code(exc) in DENIED_CODES:
            return [Verdict("WARN", f"not allowed: {describe_error(exc)}", "grant the caller this read permission")]
        return [
            Verdict("WARN", f"could not check: {describe_error(exc)}", "run doctor again; if it persists, look by hand")
        ]
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        # An answer shaped unlike AWS's (an emulator, an old API version): say so, do not crash.
        return [
            Verdict(
                "WARN",
                f"could not read the endpoint's answer ({type(exc).__name__}: {exc})",
                "run doctor again; if it persists, look by hand",
            )
        ]
    return result if isinstance(result, list) else [result]


def run_checks(
    live: Live,
    queues: Sequence[QueueOutputs] | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[CheckResult]:
    """Every stack-wide check, then every queue check for each of `queues` (default: all)."""
    results: list[CheckResult] = []
    for sc in STACK_CHECKS:
        if progress:
            progress(sc.title)
        results += [
            CheckResult(sc.id, sc.title, None, v.status, v.detail, v.fix) for v in guarded(partial(sc.run, live))
        ]
    for q in live.outputs.queues if queues is None else queues:
        for qc in QUEUE_CHECKS:
            if progress:
                progress(f"{q.name}: {qc.title}")
            results += [
                CheckResult(qc.id, qc.title, q.name, v.status, v.detail, v.fix)
                for v in guarded(partial(qc.run, live, q))
            ]
    return results
