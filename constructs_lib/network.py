"""The VPC the kit creates when none is given: one Availability Zone, a public subnet that
holds only the NAT gateway, a private subnet sized for every queue's nodes, an S3 gateway
endpoint and VPC flow logs."""

from __future__ import annotations

from aws_cdk import Acknowledgment, RemovalPolicy, Validations
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from constructs import Construct


class MultinodeVpc(Construct):
    """Attributes: `vpc`, `private_subnets`, `flow_log_group`."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cidr: str,
        availability_zone: str,
        private_subnet_prefix: int,
        public_subnet_prefix: int = 24,
    ) -> None:
        super().__init__(scope, construct_id)
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr(cidr),
            # MNP nodes must share one AZ with their cluster placement group (aws-facts.md).
            availability_zones=[availability_zone],
            nat_gateways=1,
            # Private first so that it sits at the start of the block, aligned to its size.
            subnet_configuration=[
                ec2.SubnetConfiguration(
                    name="Nodes",
                    subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS,
                    cidr_mask=private_subnet_prefix,
                ),
                ec2.SubnetConfiguration(name="Nat", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=public_subnet_prefix),
            ],
            # MNP task ENIs use the VPC's default security group when the CE names none,
            # which is always so with an EFA launch template: its self rule must stay.
            restrict_default_security_group=False,
            enable_dns_hostnames=True,
            enable_dns_support=True,
        )
        Validations.of(self.vpc).acknowledge(
            Acknowledgment(
                id="CloudFormation-Validate::W3010",
                reason="The AZ is pinned on purpose: AWS Batch MNP nodes must share one cluster placement group, "
                "which lives in a single Availability Zone (aws-facts.md); the user chooses it in the config.",
            )
        )
        # Images and Metaflow's datastore come from S3; keep that traffic off the NAT.
        self.vpc.add_gateway_endpoint("S3Endpoint", service=ec2.GatewayVpcEndpointAwsService.S3)
        self.flow_log_group = logs.LogGroup(
            self,
            "FlowLogGroup",
            retention=logs.RetentionDays.ONE_MONTH,
            # Flow logs here are for debugging a training network, not an audit trail;
            # `cdk destroy` should leave nothing behind.
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.vpc.add_flow_log(
            "FlowLog",
            destination=ec2.FlowLogDestination.to_cloud_watch_logs(self.flow_log_group),
            traffic_type=ec2.FlowLogTrafficType.REJECT,
        )
        self.private_subnets = self.vpc.select_subnets(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS).subnets
