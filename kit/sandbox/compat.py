"""Compatibility layer that closes the gaps of the moto emulator the kit's stack runs into.

Written for, and checked against, moto 5.2.5 only (`MOTO_VERSION`): `apply()` refuses to run on any
other version, because every patch replaces or wraps a moto function whose body it knows. The
sandbox server (kit/sandbox/server.py) calls `apply()` before it serves; in-process tests call
`apply()` and later `restore()`. Each patch is the narrowest change that makes moto behave like
AWS for one gap (found by deploying the kit's template with the real cdk CLI) and has a test in
tests/unit/test_sandbox_compat.py. All changes go through `_install`, so `restore()` can undo them.

Gaps (aws-facts.md, "The moto emulator") and what each patch does:

* ``placement_groups``: EC2 has no Create/Describe/DeletePlacementGroup and CloudFormation skips
  AWS::EC2::PlacementGroup (a log line only). Adds the three calls with AWS's error codes
  (InvalidPlacementGroup.Duplicate / .Unknown, InvalidParameterValue), tags and filters, and the
  resource type (Ref = generated name, Fn::GetAtt GroupName, replacement on change, deletion).
* ``security_group_egress_resource``: CloudFormation skips AWS::EC2::SecurityGroupEgress, so the
  EFA self-egress rule never exists. Adds the resource type.
* ``security_group_inline_rules``: inline SecurityGroupIngress of AWS::EC2::SecurityGroup loses
  CidrIpv6 and descriptions (an IPv6 SSH source vanishes) and fails without FromPort (protocol -1);
  inline SecurityGroupEgress is ignored (the default allow-all stays); an update replaces the group
  (new id). Applies the rules as AWS does and changes rules and tags in place.
* ``default_security_group_rules``: a new VPC's default group has no inbound rule; in AWS it allows
  all traffic from its members. MNP task ENIs use that group when the CE names none (always so with
  an EFA launch template), so the kit checks the rule; the patch adds it like AWS.
* ``vpc_dns_attributes``: AWS::EC2::VPC ignores EnableDnsSupport and EnableDnsHostnames (a new
  VPC keeps hostnames off), so `doctor` rightly failed a fresh sandbox deploy. The patch applies
  both properties on create, as AWS does.
* ``network_resource_deletion``: routes, route tables, subnet associations, internet gateways and
  their attachments, NAT gateways, EIPs, VPC endpoints, flow logs and ingress rules have no
  CloudFormation delete, so `cdk destroy` left them and then failed on the VPC. Adds the deletes
  (a NAT gateway also frees its ENI, as in AWS). AWS::EC2::SubnetRouteTableAssociation becomes a
  real association (moto only recorded it aside; the subnet kept the main route table).
* ``batch_optional_service_role``: CreateComputeEnvironment insists on serviceRole; AWS then uses
  the service-linked role AWSServiceRoleForBatch (which in-place CE updates need). The patch creates
  that role like AWS does and records its ARN.
* ``batch_security_groups_from_launch_template``: moto requires securityGroupIds (KeyError without).
  AWS takes the groups from the launch template's interfaces, and rejects a CE that sends both
  ("Either compute environment Security Groups or Network Interfaces in Launch template are
  exclusively allowed", aws/aws-cdk#21577). The patch implements both rules.
* ``batch_update_compute_resources``: UpdateComputeEnvironment ignores computeResources (a TODO in
  moto), so a new launch-template version never reaches the CE. The patch applies them.
* ``batch_compute_environment_resource``: AWS::Batch::ComputeEnvironment requires ServiceRole,
  rejects a lower-case Type ("managed", as the CDK L2 writes it; AWS takes either case), drops
  Tags, has no Fn::GetAtt ComputeEnvironmentArn, and can be neither updated nor deleted by a
  stack. The patch fixes each: in-place updates, replacement only when ReplaceComputeEnvironment is
  not false (and more than vCPUs change) or the type or name changes.
* ``batch_job_queue_resource``: AWS::Batch::JobQueue has no Fn::GetAtt JobQueueArn, drops Tags,
  SchedulingPolicyArn and JobStateTimeLimitActions, and can be neither updated nor deleted. The
  patch adds all of it; DescribeJobQueues then reports jobStateTimeLimitActions like AWS.
* ``batch_job_definition_node_properties``: DescribeJobDefinitions leaves out the nodeProperties of
  a multi-node job definition (Metaflow registers one per @parallel step), although moto stores
  them and runs jobs from them. The patch returns them, as AWS does.
* ``change_sets_per_stack``: moto finds change sets by name across all stacks, so the cdk CLI's
  "cdk-deploy-change-set" of one stack is found (deleted, executed) for another, and DeleteChangeSet
  of an unknown name fails with HTTP 500. The patch scopes names to the stack, answers
  ChangeSetNotFound like AWS, lets DeleteChangeSet of an unknown name succeed while the stack exists
  (AWS does; the cdk CLI relies on it) and filters ListChangeSets by stack.
* ``change_set_execution``: after ExecuteChangeSet the stack keeps its old template and (empty)
  outputs, so DescribeStacks shows no Outputs and a re-deploy is never "no changes"; a resource
  that fails makes moto answer HTTP 500 with the stack left "complete" (the SDK retries and
  `cdk deploy` reports success). The patch re-reads template and outputs, reports a failure the
  AWS way (call succeeds; stack ROLLBACK_COMPLETE after deleting what was created, or
  UPDATE_ROLLBACK_COMPLETE, with the error as reason) and removes the stack's change sets.
* ``delete_stack_failures``: when a resource cannot be deleted, moto answers HTTP 500 and forgets
  the stack. The patch keeps it in DELETE_FAILED with the error as reason, as AWS does.
* ``delete_in_dependency_order``: moto deletes a stack's resources in set order, retrying failures;
  resources whose delete silently does nothing in the wrong order (a gateway endpoint after its
  route table) are left behind. The patch deletes in reverse dependency order, as CloudFormation,
  and keeps moto's lazy resource map from re-creating resources already deleted.
* ``previous_parameter_values``: for UsePreviousValue (the cdk CLI sends it on every update) moto
  passes the previous *resolved* value; for an SSM-typed parameter such as the CDK's
  BootstrapVersion that is the SSM value, which moto then looks up as a parameter name and fails.
  AWS reuses the value as given (the parameter name); the patch does the same.
* ``update_dependents``: on an update moto only touches resources whose template text changed.
  CloudFormation also updates resources whose resolved properties changed because something they
  reference changed (a CE naming its launch template's LatestVersionNumber). The patch re-resolves
  the untouched resources after the update and updates those whose properties differ.

Limits that remain: an update that fails is not rolled back; Batch launches no EC2 capacity for
MNP jobs (moto's batch_simple backend marks submitted jobs SUCCEEDED); AWS::CDK::Metadata and the
bootstrap stack's AWS::S3::BucketPolicy are skipped by moto (no effect on the kit).
"""

from __future__ import annotations

import copy
import gc
import importlib.metadata
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MOTO_VERSION = "5.2.5"

# Batch's service-linked role; AWS creates it on first use (Batch user guide, "Using service-linked roles").
BATCH_SERVICE_LINKED_ROLE = "AWSServiceRoleForBatch"
BATCH_SERVICE = "batch.amazonaws.com"
EXCLUSIVE_GROUPS_MESSAGE = (
    "Either compute environment Security Groups or Network Interfaces in Launch template are exclusively allowed"
)
PLACEMENT_STRATEGIES = ("cluster", "spread", "partition")
# The outbound rules AWS (and moto) give a new VPC security group.
DEFAULT_EGRESS = ({"CidrIp": "0.0.0.0/0"}, {"CidrIpv6": "::/0"})
# Compute-resource fields CloudFormation updates in place even when ReplaceComputeEnvironment is true.
CE_ALWAYS_IN_PLACE = frozenset({"minvCpus", "maxvCpus", "desiredvCpus"})

logger = logging.getLogger(__name__)


class CompatError(RuntimeError):
    """The compatibility layer cannot be applied (wrong moto version)."""


def installed_moto_version() -> str:
    try:
        return importlib.metadata.version("moto")
    except importlib.metadata.PackageNotFoundError:
        raise CompatError(
            f"moto is not installed; the sandbox needs moto[server]=={MOTO_VERSION} "
            "(pip install -r requirements-dev.txt)"
        ) from None


def check_moto_version(found: str | None = None) -> None:
    found = found or installed_moto_version()
    if found != MOTO_VERSION:
        raise CompatError(
            f"the sandbox's moto compatibility layer (kit/sandbox/compat.py) is written for moto {MOTO_VERSION}, "
            f"but moto {found} is installed; install moto[server]=={MOTO_VERSION} (requirements-dev.txt), "
            "or re-check every patch against the new moto and then update MOTO_VERSION"
        )


@dataclass(frozen=True)
class Patch:
    name: str
    apply: Callable[[], None]


_applied: set[str] = set()


def _ec2(account_id: str, region_name: str) -> Any:
    from moto.ec2.models import ec2_backends

    return ec2_backends[account_id][region_name]


def _batch(account_id: str, region_name: str) -> Any:
    from moto.batch.models import batch_backends

    return batch_backends[account_id][region_name]


_MISSING = object()
# (class, attribute, what its own __dict__ held before) for every change, so restore() can undo.
_undo: list[tuple[Any, str, Any]] = []


def _install(target: Any, name: str, value: Any) -> None:
    """Add or replace one attribute of a moto class: the only way this module changes moto."""
    _undo.append((target, name, target.__dict__.get(name, _MISSING)))
    setattr(target, name, value)


def _install_get_att(target: Any, cfn_attribute: str, python_attribute: str) -> None:
    """Give a moto CloudFormation model the one Fn::GetAtt attribute it lacks."""
    from moto.cloudformation.exceptions import UnformattedGetAttTemplateException

    def has_cfn_attr(cls: Any, attr: str) -> bool:
        return attr == cfn_attribute

    def get_cfn_attribute(self: Any, attribute_name: str) -> str:
        if attribute_name == cfn_attribute:
            return str(getattr(self, python_attribute))
        raise UnformattedGetAttTemplateException()

    _install(target, "has_cfn_attr", classmethod(has_cfn_attr))
    _install(target, "get_cfn_attribute", get_cfn_attribute)


# --------------------------------------------------------------------------------------------
# EC2 placement groups (API and CloudFormation)
# --------------------------------------------------------------------------------------------


def _placement_groups(backend: Any) -> dict[str, Any]:
    """Per EC2 backend (account + region); kept in the backend's own dict so that a moto reset,
    which re-creates each backend's __dict__, also drops the groups."""
    groups: dict[str, Any] = backend.__dict__.setdefault("_kit_placement_groups", {})
    return groups


def _ec2_error(code: str, message: str) -> Exception:
    from moto.ec2.exceptions import EC2ClientError

    return EC2ClientError(code, message)


def _make_placement_group_class() -> type:
    from moto.core.common_models import CloudFormationModel
    from moto.ec2.utils import random_id

    class PlacementGroup(CloudFormationModel):
        def __init__(
            self,
            backend: Any,
            name: str,
            strategy: str,
            partition_count: int | None,
            spread_level: str | None,
            tags: dict[str, str],
        ) -> None:
            self.ec2_backend = backend
            self.id = random_id("pg")
            self.name = name
            self.strategy = strategy
            self.partition_count = partition_count
            self.spread_level = spread_level
            self.state = "available"
            self.arn = f"arn:{backend.partition}:ec2:{backend.region_name}:{backend.account_id}:placement-group/{name}"
            if tags:
                backend.create_tags([self.id], tags)

        def tags(self) -> dict[str, str]:
            return {t["key"]: t["value"] for t in self.ec2_backend.describe_tags(filters={"resource-id": [self.id]})}

        def describe(self) -> dict[str, Any]:
            out: dict[str, Any] = {
                "GroupName": self.name,
                "State": self.state,
                "Strategy": self.strategy,
                "GroupId": self.id,
                "GroupArn": self.arn,
                "Tags": [{"Key": k, "Value": v} for k, v in sorted(self.tags().items())],
            }
            if self.partition_count is not None:
                out["PartitionCount"] = self.partition_count
            if self.spread_level is not None:
                out["SpreadLevel"] = self.spread_level
            return out

        def get_filter_value(self, filter_name: str, method_name: str | None = None) -> Any:
            from moto.ec2.exceptions import FilterNotImplementedError

            simple = {
                "group-name": self.name,
                "group-arn": self.arn,
                "state": self.state,
                "strategy": self.strategy,
                "spread-level": self.spread_level,
            }
            if filter_name in simple:
                return simple[filter_name]
            tags = self.tags()
            if filter_name.startswith("tag:"):
                return tags.get(filter_name[4:])
            if filter_name == "tag-key":
                return list(tags)
            raise FilterNotImplementedError(filter_name, "DescribePlacementGroups")

        # CloudFormation -------------------------------------------------------------------
        @property
        def physical_resource_id(self) -> str:
            return self.name

        @staticmethod
        def cloudformation_name_type() -> str:
            return ""  # no name property: CloudFormation generates the group name

        @staticmethod
        def cloudformation_type() -> str:
            return "AWS::EC2::PlacementGroup"

        @classmethod
        def create_from_cloudformation_json(
            cls,
            resource_name: str,
            cloudformation_json: dict[str, Any],
            account_id: str,
            region_name: str,
            **kwargs: Any,
        ) -> Any:
            props = cloudformation_json.get("Properties", {})
            backend = _ec2(account_id, region_name)
            partition_count = props.get("PartitionCount")
            return backend.create_placement_group(
                resource_name,
                props.get("Strategy", ""),
                int(partition_count) if partition_count is not None else None,
                props.get("SpreadLevel"),
                {t["Key"]: t["Value"] for t in props.get("Tags", [])},
            )

        @classmethod
        def update_from_cloudformation_json(
            cls,
            original_resource: Any,
            new_resource_name: str,
            cloudformation_json: dict[str, Any],
            account_id: str,
            region_name: str,
        ) -> Any:
            # Every property of AWS::EC2::PlacementGroup requires replacement.
            new = cls.create_from_cloudformation_json(new_resource_name, cloudformation_json, account_id, region_name)
            original_resource.delete(account_id, region_name)
            return new

        @classmethod
        def delete_from_cloudformation_json(
            cls, resource_name: str, cloudformation_json: dict[str, Any], account_id: str, region_name: str
        ) -> None:
            _ec2(account_id, region_name).delete_placement_group(resource_name)

        def delete(self, account_id: str, region_name: str) -> None:
            _ec2(account_id, region_name).delete_placement_group(self.name)

        def is_created(self) -> bool:
            return True

    _install_get_att(PlacementGroup, "GroupName", "name")
    return PlacementGroup


# moto finds CloudFormation types through CloudFormationModel.__subclasses__(), which holds
# only weak references: the classes made here must stay referenced while applied.
_REGISTERED_MODELS: list[type] = []


def _patch_placement_groups() -> None:
    from moto.core.responses import ActionResult
    from moto.ec2.models import EC2Backend
    from moto.ec2.responses import EC2Response
    from moto.ec2.utils import generic_filter

    # Subclassing CloudFormationModel also makes it the AWS::EC2::PlacementGroup resource.
    group_class = _make_placement_group_class()
    _REGISTERED_MODELS.append(group_class)

    def create_placement_group(
        self: Any,
        name: str,
        strategy: str,
        partition_count: int | None = None,
        spread_level: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> Any:
        groups = _placement_groups(self)
        if not name:
            raise _ec2_error("MissingParameter", "The request must contain the parameter groupName")
        if strategy not in PLACEMENT_STRATEGIES:
            raise _ec2_error(
                "InvalidParameterValue",
                f"Value ({strategy}) for parameter strategy is invalid. "
                f"Valid values are: {', '.join(PLACEMENT_STRATEGIES)}",
            )
        if partition_count is not None and strategy != "partition":
            raise _ec2_error("InvalidParameterCombination", "PartitionCount is only valid with the partition strategy")
        if name in groups:
            raise _ec2_error("InvalidPlacementGroup.Duplicate", f"The Placement Group '{name}' already exists.")
        if strategy == "partition" and partition_count is None:
            partition_count = 2  # AWS's default for the partition strategy
        group = group_class(self, name, strategy, partition_count, spread_level, tags or {})
        groups[name] = group
        return group

    def describe_placement_groups(
        self: Any, names: list[str] | None = None, ids: list[str] | None = None, filters: Any = None
    ) -> list[Any]:
        groups = list(_placement_groups(self).values())
        for name in names or []:
            if name not in _placement_groups(self):
                raise _ec2_error("InvalidPlacementGroup.Unknown", f"The Placement Group '{name}' is unknown.")
        if names:
            groups = [g for g in groups if g.name in names]
        if ids:
            known = {g.id for g in groups}
            for group_id in ids:
                if group_id not in known:
                    raise _ec2_error("InvalidPlacementGroup.Unknown", f"The Placement Group '{group_id}' is unknown.")
            groups = [g for g in groups if g.id in ids]
        return list(generic_filter(filters or {}, groups))

    def delete_placement_group(self: Any, name: str) -> None:
        group = _placement_groups(self).pop(name, None)
        if group is None:
            raise _ec2_error("InvalidPlacementGroup.Unknown", f"The Placement Group '{name}' is unknown.")
        self.delete_tags([group.id], {k: None for k in group.tags()})

    def create_placement_group_action(self: Any) -> Any:
        self.error_on_dryrun()
        count = self._get_param("PartitionCount")
        group = self.ec2_backend.create_placement_group(
            self._get_param("GroupName"),
            self._get_param("Strategy"),
            int(count) if count is not None else None,
            self._get_param("SpreadLevel"),
            self._parse_tag_specification().get("placement-group", {}),
        )
        return ActionResult({"PlacementGroup": group.describe()})

    def describe_placement_groups_action(self: Any) -> Any:
        self.error_on_dryrun()
        groups = self.ec2_backend.describe_placement_groups(
            self._get_param("GroupNames", []), self._get_param("GroupIds", []), self._filters_from_querystring()
        )
        return ActionResult({"PlacementGroups": [g.describe() for g in groups]})

    def delete_placement_group_action(self: Any) -> Any:
        self.error_on_dryrun()
        self.ec2_backend.delete_placement_group(self._get_param("GroupName"))
        return ActionResult({})

    _install(EC2Backend, "create_placement_group", create_placement_group)
    _install(EC2Backend, "describe_placement_groups", describe_placement_groups)
    _install(EC2Backend, "delete_placement_group", delete_placement_group)
    _install(EC2Response, "create_placement_group", create_placement_group_action)
    _install(EC2Response, "describe_placement_groups", describe_placement_groups_action)
    _install(EC2Response, "delete_placement_group", delete_placement_group_action)


# --------------------------------------------------------------------------------------------
# AWS::EC2::SecurityGroupEgress
# --------------------------------------------------------------------------------------------


def _egress_rule_args(props: dict[str, Any]) -> dict[str, Any]:
    description = props.get("Description")
    ip_ranges: list[dict[str, str]] = []
    if props.get("CidrIp"):
        ip_ranges.append({"CidrIp": props["CidrIp"], **({"Description": description} if description else {})})
    if props.get("CidrIpv6"):
        ip_ranges.append({"CidrIpv6": props["CidrIpv6"], **({"Description": description} if description else {})})
    groups = []
    if props.get("DestinationSecurityGroupId"):
        groups.append(
            {"GroupId": props["DestinationSecurityGroupId"], **({"Description": description} if description else {})}
        )
    prefix_lists = []
    if props.get("DestinationPrefixListId"):
        prefix_lists.append({"PrefixListId": props["DestinationPrefixListId"]})
    protocol = str(props["IpProtocol"])
    all_ports = protocol == "-1"
    return {
        "group_name_or_id": props["GroupId"],
        "ip_protocol": protocol,
        "from_port": None if all_ports else props.get("FromPort"),
        "to_port": None if all_ports else props.get("ToPort"),
        "ip_ranges": ip_ranges,
        "source_groups": groups,
        "prefix_list_ids": prefix_lists,
    }


def _inline_rule_args(rule: dict[str, Any], group_id: str, egress: bool) -> dict[str, Any]:
    """Backend arguments for one rule of AWS::EC2::SecurityGroup's SecurityGroupIngress/Egress."""
    peer = "DestinationSecurityGroupId" if egress else "SourceSecurityGroupId"
    prefix = "DestinationPrefixListId" if egress else "SourcePrefixListId"
    args = _egress_rule_args(
        {
            "GroupId": group_id,
            "IpProtocol": rule["IpProtocol"],
            "FromPort": rule.get("FromPort"),
            "ToPort": rule.get("ToPort"),
            "CidrIp": rule.get("CidrIp"),
            "CidrIpv6": rule.get("CidrIpv6"),
            "DestinationSecurityGroupId": rule.get(peer),
            "DestinationPrefixListId": rule.get(prefix),
            "Description": rule.get("Description"),
        }
    )
    return args


def _patch_security_group_inline_rules() -> None:
    from moto.ec2.models.security_groups import SecurityGroup

    original_create = SecurityGroup.create_from_cloudformation_json
    original_update = SecurityGroup.update_from_cloudformation_json
    replacing = ("GroupName", "GroupDescription", "VpcId")

    def without_rules(cloudformation_json: dict[str, Any]) -> dict[str, Any]:
        props = {
            k: v
            for k, v in cloudformation_json["Properties"].items()
            if k not in ("SecurityGroupIngress", "SecurityGroupEgress")
        }
        return {**cloudformation_json, "Properties": props}

    def set_rules(backend: Any, group: Any, old: dict[str, Any] | None, new: dict[str, Any]) -> None:
        for rule in (old or {}).get("SecurityGroupIngress") or []:
            with _suppressed():
                backend.revoke_security_group_ingress(**_inline_rule_args(rule, group.id, egress=False))
        for rule in (old or {}).get("SecurityGroupEgress") or []:
            with _suppressed():
                backend.revoke_security_group_egress(**_inline_rule_args(rule, group.id, egress=True))
        # Without SecurityGroupEgress a VPC group allows all outbound traffic; with it, only
        # the rules given (AWS removes the default rule).
        if new.get("SecurityGroupEgress"):
            group.egress_rules = [
                r for r in group.egress_rules if not (r.ip_protocol == "-1" and r.ip_range in DEFAULT_EGRESS)
            ]
        elif old and old.get("SecurityGroupEgress"):
            with _suppressed():
                backend.authorize_security_group_egress(group.id, "-1", None, None, [{"CidrIp": "0.0.0.0/0"}])
        for rule in new.get("SecurityGroupIngress") or []:
            backend.authorize_security_group_ingress(**_inline_rule_args(rule, group.id, egress=False))
        for rule in new.get("SecurityGroupEgress") or []:
            backend.authorize_security_group_egress(**_inline_rule_args(rule, group.id, egress=True))
        group.kit_inline_rules = {
            k: copy.deepcopy(new.get(k)) for k in ("SecurityGroupIngress", "SecurityGroupEgress") if new.get(k)
        }

    def create(
        cls: Any,
        resource_name: str,
        cloudformation_json: dict[str, Any],
        account_id: str,
        region_name: str,
        **kwargs: Any,
    ) -> Any:
        group = original_create(resource_name, without_rules(cloudformation_json), account_id, region_name, **kwargs)
        set_rules(_ec2(account_id, region_name), group, None, cloudformation_json["Properties"])
        return remember(group, cloudformation_json)

    def update(
        cls: Any,
        original_resource: Any,
        new_resource_name: str,
        cloudformation_json: dict[str, Any],
        account_id: str,
        region_name: str,
    ) -> Any:
        props = cloudformation_json["Properties"]
        if any(props.get(k) != getattr(original_resource, "kit_properties", {}).get(k) for k in replacing):
            # moto replaces the group (delete, then create through the patched create above).
            return original_update(original_resource, new_resource_name, cloudformation_json, account_id, region_name)
        # Rules and tags change in place: the group keeps its id, as in AWS.
        backend = _ec2(account_id, region_name)
        set_rules(backend, original_resource, getattr(original_resource, "kit_inline_rules", {}), props)
        for tag in props.get("Tags") or []:
            original_resource.add_tag(tag["Key"], tag["Value"])
        return remember(original_resource, cloudformation_json)

    def remember(group: Any, cloudformation_json: dict[str, Any]) -> Any:
        group.kit_properties = {k: cloudformation_json["Properties"].get(k) for k in replacing}
        return group

    _install(SecurityGroup, "create_from_cloudformation_json", classmethod(create))
    _install(SecurityGroup, "update_from_cloudformation_json", classmethod(update))


class _suppressed:
    """Ignore moto's not-found errors when taking back rules that may already be gone."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> bool:
        from moto.ec2.exceptions import EC2ClientError

        return kind is not None and issubclass(kind, EC2ClientError)


def _patch_security_group_egress_resource() -> None:
    from moto.core.common_models import CloudFormationModel

    class SecurityGroupEgress(CloudFormationModel):
        def __init__(self, rule_id: str, props: dict[str, Any]) -> None:
            self.rule_id = rule_id
            self.props = props

        @property
        def physical_resource_id(self) -> str:
            return self.rule_id

        @staticmethod
        def cloudformation_name_type() -> str:
            return ""

        @staticmethod
        def cloudformation_type() -> str:
            return "AWS::EC2::SecurityGroupEgress"

        @classmethod
        def create_from_cloudformation_json(
            cls,
            resource_name: str,
            cloudformation_json: dict[str, Any],
            account_id: str,
            region_name: str,
            **kwargs: Any,
        ) -> Any:
            props = cloudformation_json["Properties"]
            rules, _ = _ec2(account_id, region_name).authorize_security_group_egress(**_egress_rule_args(props))
            return cls(rules[0].id if rules else "", props)

        @classmethod
        def update_from_cloudformation_json(
            cls,
            original_resource: Any,
            new_resource_name: str,
            cloudformation_json: dict[str, Any],
            account_id: str,
            region_name: str,
        ) -> Any:
            # Every property of this resource requires replacement.
            original_resource.delete(account_id, region_name)
            return cls.create_from_cloudformation_json(new_resource_name, cloudformation_json, account_id, region_name)

        @classmethod
        def delete_from_cloudformation_json(
            cls, resource_name: str, cloudformation_json: dict[str, Any], account_id: str, region_name: str
        ) -> None:
            cls("", cloudformation_json["Properties"]).delete(account_id, region_name)

        def delete(self, account_id: str, region_name: str) -> None:
            backend = _ec2(account_id, region_name)
            args = _egress_rule_args(self.props)
            # The group may be gone already (deleted outside the stack): then so is the rule.
            if backend.get_security_group_by_name_or_id(args["group_name_or_id"]) is None:
                return
            backend.revoke_security_group_egress(**args)

        def is_created(self) -> bool:
            return True

    _install_get_att(SecurityGroupEgress, "Id", "rule_id")
    _REGISTERED_MODELS.append(SecurityGroupEgress)


def _patch_default_security_group_rules() -> None:
    from moto.ec2.models import EC2Backend

    original = EC2Backend.create_security_group

    def create_security_group(
        self: Any,
        name: str,
        description: str,
        vpc_id: str | None = None,
        tags: dict[str, str] | None = None,
        force: bool = False,
        is_default: bool | None = None,
    ) -> Any:
        group = original(self, name, description, vpc_id, tags, force, is_default)
        if is_default:
            self.authorize_security_group_ingress(
                group.id, "-1", None, None, [], source_groups=[{"GroupId": group.id}], vpc_id=group.vpc_id
            )
        return group

    _install(EC2Backend, "create_security_group", create_security_group)


def _patch_vpc_dns_attributes() -> None:
    from moto.ec2.models.vpcs import VPC

    original = VPC.__dict__["create_from_cloudformation_json"].__func__

    def create(
        cls: Any, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **kwargs: Any
    ) -> Any:
        vpc = original(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs)
        properties = cloudformation_json.get("Properties") or {}
        for prop, attr in (("EnableDnsSupport", "enable_dns_support"), ("EnableDnsHostnames", "enable_dns_hostnames")):
            if prop in properties:
                # CloudFormation hands booleans through as true/false or "true"/"false".
                setattr(vpc, attr, str(properties[prop]).lower() == "true")
        return vpc

    _install(VPC, "create_from_cloudformation_json", classmethod(create))


def _patch_network_resource_deletion() -> None:
    """Give the VPC pieces a CDK Vpc is made of a CloudFormation delete (moto 5.2.5 has none for
    them, so `cdk destroy` left them behind and then failed on the VPC), and make
    AWS::EC2::SubnetRouteTableAssociation a real association (moto only records it aside, so the
    subnet kept the main route table)."""
    from moto.ec2.models.elastic_ip_addresses import ElasticAddress
    from moto.ec2.models.flow_logs import FlowLogs
    from moto.ec2.models.internet_gateways import InternetGateway
    from moto.ec2.models.nat_gateways import NatGateway
    from moto.ec2.models.route_tables import Route, RouteTable
    from moto.ec2.models.security_groups import SecurityGroupIngress
    from moto.ec2.models.subnets import SubnetRouteTableAssociation
    from moto.ec2.models.vpcs import VPCEndPoint
    from moto.ec2.models.vpn_gateway import VPCGatewayAttachment

    def association_create(
        cls: Any,
        resource_name: str,
        cloudformation_json: dict[str, Any],
        account_id: str,
        region_name: str,
        **kwargs: Any,
    ) -> Any:
        props = cloudformation_json["Properties"]
        association = cls(props["RouteTableId"], props["SubnetId"])
        association.association_id = _ec2(account_id, region_name).associate_route_table(
            props["RouteTableId"], subnet_id=props["SubnetId"]
        )
        return association

    def association_physical_id(self: Any) -> str:
        # AWS: Ref of an association is its id (rtbassoc-...).
        return str(getattr(self, "association_id", self.route_table_id))

    def association_delete(self: Any, account_id: str, region_name: str) -> None:
        if getattr(self, "association_id", None):
            _ec2(account_id, region_name).disassociate_route_table(self.association_id)

    def route_delete(self: Any, account_id: str, region_name: str) -> None:
        _ec2(account_id, region_name).delete_route(
            self.route_table.id,
            self.destination_cidr_block,
            destination_ipv6_cidr_block=self.destination_ipv6_cidr_block,
            destination_prefix_list_id=self.destination_prefix_list.id if self.destination_prefix_list else None,
        )

    def route_table_delete(self: Any, account_id: str, region_name: str) -> None:
        _ec2(account_id, region_name).delete_route_table(self.id)

    def internet_gateway_delete(self: Any, account_id: str, region_name: str) -> None:
        _ec2(account_id, region_name).delete_internet_gateway(self.id)

    def attachment_delete(self: Any, account_id: str, region_name: str) -> None:
        ec2 = _ec2(account_id, region_name)
        if self.gateway_id.startswith("igw-"):
            ec2.detach_internet_gateway(self.gateway_id, self.vpc_id)
        else:
            ec2.detach_vpn_gateway(self.gateway_id, self.vpc_id)

    def nat_gateway_delete(self: Any, account_id: str, region_name: str) -> None:
        ec2 = _ec2(account_id, region_name)
        ec2.delete_nat_gateway(self.id)
        # AWS releases the NAT gateway's network interface (and with it the EIP association).
        for address in ec2.addresses:
            if address.eni is self._eni:
                ec2.disassociate_address(address=address.public_ip)
        ec2.enis.pop(self._eni.id, None)

    def address_delete(self: Any, account_id: str, region_name: str) -> None:
        ec2 = _ec2(account_id, region_name)
        if self not in ec2.addresses:
            return
        if self.allocation_id:
            ec2.release_address(allocation_id=self.allocation_id)
        else:
            ec2.release_address(address=self.public_ip)

    def endpoint_delete(self: Any, account_id: str, region_name: str) -> None:
        ec2 = _ec2(account_id, region_name)
        # A gateway endpoint's routes go with it; tables already gone need no route removed.
        self.route_table_ids = [r for r in self.route_table_ids if r in ec2.route_tables]
        ec2.delete_vpc_endpoints([self.id])

    def flow_log_delete(self: Any, account_id: str, region_name: str) -> None:
        _ec2(account_id, region_name).delete_flow_logs([self.id])

    def ingress_delete(self: Any, account_id: str, region_name: str) -> None:
        ec2 = _ec2(account_id, region_name)
        props = self.properties
        if ec2.get_security_group_by_name_or_id(self.security_group.id) is None:
            return
        source: dict[str, str] = {}
        if props.get("SourceSecurityGroupId"):
            source["GroupId"] = props["SourceSecurityGroupId"]
        ec2.revoke_security_group_ingress(
            self.security_group.id,
            props["IpProtocol"],
            props.get("FromPort"),
            props.get("ToPort"),
            [{"CidrIp": props["CidrIp"]}] if props.get("CidrIp") else [],
            source_groups=[source] if source else [],
        )

    _install(SubnetRouteTableAssociation, "create_from_cloudformation_json", classmethod(association_create))
    _install(SubnetRouteTableAssociation, "physical_resource_id", property(association_physical_id))
    for cls, delete in (
        (SubnetRouteTableAssociation, association_delete),
        (Route, route_delete),
        (RouteTable, route_table_delete),
        (InternetGateway, internet_gateway_delete),
        (VPCGatewayAttachment, attachment_delete),
        (NatGateway, nat_gateway_delete),
        (ElasticAddress, address_delete),
        (VPCEndPoint, endpoint_delete),
        (FlowLogs, flow_log_delete),
        (SecurityGroupIngress, ingress_delete),
    ):
        _install(cls, "delete", delete)


# --------------------------------------------------------------------------------------------
# AWS Batch: compute environments
# --------------------------------------------------------------------------------------------


def _batch_service_linked_role_arn(batch_backend: Any) -> str:
    """The ARN of AWSServiceRoleForBatch, creating the role the way AWS does on first use."""
    from moto.iam.exceptions import NotFoundException

    iam = batch_backend.iam_backend
    try:
        role = iam.get_role(BATCH_SERVICE_LINKED_ROLE)
    except NotFoundException:
        role = iam.create_role(
            BATCH_SERVICE_LINKED_ROLE,
            '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"'
            + BATCH_SERVICE
            + '"},"Action":"sts:AssumeRole"}]}',
            f"/aws-service-role/{BATCH_SERVICE}/",
            permissions_boundary=None,
            description="Allows Batch to create and manage AWS resources on your behalf.",
            tags=[],
            max_session_duration="3600",
            linked_service=BATCH_SERVICE,
        )
    arn: str = role.arn
    return arn


def _launch_template_data(ec2_backend: Any, spec: dict[str, Any]) -> dict[str, Any] | None:
    """The data of the launch-template version a CE's launchTemplate names (None when it names none)."""
    template_id = spec.get("launchTemplateId")
    template_name = spec.get("launchTemplateName")
    if not template_id and not template_name:
        return None
    template = (
        ec2_backend.get_launch_template(template_id)
        if template_id
        else ec2_backend.get_launch_template_by_name(template_name)
    )
    data: dict[str, Any] = template.get_version(spec.get("version") or "$Default").data
    return data


def _check_groups_and_lend(batch_backend: Any, resources: dict[str, Any]) -> dict[str, Any]:
    """Apply AWS's security-group rules to a CE's compute resources and return the dict moto's own
    validation and instance launch should see (with the launch template's groups when the CE sends none)."""
    if "FARGATE" in str(resources.get("type", "")):
        return resources
    data = _launch_template_data(batch_backend.ec2_backend, resources.get("launchTemplate") or {}) or {}
    interfaces = data.get("NetworkInterfaces") or []
    if resources.get("securityGroupIds") and interfaces:
        from moto.batch.exceptions import ClientException

        raise ClientException(EXCLUSIVE_GROUPS_MESSAGE)
    if "securityGroupIds" in resources:
        return resources
    lent: list[str] = []
    for interface in interfaces:
        lent += [g for g in interface.get("Groups", []) if g not in lent]
    lent += [g for g in data.get("SecurityGroupIds", []) if g not in lent]
    # An empty list keeps moto's own "At least 1 security group must be provided".
    return {**resources, "securityGroupIds": lent}


def _patch_batch_optional_service_role() -> None:
    from moto.batch.models import BatchBackend

    original = BatchBackend.create_compute_environment

    def create_compute_environment(
        self: Any,
        compute_environment_name: str,
        _type: str,
        state: str,
        compute_resources: dict[str, Any],
        service_role: str,
        tags: dict[str, str] | None = None,
    ) -> Any:
        role = service_role or _batch_service_linked_role_arn(self)
        return original(self, compute_environment_name, _type, state, compute_resources, role, tags)

    _install(BatchBackend, "create_compute_environment", create_compute_environment)


def _patch_batch_security_groups_from_launch_template() -> None:
    from moto.batch.models import BatchBackend

    original = BatchBackend.create_compute_environment

    def create_compute_environment(
        self: Any,
        compute_environment_name: str,
        _type: str,
        state: str,
        compute_resources: dict[str, Any],
        service_role: str,
        tags: dict[str, str] | None = None,
    ) -> Any:
        if _type != "MANAGED" or not compute_resources:
            return original(self, compute_environment_name, _type, state, compute_resources, service_role, tags)
        seen_by_moto = _check_groups_and_lend(self, compute_resources)
        env = original(self, compute_environment_name, _type, state, seen_by_moto, service_role, tags)
        # Describe what the caller sent, as AWS does, not the groups lent to moto.
        env.compute_resources = compute_resources
        return env

    _install(BatchBackend, "create_compute_environment", create_compute_environment)


def _patch_batch_update_compute_resources() -> None:
    from moto.batch.exceptions import InvalidParameterValueException
    from moto.batch.models import BatchBackend

    original = BatchBackend.update_compute_environment

    def update_compute_environment(
        self: Any,
        compute_environment_name: str,
        state: str | None,
        compute_resources: Any | None,
        service_role: str | None,
    ) -> tuple[str, str]:
        name, arn = original(self, compute_environment_name, state, None, service_role)
        if compute_resources:
            env = self.get_compute_environment(arn)
            merged = {**env.compute_resources, **compute_resources}
            if int(merged.get("minvCpus", 0)) > int(merged.get("maxvCpus", 0)):
                raise InvalidParameterValueException("maxVCpus must be greater than minvCpus")
            _check_groups_and_lend(self, merged)
            env.compute_resources = merged
        return name, arn

    _install(BatchBackend, "update_compute_environment", update_compute_environment)


def _batch_keys(value: Any) -> Any:
    """CloudFormation's PascalCase property names -> Batch API camelCase, like moto's
    lowercase_first_key, except that the keys of a Tags map are user data and stay as they are."""
    if isinstance(value, dict):
        return {k[:1].lower() + k[1:]: (v if k == "Tags" else _batch_keys(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_batch_keys(v) for v in value]
    return value


def _ce_properties(props: dict[str, Any]) -> tuple[str, str, dict[str, Any] | None, str | None]:
    """(type, state, compute resources, service role) from AWS::Batch::ComputeEnvironment properties.
    CloudFormation accepts the type in any case (the CDK L2 writes "managed"); the API wants upper case."""
    resources = _batch_keys(props["ComputeResources"]) if props.get("ComputeResources") else None
    if resources is not None and "type" in resources:
        resources["type"] = str(resources["type"]).upper()
    return str(props["Type"]).upper(), str(props.get("State", "ENABLED")), resources, props.get("ServiceRole")


def _patch_batch_compute_environment_resource() -> None:
    from moto.batch.models import ComputeEnvironment

    def create_from_cloudformation_json(
        cls: Any,
        resource_name: str,
        cloudformation_json: dict[str, Any],
        account_id: str,
        region_name: str,
        **kwargs: Any,
    ) -> Any:
        backend = _batch(account_id, region_name)
        props = cloudformation_json["Properties"]
        env_type, state, resources, role = _ce_properties(props)
        env = backend.create_compute_environment(
            resource_name, env_type, state, resources, role or "", props.get("Tags")
        )
        return env

    def update_from_cloudformation_json(
        cls: Any,
        original_resource: Any,
        new_resource_name: str,
        cloudformation_json: dict[str, Any],
        account_id: str,
        region_name: str,
    ) -> Any:
        backend = _batch(account_id, region_name)
        props = cloudformation_json["Properties"]
        env_type, state, resources, role = _ce_properties(props)
        changed_resources = {
            k
            for k in set(resources or {}) | set(original_resource.compute_resources or {})
            if (resources or {}).get(k) != (original_resource.compute_resources or {}).get(k)
        }
        replace_on_update = props.get("ReplaceComputeEnvironment", True) is not False
        must_replace = (
            env_type != original_resource.env_type
            or ("ComputeEnvironmentName" in props and props["ComputeEnvironmentName"] != original_resource.name)
            or (replace_on_update and bool(changed_resources - CE_ALWAYS_IN_PLACE))
        )
        if must_replace:
            new = cls.create_from_cloudformation_json(new_resource_name, cloudformation_json, account_id, region_name)
            backend.delete_compute_environment(original_resource.arn)
            return new
        backend.update_compute_environment(original_resource.arn, state, None, role)
        if resources is not None:
            _check_groups_and_lend(backend, resources)
            original_resource.compute_resources = resources
        if props.get("Tags"):
            backend.tag_resource(original_resource.arn, props["Tags"])
        return original_resource

    def delete(self: Any, account_id: str, region_name: str) -> None:
        _batch(account_id, region_name).delete_compute_environment(self.arn)

    _install(ComputeEnvironment, "create_from_cloudformation_json", classmethod(create_from_cloudformation_json))
    _install(ComputeEnvironment, "update_from_cloudformation_json", classmethod(update_from_cloudformation_json))
    _install_get_att(ComputeEnvironment, "ComputeEnvironmentArn", "arn")
    _install(ComputeEnvironment, "delete", delete)


# --------------------------------------------------------------------------------------------
# AWS Batch: job queues
# --------------------------------------------------------------------------------------------


def _patch_batch_job_queue_resource() -> None:
    from moto.batch.models import JobQueue

    def apply_extras(queue: Any, backend: Any, props: dict[str, Any]) -> None:
        queue.job_state_time_limit_actions = _batch_keys(props.get("JobStateTimeLimitActions") or [])
        if props.get("Tags"):
            backend.tag_resource(queue.arn, props["Tags"])

    def create_from_cloudformation_json(
        cls: Any,
        resource_name: str,
        cloudformation_json: dict[str, Any],
        account_id: str,
        region_name: str,
        **kwargs: Any,
    ) -> Any:
        backend = _batch(account_id, region_name)
        props = cloudformation_json["Properties"]
        queue = backend.create_job_queue(
            queue_name=resource_name,
            priority=props["Priority"],
            state=props.get("State", "ENABLED"),
            compute_env_order=_batch_keys(props["ComputeEnvironmentOrder"]),
            schedule_policy=props.get("SchedulingPolicyArn"),
        )
        apply_extras(queue, backend, props)
        return queue

    def update_from_cloudformation_json(
        cls: Any,
        original_resource: Any,
        new_resource_name: str,
        cloudformation_json: dict[str, Any],
        account_id: str,
        region_name: str,
    ) -> Any:
        backend = _batch(account_id, region_name)
        props = cloudformation_json["Properties"]
        if "JobQueueName" in props and props["JobQueueName"] != original_resource.name:
            new = cls.create_from_cloudformation_json(new_resource_name, cloudformation_json, account_id, region_name)
            backend.delete_job_queue(original_resource.arn)
            return new
        backend.update_job_queue(
            queue_name=original_resource.arn,
            priority=props["Priority"],
            state=props.get("State", "ENABLED"),
            compute_env_order=_batch_keys(props["ComputeEnvironmentOrder"]),
            schedule_policy=props.get("SchedulingPolicyArn"),
        )
        apply_extras(original_resource, backend, props)
        return original_resource

    def delete(self: Any, account_id: str, region_name: str) -> None:
        _batch(account_id, region_name).delete_job_queue(self.arn)

    original_describe = JobQueue.describe

    def describe(self: Any) -> dict[str, Any]:
        out: dict[str, Any] = original_describe(self)
        actions = getattr(self, "job_state_time_limit_actions", None)
        if actions:
            out["jobStateTimeLimitActions"] = actions
        return out

    _install(JobQueue, "create_from_cloudformation_json", classmethod(create_from_cloudformation_json))
    _install(JobQueue, "update_from_cloudformation_json", classmethod(update_from_cloudformation_json))
    _install_get_att(JobQueue, "JobQueueArn", "arn")
    _install(JobQueue, "delete", delete)
    _install(JobQueue, "describe", describe)


def _patch_batch_job_definition_node_properties() -> None:
    from moto.batch.models import JobDefinition

    original = JobDefinition.describe

    def describe(self: Any) -> dict[str, Any]:
        out: dict[str, Any] = original(self)
        if self.node_properties is not None:
            out["nodeProperties"] = self.node_properties
        return out

    _install(JobDefinition, "describe", describe)


# --------------------------------------------------------------------------------------------
# CloudFormation: change sets, failures, dependent updates
# --------------------------------------------------------------------------------------------


def _failure_reason(exc: BaseException) -> str:
    message = getattr(exc, "message", None) or str(exc)
    return f"{type(exc).__name__}: {message}"


def _find_change_set(backend: Any, name_or_arn: str, stack_name: str | None) -> Any:
    """A change set by ARN, or by name within the named stack (change-set names are per stack)."""
    if name_or_arn in backend.change_sets:
        return backend.change_sets[name_or_arn]
    matches = [
        cs
        for cs in backend.change_sets.values()
        if cs.change_set_name == name_or_arn and (not stack_name or stack_name in (cs.stack_name, cs.stack_id))
    ]
    return matches[-1] if matches else None


def _change_set_not_found(name: str) -> Exception:
    from moto.cloudformation.exceptions import CloudFormationError

    return CloudFormationError("ChangeSetNotFound", f"ChangeSet [{name}] does not exist")


def _patch_change_sets_per_stack() -> None:
    from moto.cloudformation.exceptions import ValidationError
    from moto.cloudformation.models import CloudFormationBackend
    from moto.cloudformation.responses import CloudFormationResponse
    from moto.core.responses import ActionResult, EmptyResult

    def describe_change_set(self: Any, change_set_name: str, stack_name: str | None = None) -> Any:
        change_set = _find_change_set(self, change_set_name, stack_name)
        if change_set is None:
            raise _change_set_not_found(change_set_name)
        return change_set

    def delete_change_set(self: Any, change_set_name: str, stack_name: str | None = None) -> None:
        change_set = _find_change_set(self, change_set_name, stack_name)
        if change_set is None:
            # AWS: deleting an unknown change set succeeds as long as the stack exists (the cdk
            # CLI relies on it before every deploy).
            if stack_name and not any(stack_name in (s.name, s.stack_id) for s in self.stacks.values()):
                raise ValidationError(stack_name)
            return
        del self.change_sets[change_set.change_set_id]

    def describe_change_set_action(self: Any) -> Any:
        return ActionResult(
            self.cloudformation_backend.describe_change_set(
                self._get_param("ChangeSetName"), self._get_param("StackName")
            )
        )

    def delete_change_set_action(self: Any) -> Any:
        self.cloudformation_backend.delete_change_set(self._get_param("ChangeSetName"), self._get_param("StackName"))
        return EmptyResult()

    def list_change_sets_action(self: Any) -> Any:
        stack_name = self._get_param("StackName")
        change_sets = [
            cs
            for cs in self.cloudformation_backend.list_change_sets()
            if not stack_name or stack_name in (cs.stack_name, cs.stack_id)
        ]
        return ActionResult({"Summaries": change_sets})

    _install(CloudFormationBackend, "describe_change_set", describe_change_set)
    _install(CloudFormationBackend, "delete_change_set", delete_change_set)
    _install(CloudFormationResponse, "describe_change_set", describe_change_set_action)
    _install(CloudFormationResponse, "delete_change_set", delete_change_set_action)
    _install(CloudFormationResponse, "list_change_sets", list_change_sets_action)


def _patch_change_set_execution() -> None:
    """One replacement of CloudFormationBackend.execute_change_set (moto's has 25 lines and both
    faults: outputs not re-read, failures not reported)."""
    from moto.cloudformation.models import CloudFormationBackend

    def execute_change_set(self: Any, change_set_name: str, stack_name: str | None = None) -> None:
        change_set = _find_change_set(self, change_set_name, stack_name)
        if change_set is None:
            raise _change_set_not_found(change_set_name)
        stack = self.stacks[change_set.stack_id]
        kind = change_set.change_set_type
        stack._add_stack_event(f"{kind}_IN_PROGRESS", resource_status_reason="User Initiated")
        try:
            change_set.apply()
        except Exception as exc:
            reason = _failure_reason(exc)
            logger.warning(
                "change set %s of stack %s failed: %s", change_set.change_set_name, stack.name, reason, exc_info=True
            )
            stack._add_stack_event(f"{kind}_FAILED", resource_status_reason=reason)
            if kind == "CREATE":
                # AWS rolls a failed creation back by deleting what was created.
                try:
                    stack.resource_map.delete()
                except Exception:
                    logger.warning("rollback of stack %s left resources behind", stack.name, exc_info=True)
            stack.status = "ROLLBACK_COMPLETE" if kind == "CREATE" else "UPDATE_ROLLBACK_COMPLETE"
            stack._add_stack_event(stack.status, resource_status_reason=reason)
            change_set.execution_status = "EXECUTE_FAILED"
            change_set.status_reason = reason
            return
        stack.template = change_set.template
        stack._parse_template()
        stack.description = stack.template_dict.get("Description")
        stack.output_map = stack._create_output_map()
        for export in stack.exports:
            self.exports[export.name] = export
        stack._add_stack_event(f"{kind}_COMPLETE")
        change_set.execution_status = "EXECUTE_COMPLETE"
        stack.status = f"{kind}_COMPLETE"
        # AWS removes every change set of a stack once one has been executed.
        for change_set_id in [k for k, cs in self.change_sets.items() if cs.stack_id == stack.stack_id]:
            del self.change_sets[change_set_id]

    _install(CloudFormationBackend, "execute_change_set", execute_change_set)


def _patch_delete_stack_failures() -> None:
    from moto.cloudformation.models import CloudFormationBackend

    original = CloudFormationBackend.delete_stack

    def delete_stack(self: Any, name_or_stack_id: str) -> None:
        stacks = [s for s in self.stacks.values() if name_or_stack_id in (s.stack_id, s.name)]
        try:
            original(self, name_or_stack_id)
        except Exception as exc:
            reason = _failure_reason(exc)
            logger.warning("deleting stack %s failed: %s", name_or_stack_id, reason, exc_info=True)
            for stack in stacks:
                self.stacks[stack.stack_id] = stack
                self.deleted_stacks.pop(stack.stack_id, None)
                stack.status = "DELETE_FAILED"
                stack._add_stack_event("DELETE_FAILED", resource_status_reason=reason)

    _install(CloudFormationBackend, "delete_stack", delete_stack)


def _patch_previous_parameter_values() -> None:
    from moto.cloudformation.models import Stack

    def stack_parameters(self: Any) -> dict[str, Any]:
        declared = (self.template_dict or {}).get("Parameters") or {}
        given = self.resource_map.input_parameters or {}
        return {name: given[name] if name in given else spec.get("Default") for name, spec in declared.items()}

    _install(Stack, "stack_parameters", property(stack_parameters))


def _references(value: Any, names: set[str]) -> set[str]:
    """Logical ids a template fragment refers to (Ref, Fn::GetAtt, Fn::Sub)."""
    found: set[str] = set()
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "Ref" and isinstance(inner, str) and inner in names:
                found.add(inner)
            elif key == "Fn::GetAtt":
                target = inner[0] if isinstance(inner, list) else str(inner).split(".", 1)[0]
                if target in names:
                    found.add(target)
            elif key == "Fn::Sub":
                text = inner[0] if isinstance(inner, list) else inner
                for token in re.findall(r"\$\{([^}!][^}]*)\}", str(text)):
                    if token.split(".", 1)[0] in names:
                        found.add(token.split(".", 1)[0])
                found |= _references(inner[1] if isinstance(inner, list) else {}, names)
            else:
                found |= _references(inner, names)
    elif isinstance(value, list):
        for inner in value:
            found |= _references(inner, names)
    return found


def deletion_order(resources: dict[str, Any]) -> list[str]:
    """Logical ids in the order CloudFormation deletes them: every resource after all resources
    that refer to it (Ref, Fn::GetAtt, Fn::Sub, DependsOn)."""
    names = set(resources)
    depends: dict[str, set[str]] = {}
    for name, body in resources.items():
        explicit = body.get("DependsOn") or []
        explicit = [explicit] if isinstance(explicit, str) else explicit
        depends[name] = (_references(body, names) | {d for d in explicit if d in names}) - {name}
    creation: list[str] = []
    done: set[str] = set()

    def visit(name: str, path: set[str]) -> None:
        if name in done or name in path:
            return
        for dependency in sorted(depends[name]):
            visit(dependency, path | {name})
        done.add(name)
        creation.append(name)

    for name in resources:
        visit(name, set())
    return list(reversed(creation))


def _patch_delete_in_dependency_order() -> None:
    from moto.cloudformation.parsing import ResourceMap

    def delete(self: Any) -> None:
        order = [
            name
            for name in deletion_order(self._resource_json_map)
            if self._resource_json_map[name].get("DeletionPolicy") != "Retain"
        ]
        last_error: Exception | None = None
        progress = True
        # One pass normally suffices; later passes only retry what failed for a reason that
        # another deletion removed.
        while order and progress:
            progress = False
            for name in list(order):
                resource = self._parsed_resources.get(name)
                if resource is not None and not isinstance(resource, str):
                    try:
                        self._delete_resource(resource, self._resource_json_map[name])
                    except Exception as exc:
                        last_error = exc
                        continue
                    self._parsed_resources.pop(name, None)
                order.remove(name)
                progress = True
        # What is left must not be re-created by moto's lazy map when the stack is read again.
        self._resource_json_map = {
            k: v for k, v in self._resource_json_map.items() if self._parsed_resources.get(k) is not None
        }
        if order and last_error is not None:
            raise last_error

    _install(ResourceMap, "delete", delete)


def _resolve(resource_json: dict[str, Any], resources_map: Any) -> Any:
    from moto.cloudformation.parsing import clean_json

    return clean_json(copy.deepcopy(resource_json.get("Properties", {})), resources_map)


def _patch_update_dependents() -> None:
    from moto.cloudformation.parsing import ResourceMap, parse_and_update_resource

    original = ResourceMap.update

    def update(self: Any, template: dict[str, Any], parameters: dict[str, Any] | None = None) -> None:
        old_json = self._resource_json_map
        diff = self.build_resource_diff(template, parameters)
        touched = set(diff["Add"]) | set(diff["Modify"]) | set(diff["Remove"])
        candidates = [
            name
            for name in template["Resources"]
            if name in old_json and name not in touched and self._parsed_resources.get(name) is not None
        ]
        before = {name: _resolve(old_json[name], self) for name in candidates}
        original(self, template, parameters)
        pending = list(candidates)
        progress = True
        # A changed resource can change what its own dependents resolve to: repeat until stable.
        while progress and pending:
            progress = False
            for name in list(pending):
                resource_json = self._resource_json_map[name]
                if _resolve(resource_json, self) == before[name]:
                    continue
                updated = parse_and_update_resource(
                    name, resource_json, self, account_id=self._account_id, region_name=self._region_name
                )
                if updated is not None:
                    self._parsed_resources[name] = updated
                pending.remove(name)
                progress = True

    _install(ResourceMap, "update", update)


# --------------------------------------------------------------------------------------------


PATCHES: tuple[Patch, ...] = (
    Patch("placement_groups", _patch_placement_groups),
    Patch("security_group_egress_resource", _patch_security_group_egress_resource),
    Patch("security_group_inline_rules", _patch_security_group_inline_rules),
    Patch("default_security_group_rules", _patch_default_security_group_rules),
    Patch("vpc_dns_attributes", _patch_vpc_dns_attributes),
    Patch("network_resource_deletion", _patch_network_resource_deletion),
    Patch("batch_optional_service_role", _patch_batch_optional_service_role),
    Patch("batch_security_groups_from_launch_template", _patch_batch_security_groups_from_launch_template),
    Patch("batch_update_compute_resources", _patch_batch_update_compute_resources),
    Patch("batch_compute_environment_resource", _patch_batch_compute_environment_resource),
    Patch("batch_job_queue_resource", _patch_batch_job_queue_resource),
    Patch("batch_job_definition_node_properties", _patch_batch_job_definition_node_properties),
    Patch("change_sets_per_stack", _patch_change_sets_per_stack),
    Patch("change_set_execution", _patch_change_set_execution),
    Patch("delete_stack_failures", _patch_delete_stack_failures),
    Patch("delete_in_dependency_order", _patch_delete_in_dependency_order),
    Patch("previous_parameter_values", _patch_previous_parameter_values),
    Patch("update_dependents", _patch_update_dependents),
)


def _clear_model_caches() -> None:
    # moto caches its CloudFormation type map; added (or removed) resource types must show.
    from moto.cloudformation import parsing

    parsing.get_model_list.cache_clear()
    parsing.get_model_map.cache_clear()
    parsing.get_name_type_map.cache_clear()


def apply() -> tuple[str, ...]:
    """Apply every patch once (idempotent); returns the names of all applied patches.
    Raises CompatError on a moto version the layer was not written for."""
    check_moto_version()
    for patch in PATCHES:
        if patch.name not in _applied:
            patch.apply()
            _applied.add(patch.name)
    _clear_model_caches()
    return tuple(p.name for p in PATCHES if p.name in _applied)


def restore() -> None:
    """Undo every patch. The sandbox server never does; in-process tests do, because moto's
    classes are shared by the whole test session."""
    from moto.core.model_instances import model_data

    while _undo:
        target, name, old = _undo.pop()
        if old is _MISSING:
            delattr(target, name)
        else:
            setattr(target, name, old)
    target = old = None  # the kit's own model classes were targets too: no reference may survive
    model: Any = None
    while _REGISTERED_MODELS:
        model = _REGISTERED_MODELS.pop()
        model_data.get(model.__module__.split(".")[1], {}).pop(model.__name__, None)
        model.instances_tracked.clear()
    model = None  # no reference may survive the collection below
    _applied.clear()
    _clear_model_caches()  # the cached type map holds the added classes too
    gc.collect()  # drops them from CloudFormationModel.__subclasses__()


def applied() -> frozenset[str]:
    return frozenset(_applied)
