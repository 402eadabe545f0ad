"""The EFA interface layout (constructs_lib/efa_layout.py) for the catalog's types, table-driven."""

from __future__ import annotations

import pytest

from constructs_lib.efa_layout import CONTAINER_ENIS_ON_CARD_0, addresses_per_node, plan_interfaces
from stacks.catalog import load_catalog

CATALOG = load_catalog()


def layout(instance_type: str, efa: int | None = None) -> list[tuple[int, int, str]]:
    facts = CATALOG.types[instance_type]
    slots = plan_interfaces(facts.network_cards, efa or facts.max_efa_interfaces, family=facts.family)
    return [(s.network_card_index, s.device_index, s.interface_type) for s in slots]


@pytest.mark.parametrize(
    ("instance_type", "head"),
    [
        ("p4d.24xlarge", [(0, 0, "interface"), (0, 1, "efa-only"), (1, 0, "efa-only")]),
        ("p5.48xlarge", [(0, 0, "efa"), (1, 1, "efa-only"), (2, 1, "efa-only")]),
        ("p5en.48xlarge", [(0, 0, "interface"), (0, 1, "efa-only"), (1, 0, "efa-only")]),
        # card 0 takes 2 interfaces: primary + EFA-only would leave none for the container's ENI.
        ("trn2.48xlarge", [(0, 0, "efa"), (1, 0, "efa-only"), (2, 0, "efa-only")]),
        # card 0 has no EFA at all: EFA starts on card 1.
        ("p6-b300.48xlarge", [(0, 0, "interface"), (1, 0, "efa-only"), (2, 0, "efa-only")]),
    ],
)
def test_layout_head(instance_type: str, head: list[tuple[int, int, str]]) -> None:
    assert layout(instance_type)[: len(head)] == head


@pytest.mark.parametrize("facts", CATALOG.efa_capable(), ids=lambda f: f.name)
def test_every_type_fits_its_cards_with_room_for_the_container_eni(facts) -> None:  # type: ignore[no-untyped-def]
    slots = plan_interfaces(facts.network_cards, facts.max_efa_interfaces, family=facts.family)
    used: dict[int, int] = {}
    for s in slots:
        used[s.network_card_index] = used.get(s.network_card_index, 0) + 1
    used[0] = used.get(0, 0) + CONTAINER_ENIS_ON_CARD_0
    limits = {c.index: c.max_interfaces for c in facts.network_cards}
    assert all(n <= limits[card] for card, n in used.items()), (facts.name, used, limits)
    pairs = [(s.network_card_index, s.device_index) for s in slots]
    assert len(pairs) == len(set(pairs)) and (0, 0) in pairs
    assert sum(s.is_efa for s in slots) == facts.max_efa_interfaces
    # One IP-bearing interface (the primary) plus the container's ENI.
    assert addresses_per_node(slots) == 2
