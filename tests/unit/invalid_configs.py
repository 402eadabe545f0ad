"""Config tables shared by the validator, CLI and synth tests.

INVALID: one rule broken per case (plus a few with several mistakes), each with the exact
set of key paths that must be reported as errors. WARNINGS: configs that are deployable but
earn a warning, with the warning paths and words the message must contain. VALID: inline
configs for the shapes a user starts from.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

DROP = object()  # marks a key to delete

BASE: dict[str, Any] = {
    "region": "us-east-1",
    "availabilityZone": "us-east-1a",
    "queues": [{"name": "train", "instanceType": "p4d.24xlarge", "maxNodes": 4}],
}
IMPORTED: dict[str, Any] = {"vpcId": "vpc-0a1b2c3d4e5f67890", "subnetIds": ["subnet-0a1b2c3d4e5f67890"]}


def _apply(target: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    for key, value in changes.items():
        if value is DROP:
            target.pop(key, None)
        else:
            target[key] = value
    return target


def top(**changes: Any) -> dict[str, Any]:
    """BASE with top-level keys replaced (or dropped with DROP)."""
    return _apply(copy.deepcopy(BASE), changes)


def queue(_top: dict[str, Any] | None = None, **changes: Any) -> dict[str, Any]:
    """BASE (or `_top` changes to it) with fields of queues[0] replaced."""
    cfg = top(**(_top or {}))
    _apply(cfg["queues"][0], changes)
    return cfg


def network(**fields: Any) -> dict[str, Any]:
    return top(network=fields)


def queues(*entries: dict[str, Any], net: dict[str, Any] | None = None) -> dict[str, Any]:
    cfg = top(queues=list(entries))
    if net is not None:
        cfg["network"] = net
    return cfg


def q(name: str, instance_type: str = "p4d.24xlarge", max_nodes: int = 2, **extra: Any) -> dict[str, Any]:
    return {"name": name, "instanceType": instance_type, "maxNodes": max_nodes, **extra}


@dataclass(frozen=True)
class Case:
    id: str
    config: Any
    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    contains: tuple[str, ...] = field(default=())


GROUP_ARN = "arn:aws:resource-groups:us-east-1:123456789012:group/gpu-reservations"


def _typo_queue() -> dict[str, Any]:
    cfg = queue(instanceType=DROP)
    cfg["queues"][0]["instanceTyp"] = "p4d.24xlarge"
    return cfg


INVALID: tuple[Case, ...] = (
    # shapes: unknown keys and wrong types
    Case("unknown-top-key", top(regoin="us-east-1"), ("regoin",)),
    Case("unknown-queue-key", _typo_queue(), ("queues[0].instanceTyp", "queues[0].instanceType")),
    Case("unknown-network-key", network(vpcID="vpc-0a1b2c3d4e5f67890"), ("network.vpcID",)),
    Case("unknown-metaflow-key", top(metaflow={"profil": "p5"}), ("metaflow.profil",)),
    Case("config-is-a-list", [BASE], ("(config)",)),
    Case("maxNodes-as-string", queue(maxNodes="4"), ("queues[0].maxNodes",)),
    Case("maxNodes-as-bool", queue(maxNodes=True), ("queues[0].maxNodes",)),
    Case("minNodes-as-float", queue(minNodes=1.5), ("queues[0].minNodes",)),
    Case("efaInterfaces-unknown-word", queue(efaInterfaces="all"), ("queues[0].efaInterfaces",)),
    Case("network-is-a-list", top(network=["10.40.0.0/16"]), ("network",)),
    Case("sshSources-is-a-string", network(sshSources="203.0.113.0/24"), ("network.sshSources",)),
    Case("allowSsh-as-string", network(allowSshFromAnywhere="true"), ("network.allowSshFromAnywhere",)),
    Case("tag-value-a-number", top(tags={"team": 7}), ("tags.team",)),
    Case("queue-is-a-string", top(queues=["train"]), ("queues[0]",)),
    # region and AZ
    Case("region-missing", top(region=DROP), ("region",)),
    Case("az-missing", top(availabilityZone=DROP), ("availabilityZone",)),
    Case("region-unknown", top(region="us-eats-1"), ("region",)),
    Case("region-malformed", top(region="US East"), ("region",)),
    Case("az-of-another-region", top(availabilityZone="us-west-2a"), ("availabilityZone",)),
    # queues and their names
    Case("queues-empty", top(queues=[]), ("queues",)),
    Case("queues-missing", top(queues=DROP), ("queues",)),
    Case("queue-names-duplicate", queues(q("train"), q("train")), ("queues[1].name",)),
    Case("queue-names-same-resource-ids", queues(q("a1"), q("a-1")), ("queues[1].name",)),
    Case("queue-name-not-a-resource-name", queue(name="Train_A"), ("queues[0].name",)),
    Case("queue-name-trailing-hyphen", queue(name="train-"), ("queues[0].name",)),
    Case(
        "too-many-queues-for-cloudformation-outputs",
        queues(*(q(f"q{i}") for i in range(20)), net=IMPORTED),
        ("queues",),
    ),
    # instance types and EFA
    Case("instance-type-unknown", queue(instanceType="p5.48xl"), ("queues[0].instanceType",)),
    Case("instance-type-without-efa", queue(instanceType="g5.xlarge"), ("queues[0].instanceType",)),
    Case("instance-type-without-cluster-placement", queue(instanceType="vt1.24xlarge"), ("queues[0].instanceType",)),
    Case(
        "instance-type-too-few-interfaces-on-card-0", queue(instanceType="hpc6id.32xlarge"), ("queues[0].instanceType",)
    ),
    Case("efaInterfaces-above-card-count", queue(efaInterfaces=5), ("queues[0].efaInterfaces",)),
    Case("efaInterfaces-zero", queue(efaInterfaces=0), ("queues[0].efaInterfaces",)),
    Case(
        "efaInterfaces-above-type-maximum",
        queue(instanceType="i7ie.48xlarge", efaInterfaces=2),
        ("queues[0].efaInterfaces",),
    ),
    Case("trainium-without-imageId", queue(instanceType="trn1.32xlarge"), ("queues[0].imageId",)),
    Case("imageId-malformed", queue(imageId="ami-xyz"), ("queues[0].imageId",)),
    # node counts and sizes
    Case("maxNodes-one", queue(maxNodes=1), ("queues[0].maxNodes",)),
    Case("maxNodes-below-minNodes", queue(maxNodes=2, minNodes=3), ("queues[0].maxNodes",)),
    Case("minNodes-negative", queue(minNodes=-1), ("queues[0].minNodes",)),
    Case("maxvCpus-overflow", queue({"network": IMPORTED}, maxNodes=30_000_000), ("queues[0].maxNodes",)),
    Case("rootVolume-too-small", queue(rootVolumeGiB=8), ("queues[0].rootVolumeGiB",)),
    Case("rootVolume-above-gp3-maximum", queue(rootVolumeGiB=20_000), ("queues[0].rootVolumeGiB",)),
    Case("capacityWait-too-short", queue(capacityWaitMinutes=5), ("queues[0].capacityWaitMinutes",)),
    # network
    Case("vpcId-without-subnetIds", network(vpcId="vpc-0a1b2c3d4e5f67890"), ("network.subnetIds",)),
    Case("subnetIds-without-vpcId", network(subnetIds=["subnet-0a1b2c3d4e5f67890"]), ("network.vpcId",)),
    Case("vpcId-malformed", network(vpcId="vpc-12", subnetIds=IMPORTED["subnetIds"]), ("network.vpcId",)),
    Case(
        "subnetId-malformed",
        network(vpcId=IMPORTED["vpcId"], subnetIds=["subnet-0a1b2c3d4e5f67890", "subnet-XYZ"]),
        ("network.subnetIds[1]",),
    ),
    Case(
        "subnetIds-duplicate",
        network(vpcId=IMPORTED["vpcId"], subnetIds=IMPORTED["subnetIds"] * 2),
        ("network.subnetIds",),
    ),
    Case("vpcCidr-not-a-cidr", network(vpcCidr="10.40.0.0/33"), ("network.vpcCidr",)),
    Case("vpcCidr-host-bits-set", network(vpcCidr="10.40.0.1/16"), ("network.vpcCidr",)),
    Case("vpcCidr-too-small-for-two-subnets", network(vpcCidr="10.40.0.0/24"), ("network.vpcCidr",)),
    Case(
        "private-subnet-cannot-hold-max-nodes",
        queue({"network": {"vpcCidr": "10.40.0.0/23"}}, maxNodes=200),
        ("network.vpcCidr",),
    ),
    Case(
        "two-queues-overflow-the-private-subnet",
        queues(q("a", max_nodes=100), q("b", max_nodes=100), net={"vpcCidr": "10.40.0.0/23"}),
        ("network.vpcCidr",),
    ),
    Case("ssh-from-anywhere-ipv4", network(sshSources=["0.0.0.0/0"]), ("network.sshSources[0]",)),
    Case("ssh-from-anywhere-ipv6", network(sshSources=["203.0.113.0/24", "::/0"]), ("network.sshSources[1]",)),
    Case("ssh-source-not-a-cidr", network(sshSources=["office"]), ("network.sshSources[0]",)),
    Case("ssh-source-without-prefix", network(sshSources=["203.0.113.7"]), ("network.sshSources[0]",)),
    Case("ssh-source-host-bits-set", network(sshSources=["203.0.113.7/24"]), ("network.sshSources[0]",)),
    Case("ssh-source-bad-security-group", network(sshSources=["sg-xyz"]), ("network.sshSources[0]",)),
    # names, ids, tags
    Case("stackName-invalid", top(stackName="1-stack"), ("stackName",)),
    Case("account-invalid", top(account="12345"), ("account",)),
    Case("role-arn-invalid", top(metaflow={"s3AccessRoleArn": "metaflow-task"}), ("metaflow.s3AccessRoleArn",)),
    Case("metaflow-profile-invalid", top(metaflow={"profile": "my profile"}), ("metaflow.profile",)),
    Case("tag-key-aws-prefix", top(tags={"aws:team": "ml"}), ("tags.aws:team",)),
    Case("tag-key-reserved-by-kit", top(tags={"metaflow-multinode:queue": "x"}), ("tags.metaflow-multinode:queue",)),
    Case("tag-value-bad-characters", top(tags={"team": "ml<platform>"}), ("tags.team",)),
    # several mistakes at once: every one is reported in the same run
    Case("empty-object", {}, ("region", "availabilityZone", "queues")),
    Case(
        "several-mistakes",
        {
            "region": "us-eats-1",
            "availabilityZone": "us-east-1a",
            "network": {"sshSources": ["0.0.0.0/0"]},
            "queues": [q("train", max_nodes=1), q("train", "p5.48xl")],
        },
        ("region", "network.sshSources[0]", "queues[0].maxNodes", "queues[1].name", "queues[1].instanceType"),
    ),
    Case(
        "garbage-everywhere",
        {
            "region": 5,
            "availabilityZone": None,
            "network": {"vpcId": 3, "allowSshFromAnywhere": "yes"},
            "queues": [{"name": 5, "instanceType": None, "maxNodes": "x", "efaInterfaces": [1]}, None],
            "tags": [],
        },
        (
            "region",
            "availabilityZone",
            "network.vpcId",
            "network.allowSshFromAnywhere",
            "queues[0].name",
            "queues[0].instanceType",
            "queues[0].maxNodes",
            "queues[0].efaInterfaces",
            "queues[1]",
            "tags",
        ),
    ),
    Case(
        "typo-and-ranges-in-one-queue",
        queue(minNodes=-2, efaInterface=4, rootVolumeGiB=10),
        ("queues[0].minNodes", "queues[0].efaInterface", "queues[0].rootVolumeGiB"),
    ),
    # capacity (issue 7): combinations AWS refuses
    Case("capacity-not-object", queue(capacity="cr-0123456789abcdef0"), ("queues[0].capacity",)),
    Case("capacity-empty", queue(capacity={}), ("queues[0].capacity",)),
    Case(
        "capacity-two-targets",
        queue(capacity={"reservationId": "cr-0123456789abcdef0", "reservationGroupArn": GROUP_ARN}),
        ("queues[0].capacity",),
    ),
    Case(
        "capacity-unknown-key",
        queue(capacity={"reservationID": "cr-0123456789abcdef0"}),
        ("queues[0].capacity.reservationID", "queues[0].capacity"),
    ),
    Case(
        "capacity-bad-reservation-id",
        queue(capacity={"reservationId": "r-123"}, placementGroup="pg-a"),
        ("queues[0].capacity.reservationId",),
    ),
    Case(
        "capacity-bad-group-arn",
        queue(capacity={"reservationGroupArn": "arn:aws:iam::123456789012:group/x"}, placementGroup="pg-a"),
        ("queues[0].capacity.reservationGroupArn",),
    ),
    Case(
        "capacity-block-without-type",
        queue(capacity={"capacityBlockId": "cr-0123456789abcdef0"}),
        ("queues[0].capacity.type",),
    ),
    Case(
        "capacity-type-without-block",
        queue(capacity={"reservationId": "cr-0123456789abcdef0", "type": "capacity-block"}),
        ("queues[0].capacity.type",),
    ),
    Case(
        "capacity-block-type-not-sold-as-blocks",
        queue(
            instanceType="g6e.48xlarge", capacity={"capacityBlockId": "cr-0123456789abcdef0", "type": "capacity-block"}
        ),
        ("queues[0].instanceType",),
    ),
    Case(
        "capacity-reservation-without-its-placement-group",
        queue(capacity={"reservationId": "cr-0123456789abcdef0"}),
        ("queues[0].placementGroup",),
    ),
    Case(
        "capacity-group-without-its-placement-group",
        queue(capacity={"reservationGroupArn": GROUP_ARN}),
        ("queues[0].placementGroup",),
    ),
    Case(
        "placement-group-arn-instead-of-name",
        queue(placementGroup="arn:aws:ec2:us-east-1:123456789012:placement-group/x"),
        ("queues[0].placementGroup",),
    ),
)


WARNINGS: tuple[Case, ...] = (
    Case(
        "capacity-reservation-placement",
        queue(capacity={"reservationId": "cr-0123456789abcdef0"}, placementGroup="odcr-cluster-a"),
        warnings=("queues[0].capacity",),
        contains=("created in placement group 'odcr-cluster-a'",),
    ),
    Case(
        "capacity-block-min-nodes",
        queue(minNodes=1, capacity={"capacityBlockId": "cr-0123456789abcdef0", "type": "capacity-block"}),
        warnings=("queues[0].minNodes", "queues[0].minNodes", "queues[0].capacity"),
        contains=("time window", "block ends"),
    ),
    Case(
        "ssh-from-anywhere-allowed",
        network(sshSources=["0.0.0.0/0"], allowSshFromAnywhere=True),
        warnings=("network.allowSshFromAnywhere",),
        contains=("whole internet",),
    ),
    Case(
        "efa-below-max-p4d",
        queue(efaInterfaces=2),
        warnings=("queues[0].efaInterfaces",),
        contains=("2 of 4 EFA interfaces", "200 of 400 Gbps"),
    ),
    Case(
        "p5-partial-layout",
        queue(instanceType="p5.48xlarge", efaInterfaces=8),
        warnings=("queues[0].efaInterfaces", "queues[0].efaInterfaces"),
        contains=("2400 of 3200 Gbps", "P5 and P5e"),
    ),
    Case(
        "minNodes-idle-instances",
        queue(minNodes=1),
        warnings=("queues[0].minNodes",),
        contains=("8 GPUs each", "no price data"),
    ),
    Case(
        "maxNodes-above-default-job-limit",
        queue({"network": IMPORTED}, maxNodes=1500),
        warnings=("queues[0].maxNodes",),
        contains=("1000 nodes",),
    ),
    Case(
        "cpu-only-instance-type",
        queue(instanceType="c5n.18xlarge"),
        warnings=("queues[0].instanceType",),
        contains=("no GPU",),
    ),
    Case("vpcCidr-public-range", network(vpcCidr="11.0.0.0/16"), warnings=("network.vpcCidr",), contains=("RFC 1918",)),
    Case(
        "vpcCidr-docker-bridge",
        network(vpcCidr="172.17.0.0/16"),
        warnings=("network.vpcCidr",),
        contains=("Docker",),
    ),
    Case(
        "vpcCidr-ignored-with-vpcId",
        network(vpcCidr="10.1.0.0/16", **IMPORTED),
        warnings=("network.vpcCidr",),
        contains=("ignored",),
    ),
    Case(
        "ssh-sources-above-rule-quota",
        network(sshSources=[f"203.0.113.{i}/32" for i in range(60)]),
        warnings=("network.sshSources",),
        contains=("60 inbound rules",),
    ),
)


VALID: tuple[Case, ...] = (
    Case("p4d-new-vpc", top(stackName="mn-p4d", region="us-west-2", availabilityZone="us-west-2b")),
    Case("p5-max-efa", queue(instanceType="p5.48xlarge", maxNodes=16, efaInterfaces=32)),
    Case("imported-vpc", queue({"network": IMPORTED, "account": "123456789012"}, instanceType="g6e.48xlarge")),
    Case(
        "two-queues",
        queues(q("b300", "p6-b300.48xlarge", 4), q("h200", "p5en.48xlarge", 8, rootVolumeGiB=500)),
    ),
    Case(
        "trainium-with-image",
        queue(instanceType="trn2.48xlarge", imageId="ami-0abc1234def567890", capacityWaitMinutes=1440),
    ),
    Case(
        "everything-set",
        {
            "stackName": "mn-all",
            "region": "eu-west-1",
            "account": "123456789012",
            "availabilityZone": "eu-west-1c",
            "network": {"vpcCidr": "10.8.0.0/20", "sshSources": ["203.0.113.0/24", "2001:db8::/32", "sg-0123abcd"]},
            "queues": [q("a100", max_nodes=64, efaInterfaces="max", rootVolumeGiB=30, capacityWaitMinutes=10)],
            "metaflow": {"s3AccessRoleArn": "arn:aws:iam::123456789012:role/metaflow-task", "profile": "mn_all"},
            "tags": {"team": "ml platform", "cost-center": "r+d"},
        },
    ),
)
