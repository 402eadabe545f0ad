"""The EFA security group: members talk to each other on all traffic, SSH from chosen sources."""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import aws_ec2 as ec2
from constructs import Construct


def ssh_peer(source: str) -> ec2.IPeer:
    if source.startswith("sg-"):
        return ec2.Peer.security_group_id(source)
    return ec2.Peer.ipv6(source) if ":" in source else ec2.Peer.ipv4(source)


class EfaSecurityGroup(Construct):
    """Attribute: `security_group`.

    EFA needs ALL traffic inbound from the group itself AND outbound to itself
    (aws-facts.md, EFA). Outbound to anywhere is also open: nodes pull images from ECR,
    reach the ECS and Batch endpoints and S3 through the NAT gateway.
    """

    def __init__(self, scope: Construct, construct_id: str, *, vpc: ec2.IVpc, ssh_sources: Sequence[str]) -> None:
        super().__init__(scope, construct_id)
        sg = ec2.SecurityGroup(
            self,
            "Group",
            vpc=vpc,
            description="EFA multi-node training: all traffic within the group, SSH from chosen sources",
            allow_all_outbound=True,
        )
        sg.add_ingress_rule(sg, ec2.Port.all_traffic(), "EFA/NCCL/MPI: all traffic from group members (incl. SSH)")
        # An explicit self egress rule, so the EFA half survives if the 0.0.0.0/0 rule is
        # ever tightened; CDK's add_egress_rule drops it while all outbound is allowed.
        ec2.CfnSecurityGroupEgress(
            self,
            "SelfEgress",
            group_id=sg.security_group_id,
            ip_protocol="-1",
            destination_security_group_id=sg.security_group_id,
            description="EFA/NCCL/MPI: all traffic to group members",
        )
        for source in ssh_sources:
            sg.add_ingress_rule(ssh_peer(source), ec2.Port.tcp(22), f"SSH from {source}")
        self.security_group = sg
