"""Names of the stack outputs: the contract between the stack and the kit's commands
(metaflow-config, doctor, smoke), which read them back with boto3. No aws_cdk import."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# Stack-wide outputs.
VPC_ID = "VpcId"
SECURITY_GROUP_ID = "SecurityGroupId"
SUBNET_IDS = "SubnetIds"  # comma-separated
AVAILABILITY_ZONE = "AvailabilityZone"
QUEUE_NAMES = "QueueNames"  # comma-separated config names, in config order
S3_ACCESS_ROLE_ARN = "S3AccessRoleArn"  # only when metaflow.s3AccessRoleArn is set
METAFLOW_PROFILE = "MetaflowProfile"

# Per-queue outputs: the key is the queue's PascalCase name + the field, e.g. "TrainJobQueueArn".
QUEUE_FIELDS = (
    "JobQueueArn",
    "JobQueueName",
    "ComputeEnvironmentArn",
    "EfaInterfaces",  # the efa= value for @batch
    "GpusPerNode",
    "InstanceType",
    "MaxNodes",
    "PlacementGroupName",
    "LaunchTemplateId",
    "LaunchTemplateVersion",
)


def queue_key(queue_id_name: str, field: str) -> str:
    if field not in QUEUE_FIELDS:
        raise KeyError(field)
    return f"{queue_id_name}{field}"


@dataclass(frozen=True)
class QueueOutputs:
    name: str
    job_queue_arn: str
    job_queue_name: str
    compute_environment_arn: str
    efa_interfaces: int
    gpus_per_node: int
    instance_type: str
    max_nodes: int
    placement_group_name: str
    launch_template_id: str
    launch_template_version: str


@dataclass(frozen=True)
class StackOutputs:
    vpc_id: str
    security_group_id: str
    subnet_ids: tuple[str, ...]
    availability_zone: str
    metaflow_profile: str
    s3_access_role_arn: str | None
    queues: tuple[QueueOutputs, ...]

    def queue(self, name: str) -> QueueOutputs | None:
        return next((q for q in self.queues if q.name == name), None)


def parse_outputs(outputs: Iterable[Mapping[str, str]] | Mapping[str, str]) -> StackOutputs:
    """From CloudFormation DescribeStacks `Outputs` (list of OutputKey/OutputValue) or a
    plain key->value mapping. Raises KeyError naming the first missing output."""
    values = dict(outputs) if isinstance(outputs, Mapping) else {o["OutputKey"]: o["OutputValue"] for o in outputs}
    from stacks.plan import pascal

    queues = []
    for name in filter(None, values[QUEUE_NAMES].split(",")):
        p = pascal(name)
        queues.append(
            QueueOutputs(
                name=name,
                job_queue_arn=values[queue_key(p, "JobQueueArn")],
                job_queue_name=values[queue_key(p, "JobQueueName")],
                compute_environment_arn=values[queue_key(p, "ComputeEnvironmentArn")],
                efa_interfaces=int(values[queue_key(p, "EfaInterfaces")]),
                gpus_per_node=int(values[queue_key(p, "GpusPerNode")]),
                instance_type=values[queue_key(p, "InstanceType")],
                max_nodes=int(values[queue_key(p, "MaxNodes")]),
                placement_group_name=values[queue_key(p, "PlacementGroupName")],
                launch_template_id=values[queue_key(p, "LaunchTemplateId")],
                launch_template_version=values[queue_key(p, "LaunchTemplateVersion")],
            )
        )
    return StackOutputs(
        vpc_id=values[VPC_ID],
        security_group_id=values[SECURITY_GROUP_ID],
        subnet_ids=tuple(filter(None, values[SUBNET_IDS].split(","))),
        availability_zone=values[AVAILABILITY_ZONE],
        metaflow_profile=values[METAFLOW_PROFILE],
        s3_access_role_arn=values.get(S3_ACCESS_ROLE_ARN),
        queues=tuple(queues),
    )
