"""A managed EC2 Batch compute environment and the job queue dedicated to it, for AWS Batch
multi-node parallel (MNP) jobs.

CloudFormation (L1) resources on purpose: the CDK L2 ManagedEc2EcsComputeEnvironment adds
"optimal" to the instance types, always sends SecurityGroupIds and pins no launch-template
version, each of which breaks an MNP/EFA environment (aws-facts.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from aws_cdk import Fn
from aws_cdk import aws_batch as batch
from constructs import Construct

# Batch's GPU image for AL2023; AL2 AMIs are out of support since 2026-06-30 (aws-facts.md).
GPU_IMAGE_TYPE = "ECS_AL2023_NVIDIA"
# An MNP job that can never run blocks the whole queue: cancel it when Batch says so.
MISCONFIGURATION_REASONS = (
    "MISCONFIGURATION:COMPUTE_ENVIRONMENT_MAX_RESOURCE",
    "MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT",
)
MISCONFIGURATION_WAIT_SECONDS = 600  # the shortest time Batch accepts
CAPACITY_REASON = "CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY"
UPDATE_JOB_TIMEOUT_MINUTES = 360  # CloudFormation's maximum for UpdatePolicy.JobExecutionTimeoutMinutes


class MultinodeQueue(Construct):
    """Attributes: `compute_environment`, `compute_environment_arn`, `job_queue`,
    `job_queue_arn`, `job_queue_name`."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        instance_type: str,
        min_vcpus: int,
        max_vcpus: int,
        subnet_ids: Sequence[str],
        instance_profile_arn: str,
        launch_template_id: str,
        launch_template_version: str,
        placement_group_name: str,
        capacity_wait_seconds: int,
        image_id: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        # No name (a fixed name makes replacement fail) and no ServiceRole: the
        # service-linked role is what allows in-place updates (aws-facts.md).
        self.compute_environment = batch.CfnComputeEnvironment(
            self,
            "ComputeEnvironment",
            type="MANAGED",
            state="ENABLED",
            # Update in place rather than replace: a CE attached to a queue cannot be
            # swapped by CloudFormation without first detaching it.
            replace_compute_environment=False,
            # An infrastructure update (new launch-template version, AMI roll) lets running
            # jobs finish for this long before it replaces their instances: multi-node training
            # runs for hours, so the longest CloudFormation accepts.
            update_policy=batch.CfnComputeEnvironment.UpdatePolicyProperty(
                terminate_jobs_on_update=False, job_execution_timeout_minutes=UPDATE_JOB_TIMEOUT_MINUTES
            ),
            compute_resources=batch.CfnComputeEnvironment.ComputeResourcesProperty(
                # MNP runs only on MANAGED EC2 environments: not SPOT, not FARGATE.
                type="EC2",
                # BEST_FIT blocks in-place updates.
                allocation_strategy="BEST_FIT_PROGRESSIVE",
                # Every node of an MNP job is the same type: exactly one, never "optimal".
                instance_types=[instance_type],
                minv_cpus=min_vcpus,
                maxv_cpus=max_vcpus,
                subnets=list(subnet_ids),
                instance_role=instance_profile_arn,
                placement_group=placement_group_name,
                launch_template=batch.CfnComputeEnvironment.LaunchTemplateSpecificationProperty(
                    launch_template_id=launch_template_id,
                    version=launch_template_version,
                ),
                ec2_configuration=[
                    batch.CfnComputeEnvironment.Ec2ConfigurationObjectProperty(
                        image_type=GPU_IMAGE_TYPE, image_id_override=image_id
                    )
                ],
                update_to_latest_image_version=image_id is None,
                tags=dict(tags) if tags else None,
                # No security_group_ids: the launch template's interfaces carry the group,
                # and AWS rejects a CE that sends both (aws/aws-cdk#21577).
            ),
        )
        self.compute_environment_arn: str = self.compute_environment.ref

        time_limits = [
            batch.CfnJobQueue.JobStateTimeLimitActionProperty(
                action="CANCEL", state="RUNNABLE", reason=reason, max_time_seconds=MISCONFIGURATION_WAIT_SECONDS
            )
            for reason in MISCONFIGURATION_REASONS
        ]
        time_limits.append(
            batch.CfnJobQueue.JobStateTimeLimitActionProperty(
                action="CANCEL", state="RUNNABLE", reason=CAPACITY_REASON, max_time_seconds=capacity_wait_seconds
            )
        )
        self.job_queue = batch.CfnJobQueue(
            self,
            "JobQueue",
            priority=1,
            state="ENABLED",
            compute_environment_order=[
                batch.CfnJobQueue.ComputeEnvironmentOrderProperty(
                    order=1, compute_environment=self.compute_environment_arn
                )
            ],
            job_state_time_limit_actions=time_limits,
            tags=dict(tags) if tags else None,
        )
        # Ref of a job queue is its ARN; the name is the ARN's last segment.
        self.job_queue_arn: str = self.job_queue.ref
        self.job_queue_name: str = Fn.select(1, Fn.split("/", self.job_queue_arn))
