"""A cluster placement group: all EFA instances of one job must share one (aws-facts.md, EFA)."""

from __future__ import annotations

from aws_cdk import aws_ec2 as ec2
from constructs import Construct


class ClusterPlacementGroup(Construct):
    """Attributes: `placement_group`, `name` (CloudFormation generates the name, so a
    replacement never conflicts with the old one)."""

    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        self.placement_group = ec2.CfnPlacementGroup(self, "Group", strategy="cluster")
        self.name: str = self.placement_group.ref
