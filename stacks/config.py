"""The kit's config: parsed once into a frozen, typed model.

Source: the ``multinode`` object of cdk.json's context, or a JSON file given with
``cdk synth -c config=FILE`` / ``python -m kit validate --config FILE`` (same object).

Parsing checks shapes only (unknown keys, types, required fields) and collects every
problem as a Finding with its key path; rules that need the instance catalog or several
fields at once live in stacks/validators.py. Parsing never raises, whatever the JSON: a
field with a bad shape gets its default (or a placeholder) so that the validators can
still report every other problem in the same run. Nothing here imports aws_cdk.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

Level = Literal["error", "warning"]


@dataclass(frozen=True)
class Finding:
    level: Level
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.level.upper()}: {self.path}: {self.message}"


@dataclass(frozen=True)
class NetworkConfig:
    vpc_id: str | None = None
    subnet_ids: tuple[str, ...] = ()
    vpc_cidr: str = "10.40.0.0/16"
    ssh_sources: tuple[str, ...] = ()
    allow_ssh_from_anywhere: bool = False


@dataclass(frozen=True)
class CapacityConfig:
    """Where a queue's instances come from, besides plain On-Demand.

    kind "reservation": a targeted On-Demand Capacity Reservation (`reservation_id`);
    "reservation-group": a resource group of reservations (`reservation_group_arn`);
    "capacity-block": an EC2 Capacity Block for ML (`reservation_id`, market type
    capacity-block).
    """

    kind: Literal["reservation", "reservation-group", "capacity-block"]
    reservation_id: str | None = None
    reservation_group_arn: str | None = None


@dataclass(frozen=True)
class QueueConfig:
    name: str
    instance_type: str
    max_nodes: int
    min_nodes: int = 0
    efa_interfaces: int | Literal["max"] = "max"
    root_volume_gib: int = 200
    image_id: str | None = None
    capacity_wait_minutes: int = 60
    capacity: CapacityConfig | None = None
    placement_group: str | None = None  # an existing cluster placement group instead of a new one


@dataclass(frozen=True)
class MetaflowConfig:
    s3_access_role_arn: str | None = None
    profile: str = "multinode"


@dataclass(frozen=True)
class KitConfig:
    region: str
    availability_zone: str
    queues: tuple[QueueConfig, ...]
    stack_name: str = "metaflow-multinode"
    account: str | None = None
    network: NetworkConfig = field(default_factory=NetworkConfig)
    metaflow: MetaflowConfig = field(default_factory=MetaflowConfig)
    tags: tuple[tuple[str, str], ...] = ()

    @property
    def creates_vpc(self) -> bool:
        return self.network.vpc_id is None


class ConfigError(Exception):
    """Raised with every finding when a config cannot be used."""

    def __init__(self, findings: list[Finding]):
        self.findings = findings
        super().__init__("\n".join(str(f) for f in findings))


T = TypeVar("T")

_TYPE_NAMES = {str: "a string", int: "an integer", bool: "true or false", list: "a list", dict: "an object"}
ROOT_PATH = "(config)"


class _Reader:
    """Reads one JSON object, recording every shape problem instead of stopping."""

    def __init__(self, findings: list[Finding]):
        self.findings = findings

    def error(self, path: str, message: str) -> None:
        self.findings.append(Finding("error", path, message))

    def obj(self, raw: Any, path: str, allowed: Mapping[str, str]) -> dict[str, Any]:
        """`allowed` maps each known key to a one-line description used in typo messages."""
        if not isinstance(raw, dict):
            self.error(path or ROOT_PATH, f"must be an object, got {_describe(raw)}")
            return {}
        for key in raw:
            if key not in allowed:
                hint = _closest(str(key), list(allowed))
                valid = f"did you mean {hint!r}?" if hint else f"valid keys here: {', '.join(allowed)}"
                self.error(_join(path, str(key)), f"unknown key; {valid}")
        return raw

    def section(self, raw: Mapping[str, Any], key: str, allowed: Mapping[str, str]) -> dict[str, Any]:
        """An optional nested object (`network`, `metaflow`); null or absent means all defaults."""
        if raw.get(key) is None:
            return {}
        return self.obj(raw[key], key, allowed)

    def get(self, raw: Mapping[str, Any], path: str, key: str, kind: type[T], default: T) -> T:
        if key not in raw or raw[key] is None:
            return default
        value = raw[key]
        # bool is an int in Python; a config saying `"maxNodes": true` is a mistake.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            self.error(_join(path, key), f"must be {_TYPE_NAMES.get(kind, kind.__name__)}, got {_describe(value)}")
            return default
        return value

    def required(self, raw: Mapping[str, Any], path: str, key: str, kind: type[T], default: T, hint: str) -> T:
        if key not in raw or raw[key] is None:
            self.error(_join(path, key), f"is required; {hint}")
            return default
        return self.get(raw, path, key, kind, default)

    def str_list(self, raw: Mapping[str, Any], path: str, key: str) -> tuple[str, ...]:
        values = self.get(raw, path, key, list, [])
        out: list[str] = []
        for i, v in enumerate(values):
            if isinstance(v, str):
                out.append(v)
            else:
                self.error(f"{_join(path, key)}[{i}]", f"must be a string, got {_describe(v)}")
        return tuple(out)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, (int, float, str)):
        text = json.dumps(value)
        return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"
    return "a list" if isinstance(value, list) else "an object"


def _closest(key: str, candidates: list[str]) -> str | None:
    match = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    lowered = {c.lower(): c for c in candidates}
    return match[0] if match else lowered.get(key.lower())


_TOP = {
    "stackName": "CloudFormation stack name",
    "region": "AWS region",
    "account": "AWS account id",
    "availabilityZone": "the one AZ everything runs in",
    "network": "VPC, subnets and SSH access",
    "queues": "one entry per job queue",
    "metaflow": "Metaflow settings",
    "tags": "tags added to every resource",
}
_NETWORK = {
    "vpcId": "existing VPC",
    "subnetIds": "private subnets of vpcId",
    "vpcCidr": "CIDR of the VPC the kit creates",
    "sshSources": "CIDRs or sg- ids allowed on port 22",
    "allowSshFromAnywhere": "permit 0.0.0.0/0 or ::/0 in sshSources",
}
_CAPACITY = {
    "reservationId": "On-Demand Capacity Reservation id (cr-...)",
    "reservationGroupArn": "ARN of a resource group of capacity reservations",
    "capacityBlockId": "Capacity Block reservation id (cr-...)",
    "type": '"capacity-block" with capacityBlockId',
}
_CAPACITY_EXAMPLES = (
    '{"reservationId": "cr-..."}, {"reservationGroupArn": "arn:aws:resource-groups:..."} or '
    '{"capacityBlockId": "cr-...", "type": "capacity-block"}'
)
_QUEUE = {
    "name": "short queue name",
    "instanceType": "EC2 instance type",
    "maxNodes": "largest job in nodes",
    "minNodes": "instances kept running",
    "efaInterfaces": '"max" or a number',
    "rootVolumeGiB": "root volume size",
    "imageId": "AMI override",
    "capacityWaitMinutes": "cancel a job that waits this long for capacity",
    "capacity": "capacity reservation or Capacity Block to launch into",
    "placementGroup": "existing cluster placement group (the one the capacity reservation was created in)",
}
_METAFLOW = {"s3AccessRoleArn": "Metaflow task role", "profile": "Metaflow config profile name"}

_QUEUE_EXAMPLE = '{"name": "train", "instanceType": "p5.48xlarge", "maxNodes": 2}'


def parse_config(raw: Any, env: Mapping[str, str] | None = None) -> tuple[KitConfig, list[Finding]]:
    """Parse the raw `multinode` object into the model and every shape finding.

    The model is always returned, with defaults or placeholders ("" / 0) where a field was
    missing or malformed; callers must treat it as unusable when any finding is an error.
    The account defaults to CDK_DEFAULT_ACCOUNT and the region to CDK_DEFAULT_REGION in
    `env`. The cdk CLI sets CDK_DEFAULT_REGION from the AWS profile (us-east-1 when nothing
    is configured), so a region taken from there is reported as a warning: the user sees
    where the stack would go, and the AZ check catches a mismatch.
    """
    env = env or {}
    findings: list[Finding] = []
    r = _Reader(findings)
    if not isinstance(raw, dict):
        # Nothing below could be read: one finding, not one per required key.
        r.obj(raw, "", _TOP)
        return KitConfig(region="", availability_zone="", queues=()), findings
    top = r.obj(raw, "", _TOP)

    env_region = env.get("CDK_DEFAULT_REGION") or ""
    if top.get("region") is None and env_region:
        region = env_region
        findings.append(
            Finding(
                "warning",
                "region",
                f"not set; using {env_region!r} from CDK_DEFAULT_REGION (the AWS profile's "
                "region, or us-east-1 when none is configured): set region explicitly to be sure",
            )
        )
    else:
        region = r.required(top, "", "region", str, "", 'e.g. "us-east-1" (or set CDK_DEFAULT_REGION)')
    az = r.required(top, "", "availabilityZone", str, "", 'e.g. "us-east-1a"; every resource runs in this one AZ')
    account = r.get(top, "", "account", str, env.get("CDK_DEFAULT_ACCOUNT") or "") or None

    net_raw = r.section(top, "network", _NETWORK)
    network = NetworkConfig(
        vpc_id=r.get(net_raw, "network", "vpcId", str, "") or None,
        subnet_ids=r.str_list(net_raw, "network", "subnetIds"),
        vpc_cidr=r.get(net_raw, "network", "vpcCidr", str, NetworkConfig.vpc_cidr),
        ssh_sources=r.str_list(net_raw, "network", "sshSources"),
        allow_ssh_from_anywhere=r.get(net_raw, "network", "allowSshFromAnywhere", bool, False),
    )
    if network.vpc_id is not None and net_raw.get("vpcCidr") is not None:
        findings.append(
            Finding("warning", "network.vpcCidr", "is ignored with network.vpcId (the kit creates no VPC); remove it")
        )

    queue_list = r.required(top, "", "queues", list, [], f"a list with at least one queue, e.g. [{_QUEUE_EXAMPLE}]")
    if isinstance(top.get("queues"), list) and not queue_list:
        r.error("queues", f"needs at least one queue, e.g. [{_QUEUE_EXAMPLE}]")
    # One entry per raw queue, placeholders included, so that queues[i] in a validator's
    # finding is the i-th queue of the file.
    queues = tuple(_parse_queue(r, q_raw, f"queues[{i}]") for i, q_raw in enumerate(queue_list))

    mf_raw = r.section(top, "metaflow", _METAFLOW)
    metaflow = MetaflowConfig(
        s3_access_role_arn=r.get(mf_raw, "metaflow", "s3AccessRoleArn", str, "") or None,
        profile=r.get(mf_raw, "metaflow", "profile", str, MetaflowConfig.profile),
    )

    tags_raw = r.get(top, "", "tags", dict, {})
    tags: list[tuple[str, str]] = []
    for key, value in tags_raw.items():
        if isinstance(value, str):
            tags.append((str(key), value))
        else:
            r.error(f"tags.{key}", f"must be a string, got {_describe(value)}")

    stack_name = r.get(top, "", "stackName", str, KitConfig.stack_name)
    config = KitConfig(
        region=region,
        availability_zone=az,
        queues=queues,
        stack_name=stack_name,
        account=account,
        network=network,
        metaflow=metaflow,
        tags=tuple(sorted(tags)),
    )
    return config, findings


def _parse_queue(r: _Reader, raw: Any, path: str) -> QueueConfig:
    if not isinstance(raw, dict):
        r.error(path, f"must be an object like {_QUEUE_EXAMPLE}, got {_describe(raw)}")
        return QueueConfig(name="", instance_type="", max_nodes=0)
    r.obj(raw, path, _QUEUE)
    efa: int | Literal["max"] = "max"
    efa_raw = raw.get("efaInterfaces")
    if efa_raw is not None:
        if efa_raw == "max" or (isinstance(efa_raw, int) and not isinstance(efa_raw, bool)):
            efa = efa_raw
        else:
            r.error(f"{path}.efaInterfaces", f'must be "max" or a whole number, got {_describe(efa_raw)}')
    return QueueConfig(
        name=r.required(raw, path, "name", str, "", 'e.g. "train"'),
        instance_type=r.required(raw, path, "instanceType", str, "", 'e.g. "p5.48xlarge"'),
        max_nodes=r.required(raw, path, "maxNodes", int, 0, "the largest job, in nodes (at least 2)"),
        min_nodes=r.get(raw, path, "minNodes", int, 0),
        efa_interfaces=efa,
        root_volume_gib=r.get(raw, path, "rootVolumeGiB", int, QueueConfig.root_volume_gib),
        image_id=r.get(raw, path, "imageId", str, "") or None,
        capacity_wait_minutes=r.get(raw, path, "capacityWaitMinutes", int, QueueConfig.capacity_wait_minutes),
        capacity=_parse_capacity(r, raw, path),
        placement_group=r.get(raw, path, "placementGroup", str, "") or None,
    )


def _parse_capacity(r: _Reader, queue_raw: Mapping[str, Any], path: str) -> CapacityConfig | None:
    """One of the three capacity forms; the combinations AWS refuses are errors here."""
    if queue_raw.get("capacity") is None:
        return None
    cpath = f"{path}.capacity"
    raw = r.obj(queue_raw["capacity"], cpath, _CAPACITY)
    if not isinstance(queue_raw["capacity"], dict):
        return None
    reservation = r.get(raw, cpath, "reservationId", str, "") or None
    group = r.get(raw, cpath, "reservationGroupArn", str, "") or None
    block = r.get(raw, cpath, "capacityBlockId", str, "") or None
    kind = r.get(raw, cpath, "type", str, "") or None
    given = [
        k for k, v in (("reservationId", reservation), ("reservationGroupArn", group), ("capacityBlockId", block)) if v
    ]
    if len(given) != 1:
        # A launch template targets one reservation or one group (CapacityReservationTarget).
        what = "none" if not given else " and ".join(given)
        r.error(
            cpath,
            f"must name exactly one of reservationId, reservationGroupArn, capacityBlockId (got {what}); "
            f"e.g. {_CAPACITY_EXAMPLES}",
        )
        return None
    if block and kind != "capacity-block":
        r.error(
            f"{cpath}.type",
            'must be "capacity-block" with capacityBlockId (Capacity Blocks launch with market type capacity-block)',
        )
        return None
    if not block and kind is not None:
        r.error(f"{cpath}.type", f'{kind!r} is only valid as "capacity-block" together with capacityBlockId; remove it')
        return None
    if block:
        return CapacityConfig(kind="capacity-block", reservation_id=block)
    if group:
        return CapacityConfig(kind="reservation-group", reservation_group_arn=group)
    return CapacityConfig(kind="reservation", reservation_id=reservation)


def _read_json(path: Path, what: str) -> tuple[Any, list[Finding]]:
    """Parsed JSON of `path`, or one finding that says why it cannot be read."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, [Finding("error", what, f"file {str(path)!r} not found; pass an existing JSON file")]
    except IsADirectoryError:
        return None, [Finding("error", what, f"{str(path)!r} is a directory; pass a JSON file")]
    except UnicodeDecodeError as exc:
        return None, [Finding("error", what, f"{str(path)!r} is not UTF-8 text ({exc.reason}); save it as UTF-8 JSON")]
    except OSError as exc:
        return None, [Finding("error", what, f"cannot read {str(path)!r}: {exc.strerror or exc}")]
    try:
        return json.loads(text), []
    except json.JSONDecodeError as exc:
        return None, [
            Finding(
                "error", what, f"{str(path)!r} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
            )
        ]
    except (ValueError, RecursionError) as exc:
        # Python refuses integers of more than 4300 digits and nesting deeper than its stack.
        return None, [Finding("error", what, f"{str(path)!r} cannot be parsed: {exc}")]


def read_raw_config(config_file: str | Path | None, context: Mapping[str, Any] | None) -> tuple[Any, list[Finding]]:
    """The raw `multinode` object, from a file when one is given, else from cdk.json's context."""
    if config_file:
        return _read_json(Path(config_file), "config")
    if not isinstance(context, Mapping) or context.get("multinode") is None:
        return None, [
            Finding(
                "error",
                "multinode",
                "no config: add a `multinode` object to cdk.json's context, or pass a JSON file "
                "(`cdk synth -c config=FILE`, `python -m kit validate --config FILE`)",
            )
        ]
    return context["multinode"], []


def read_cdk_json_config(project_dir: Path) -> tuple[Any, list[Finding]]:
    """The raw `multinode` object of `project_dir`/cdk.json's context, never raising."""
    data, findings = _read_json(project_dir / "cdk.json", "cdk.json")
    if findings:
        return None, findings
    context = data.get("context") if isinstance(data, dict) else None
    return read_raw_config(None, context if isinstance(context, dict) else None)


def load_cdk_json_context(project_dir: Path) -> dict[str, Any]:
    path = project_dir / "cdk.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    context: dict[str, Any] = data.get("context", {})
    return context
