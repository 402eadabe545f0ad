"""The IAM role and instance profile of the Batch container instances (ECS agent)."""

from __future__ import annotations

from aws_cdk import aws_iam as iam
from constructs import Construct

ECS_INSTANCE_POLICY = "service-role/AmazonEC2ContainerServiceforEC2Role"


class BatchInstanceRole(Construct):
    """Attributes: `role`, `instance_profile`, `instance_profile_arn`.

    Only the ECS agent's managed policy: the job's own permissions belong to the job role
    (Metaflow's METAFLOW_ECS_S3_ACCESS_IAM_ROLE), not to the host.
    """

    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"),
            description="AWS Batch container instances: ECS agent registration, image pulls, logs",
            managed_policies=[iam.ManagedPolicy.from_aws_managed_policy_name(ECS_INSTANCE_POLICY)],
        )
        self.instance_profile = iam.InstanceProfile(self, "Profile", role=self.role)
        self.instance_profile_arn: str = self.instance_profile.instance_profile_arn
