"""What a validated config resolves to: per queue, the instance facts, the EFA interface
layout, the vCPU bounds and the addresses it takes; for a new VPC, the private subnet size.

Pure Python: validation, the stack and the operator commands share these derivations so
that one rule has one implementation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from constructs_lib.efa_layout import InterfaceSlot, addresses_per_node, efa_device_count, plan_interfaces
from stacks.catalog import Catalog, InstanceFacts
from stacks.config import KitConfig, QueueConfig

# AWS reserves the first four and the last address of every subnet.
SUBNET_RESERVED_ADDRESSES = 5
# The NAT gateway's public subnet; it only holds the NAT gateway.
PUBLIC_SUBNET_PREFIX = 24
# Never make the private subnet smaller than this: room for the odd endpoint or bastion.
MAX_PRIVATE_SUBNET_PREFIX = 24


@dataclass(frozen=True)
class QueuePlan:
    queue: QueueConfig
    facts: InstanceFacts
    slots: tuple[InterfaceSlot, ...]

    @property
    def efa_count(self) -> int:
        return efa_device_count(self.slots)

    @property
    def min_vcpus(self) -> int:
        return self.queue.min_nodes * self.facts.vcpus

    @property
    def max_vcpus(self) -> int:
        # A job stays RUNNABLE forever when maxvCpus < nodes x vCPUs (aws-facts.md, MNP).
        return self.queue.max_nodes * self.facts.vcpus

    @property
    def addresses_per_node(self) -> int:
        return addresses_per_node(self.slots)

    @property
    def addresses(self) -> int:
        return self.queue.max_nodes * self.addresses_per_node

    @property
    def id_name(self) -> str:
        """The queue name as a construct id / output-key fragment: "train-a" -> "TrainA"."""
        return pascal(self.queue.name)


def pascal(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.replace("_", "-").split("-") if part)


def resolve_efa_count(queue: QueueConfig, facts: InstanceFacts) -> int:
    return facts.max_efa_interfaces if queue.efa_interfaces == "max" else int(queue.efa_interfaces)


def plan_queue(queue: QueueConfig, facts: InstanceFacts) -> QueuePlan:
    slots = plan_interfaces(facts.network_cards, resolve_efa_count(queue, facts), family=facts.family)
    return QueuePlan(queue=queue, facts=facts, slots=slots)


def plan_queues(config: KitConfig, catalog: Catalog) -> tuple[QueuePlan, ...]:
    plans = []
    for q in config.queues:
        facts = catalog.get(q.instance_type)
        if facts is None:
            raise KeyError(f"{q.instance_type} not in the catalog; validate the config first")
        plans.append(plan_queue(q, facts))
    return tuple(plans)


def private_subnet_prefix(total_addresses: int) -> int:
    """Smallest subnet (largest prefix, at most /24) that holds `total_addresses` plus AWS's five."""
    needed = total_addresses + SUBNET_RESERVED_ADDRESSES
    prefix = 32 - math.ceil(math.log2(max(needed, 2)))
    return min(prefix, MAX_PRIVATE_SUBNET_PREFIX)


def subnet_capacity(prefix: int) -> int:
    return 2 ** (32 - prefix) - SUBNET_RESERVED_ADDRESSES
