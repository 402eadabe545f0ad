"""Where the EFA interfaces of one instance go: network card, device index and type.

Pure Python (no aws_cdk) so that validation and `doctor` use the same rule as the launch
template. Rule source: EC2 User Guide, "Maximize network bandwidth on Amazon EC2 instances
with multiple network cards" (aws-facts.md, EFA):

* card 0 / device 0 is the primary interface, never "efa-only";
* generic layout: primary is an ENA "interface"; if card 0 supports EFA it gets an "efa-only"
  interface at device 1; every further card gets an "efa-only" interface at device 0;
* P5/P5e have their own documented layout ("EFA configuration for P5 and P5e instances"):
  the primary is an "efa" interface (EFA with ENA) and each further card carries an
  "efa-only" interface at device 1;
* card 0 keeps one slot for the MNP container's awsvpc ENI: where it has too few slots for
  primary + EFA-only + that ENI (trn2), the primary itself is the "efa" interface.

"efa-only" interfaces take no IP address; "interface" and "efa" ones take one each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# Families with the P5-specific layout in the EC2 guide.
P5_LAYOUT_FAMILIES = frozenset({"p5", "p5e"})
# MNP containers use awsvpc networking: ECS attaches each task's own ENI to network card 0,
# so card 0 must keep a slot free for it.
CONTAINER_ENIS_ON_CARD_0 = 1


@dataclass(frozen=True)
class NetworkCard:
    index: int
    interface_types: tuple[str, ...]
    max_interfaces: int
    peak_gbps: float

    @property
    def supports_efa_only(self) -> bool:
        return "efa-only" in self.interface_types


@dataclass(frozen=True)
class InterfaceSlot:
    network_card_index: int
    device_index: int
    interface_type: str  # "interface" | "efa" | "efa-only"

    @property
    def is_efa(self) -> bool:
        return self.interface_type in ("efa", "efa-only")

    @property
    def takes_ip(self) -> bool:
        return self.interface_type != "efa-only"


def efa_cards(cards: Sequence[NetworkCard]) -> list[NetworkCard]:
    """Cards that can carry an EFA-only interface, in index order."""
    return sorted((c for c in cards if c.supports_efa_only), key=lambda c: c.index)


def plan_interfaces(cards: Sequence[NetworkCard], efa_count: int, *, family: str) -> tuple[InterfaceSlot, ...]:
    """One EFA interface on each of the first `efa_count` EFA-capable cards."""
    usable = efa_cards(cards)
    if not 1 <= efa_count <= len(usable):
        raise ValueError(f"efa_count must be between 1 and {len(usable)} for family {family}, got {efa_count}")
    chosen = usable[:efa_count]
    if family in P5_LAYOUT_FAMILIES and chosen[0].index == 0:
        slots = [InterfaceSlot(0, 0, "efa")]
        slots += [InterfaceSlot(c.index, 1, "efa-only") for c in chosen[1:]]
        return tuple(slots)
    if chosen[0].index == 0 and chosen[0].max_interfaces < 2 + CONTAINER_ENIS_ON_CARD_0:
        # Card 0 cannot hold primary + EFA-only + the container's ENI (trn2: 2 slots): carry
        # card 0's EFA on the primary itself ("efa", EFA with ENA), as the P5 layout does.
        slots = [InterfaceSlot(0, 0, "efa")]
        slots += [InterfaceSlot(c.index, 0, "efa-only") for c in chosen[1:]]
        return tuple(slots)
    slots = [InterfaceSlot(0, 0, "interface")]
    for card in chosen:
        slots.append(InterfaceSlot(card.index, 1 if card.index == 0 else 0, "efa-only"))
    return tuple(slots)


def addresses_per_node(slots: Sequence[InterfaceSlot]) -> int:
    """Private IPs one node takes in the subnet: its IP-bearing interfaces plus the
    container's own awsvpc ENI (MNP jobs use awsvpc networking, aws-facts.md)."""
    return sum(1 for s in slots if s.takes_ip) + 1


def efa_device_count(slots: Sequence[InterfaceSlot]) -> int:
    """uverbs devices the host exposes: what @batch(efa=N) must be."""
    return sum(1 for s in slots if s.is_efa)


def provisioned_gbps(cards: Sequence[NetworkCard], slots: Sequence[InterfaceSlot]) -> float:
    """Peak bandwidth of the cards that carry an EFA interface."""
    used = {s.network_card_index for s in slots if s.is_efa}
    return sum(c.peak_gbps for c in cards if c.index in used)
