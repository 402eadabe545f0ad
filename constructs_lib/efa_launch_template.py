"""The EC2 launch template of one multi-node queue: EFA interfaces, IMDSv2, an encrypted
gp3 root volume, and the host set-up scripts of launch_templates/ as MIME multi-part
user data."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from aws_cdk import CfnTag, Fn
from aws_cdk import aws_ec2 as ec2
from constructs import Construct

from constructs_lib.efa_layout import InterfaceSlot

# EC2 caps user data at 16 KB (aws-facts.md, AMIs and launch templates).
USER_DATA_LIMIT_BYTES = 16 * 1024
# The ECS-optimized AL2023 AMIs boot from /dev/xvda.
ROOT_DEVICE = "/dev/xvda"


def render_user_data(scripts: Sequence[Path]) -> str:
    """MIME multi-part user data, one text/x-shellscript part per script, in order.

    Batch merges its own part into launch-template user data and requires MIME
    multi-part (aws-facts.md); CDK's MultipartUserData writes the MIME envelope.
    """
    multipart = ec2.MultipartUserData()
    for script in scripts:
        multipart.add_part(
            ec2.MultipartBody.from_raw_body(
                body=script.read_text(encoding="utf-8"),
                content_type='text/x-shellscript; charset="utf-8"',
            )
        )
    rendered = multipart.render()
    size = len(rendered.encode("utf-8"))
    if size > USER_DATA_LIMIT_BYTES:
        raise ValueError(f"user data is {size} bytes; EC2 allows {USER_DATA_LIMIT_BYTES}: shorten launch_templates/")
    return rendered


class EfaLaunchTemplate(Construct):
    """Attributes: `launch_template`, `launch_template_id`, `version`, `user_data`.

    `version` is the template's LatestVersionNumber: the compute environment must name it
    explicitly, or a changed template never reaches the CE (aws-facts.md; aws/aws-cdk#28137).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        slots: Sequence[InterfaceSlot],
        security_group_id: str,
        root_volume_gib: int,
        user_data_scripts: Sequence[Path],
        tags: Mapping[str, str] | None = None,
        capacity_reservation_id: str | None = None,
        capacity_reservation_group_arn: str | None = None,
        capacity_block: bool = False,
    ) -> None:
        """`capacity_reservation_id` or `capacity_reservation_group_arn` targets reserved
        capacity; `capacity_block` marks the reservation as an EC2 Capacity Block for ML,
        which also needs market type "capacity-block" (aws-facts.md, Capacity)."""
        super().__init__(scope, construct_id)
        if capacity_block and not capacity_reservation_id:
            raise ValueError("a Capacity Block needs its reservation id")
        self.user_data = render_user_data(user_data_scripts)
        interfaces = [
            ec2.CfnLaunchTemplate.NetworkInterfaceProperty(
                network_card_index=slot.network_card_index,
                device_index=slot.device_index,
                interface_type=slot.interface_type,
                # With interfaces in the template, groups go on each interface and the CE
                # must not also send SecurityGroupIds (aws-facts.md; aws/aws-cdk#21577).
                groups=[security_group_id],
                delete_on_termination=True,
            )
            for slot in slots
        ]
        tag_list = [CfnTag(key=k, value=v) for k, v in sorted((tags or {}).items())]
        tag_specs = (
            [
                ec2.CfnLaunchTemplate.TagSpecificationProperty(resource_type=kind, tags=tag_list)
                for kind in ("instance", "volume", "network-interface")
            ]
            if tag_list
            else None
        )
        self.launch_template = ec2.CfnLaunchTemplate(
            self,
            "Template",
            launch_template_data=ec2.CfnLaunchTemplate.LaunchTemplateDataProperty(
                network_interfaces=interfaces,
                metadata_options=ec2.CfnLaunchTemplate.MetadataOptionsProperty(
                    http_endpoint="enabled",
                    http_tokens="required",  # IMDSv2 only
                    # Containers reach IMDS through one more hop (aws-facts.md).
                    http_put_response_hop_limit=2,
                ),
                block_device_mappings=[
                    ec2.CfnLaunchTemplate.BlockDeviceMappingProperty(
                        device_name=ROOT_DEVICE,
                        ebs=ec2.CfnLaunchTemplate.EbsProperty(
                            volume_size=root_volume_gib,
                            volume_type="gp3",
                            encrypted=True,
                            delete_on_termination=True,
                        ),
                    )
                ],
                user_data=Fn.base64(self.user_data),
                tag_specifications=tag_specs,
                capacity_reservation_specification=_capacity_spec(
                    capacity_reservation_id, capacity_reservation_group_arn
                ),
                instance_market_options=(
                    ec2.CfnLaunchTemplate.InstanceMarketOptionsProperty(market_type="capacity-block")
                    if capacity_block
                    else None
                ),
            ),
        )
        self.launch_template_id: str = self.launch_template.ref
        self.version: str = self.launch_template.attr_latest_version_number


def _capacity_spec(
    reservation_id: str | None, group_arn: str | None
) -> ec2.CfnLaunchTemplate.CapacityReservationSpecificationProperty | None:
    if reservation_id is None and group_arn is None:
        return None
    return ec2.CfnLaunchTemplate.CapacityReservationSpecificationProperty(
        capacity_reservation_target=ec2.CfnLaunchTemplate.CapacityReservationTargetProperty(
            capacity_reservation_id=reservation_id,
            capacity_reservation_resource_group_arn=group_arn,
        )
    )
