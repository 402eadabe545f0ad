"""The kit's one deployable unit: a dedicated AWS Batch environment for multi-node (EFA)
training in one Availability Zone.

Shared: the VPC (or the given one), the EFA security group, the container-instance role.
Per queue: a cluster placement group, an EFA launch template, a managed EC2 compute
environment and its job queue. Outputs: everything `python -m kit metaflow-config`,
`doctor` and `smoke` read back.
"""

from __future__ import annotations

from pathlib import Path

from aws_cdk import Acknowledgment, CfnOutput, Environment, Fn, Stack, Tags, Validations
from aws_cdk import aws_ec2 as ec2
from constructs import Construct

from constructs_lib.efa_launch_template import EfaLaunchTemplate
from constructs_lib.efa_security_group import EfaSecurityGroup
from constructs_lib.instance_role import ECS_INSTANCE_POLICY, BatchInstanceRole
from constructs_lib.multinode_queue import MultinodeQueue
from constructs_lib.network import MultinodeVpc
from constructs_lib.placement_group import ClusterPlacementGroup
from stacks import outputs as out
from stacks.config import KitConfig
from stacks.plan import QueuePlan, private_subnet_prefix

REPLACED_ON_TAG_CHANGE = ("AWS::Batch::ComputeEnvironment", "AWS::EC2::PlacementGroup")
LAUNCH_TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "launch_templates"


def user_data_scripts() -> list[Path]:
    """The host set-up scripts, in the order their names give."""
    return sorted(LAUNCH_TEMPLATE_DIR.glob("*.sh"))


class MultinodeStack(Stack):
    """Attributes: `vpc`, `subnet_ids`, `security_group`, `queues` (name -> constructs)."""

    def __init__(self, scope: Construct, construct_id: str, *, config: KitConfig, plans: tuple[QueuePlan, ...]) -> None:
        self._availability_zone = config.availability_zone
        super().__init__(
            scope,
            construct_id,
            stack_name=config.stack_name,
            env=Environment(account=config.account, region=config.region),
            description="Metaflow multi-node (EFA) AWS Batch environment",
        )
        tags = {"metaflow-multinode:stack": config.stack_name, **dict(config.tags)}
        Tags.of(self).add("metaflow-multinode:stack", config.stack_name)
        for key, value in config.tags:
            # Tags are create-only on these: a changed tag would replace the CE (new ARN) or the
            # placement group (whose delete fails while instances are in it). Instances still get
            # every tag, through ComputeResources.Tags and the launch template.
            Tags.of(self).add(key, value, exclude_resource_types=list(REPLACED_ON_TAG_CHANGE))

        if config.creates_vpc:
            network = MultinodeVpc(
                self,
                "Network",
                cidr=config.network.vpc_cidr,
                availability_zone=config.availability_zone,
                private_subnet_prefix=private_subnet_prefix(sum(p.addresses for p in plans)),
            )
            self.vpc: ec2.IVpc = network.vpc
            self.subnet_ids = [s.subnet_id for s in network.private_subnets]
        else:
            # Ids are taken as given: no lookup, so synth needs no credentials.
            self.vpc = ec2.Vpc.from_vpc_attributes(
                self,
                "ImportedVpc",
                vpc_id=config.network.vpc_id or "",
                availability_zones=[config.availability_zone],
                private_subnet_ids=list(config.network.subnet_ids),
            )
            self.subnet_ids = list(config.network.subnet_ids)

        self.security_group = EfaSecurityGroup(
            self, "EfaSecurityGroup", vpc=self.vpc, ssh_sources=config.network.ssh_sources
        ).security_group
        instance_role = BatchInstanceRole(self, "InstanceRole")
        Validations.of(instance_role.role).acknowledge(
            Acknowledgment(
                id=f"AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/{ECS_INSTANCE_POLICY}]",
                reason="AWS Batch container instances need the ECS agent's AWS-managed policy (register the "
                "instance, pull from ECR, write logs); AWS maintains it as the ECS API evolves. Job permissions "
                "live in the job role, not here.",
            )
        )

        self.queues: dict[str, MultinodeQueue] = {}
        scripts = user_data_scripts()
        for plan in plans:
            self._add_queue(plan, instance_role, scripts, tags)
        self._add_stack_outputs(config, plans)

    @property
    def availability_zones(self) -> list[str]:
        """The one configured AZ. Without this override a stack with a concrete account asks
        the CLI for an AZ lookup (network call, credentials) at synth."""
        return [self._availability_zone]

    def _add_queue(
        self, plan: QueuePlan, instance_role: BatchInstanceRole, scripts: list[Path], tags: dict[str, str]
    ) -> None:
        q, key = plan.queue, plan.id_name
        # An existing group when the config names one (the group a capacity reservation was
        # created in); otherwise a new cluster group for this queue.
        placement_name = q.placement_group or ClusterPlacementGroup(self, f"{key}PlacementGroup").name
        template = EfaLaunchTemplate(
            self,
            f"{key}LaunchTemplate",
            slots=plan.slots,
            security_group_id=self.security_group.security_group_id,
            root_volume_gib=q.root_volume_gib,
            user_data_scripts=scripts,
            tags={**tags, "metaflow-multinode:queue": q.name},
            capacity_reservation_id=q.capacity.reservation_id if q.capacity else None,
            capacity_reservation_group_arn=q.capacity.reservation_group_arn if q.capacity else None,
            capacity_block=q.capacity is not None and q.capacity.kind == "capacity-block",
        )
        queue = MultinodeQueue(
            self,
            f"{key}Queue",
            instance_type=q.instance_type,
            min_vcpus=plan.min_vcpus,
            max_vcpus=plan.max_vcpus,
            subnet_ids=self.subnet_ids,
            instance_profile_arn=instance_role.instance_profile_arn,
            launch_template_id=template.launch_template_id,
            launch_template_version=template.version,
            placement_group_name=placement_name,
            capacity_wait_seconds=q.capacity_wait_minutes * 60,
            image_id=q.image_id,
            tags={**tags, "metaflow-multinode:queue": q.name},
        )
        self.queues[q.name] = queue
        values = {
            "JobQueueArn": queue.job_queue_arn,
            "JobQueueName": queue.job_queue_name,
            "ComputeEnvironmentArn": queue.compute_environment_arn,
            "EfaInterfaces": str(plan.efa_count),
            "GpusPerNode": str(plan.facts.gpus),
            "InstanceType": q.instance_type,
            "MaxNodes": str(q.max_nodes),
            "PlacementGroupName": placement_name,
            "LaunchTemplateId": template.launch_template_id,
            "LaunchTemplateVersion": template.version,
        }
        for field in out.QUEUE_FIELDS:
            CfnOutput(self, out.queue_key(key, field), value=values[field], description=f"queue {q.name}: {field}")

    def _add_stack_outputs(self, config: KitConfig, plans: tuple[QueuePlan, ...]) -> None:
        CfnOutput(self, out.VPC_ID, value=self.vpc.vpc_id)
        CfnOutput(self, out.SECURITY_GROUP_ID, value=self.security_group.security_group_id)
        CfnOutput(self, out.SUBNET_IDS, value=Fn.join(",", self.subnet_ids))
        CfnOutput(self, out.AVAILABILITY_ZONE, value=config.availability_zone)
        CfnOutput(self, out.QUEUE_NAMES, value=",".join(p.queue.name for p in plans))
        CfnOutput(self, out.METAFLOW_PROFILE, value=config.metaflow.profile)
        if config.metaflow.s3_access_role_arn:
            CfnOutput(self, out.S3_ACCESS_ROLE_ARN, value=config.metaflow.s3_access_role_arn)
