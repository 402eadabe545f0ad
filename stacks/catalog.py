"""Instance-type facts the kit needs, read from the data file in stacks/data/.

The file is generated from EC2 DescribeInstanceTypes data by `python -m kit regen-catalog`
(see kit/catalog.py), so synth and validation make no network call.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from constructs_lib.efa_layout import NetworkCard

CATALOG_PATH = Path(__file__).parent / "data" / "instance_types.json"


@dataclass(frozen=True)
class InstanceFacts:
    name: str
    vcpus: int
    memory_mib: int
    accelerator: str  # "nvidia", "neuron", "none", ...
    gpus: int
    gpu_name: str | None
    neuron_devices: int
    efa_supported: bool
    max_efa_interfaces: int
    max_network_cards: int
    ipv4_per_interface: int
    network_performance: str
    network_cards: tuple[NetworkCard, ...]
    placement_strategies: tuple[str, ...]
    usage_classes: tuple[str, ...]

    @property
    def family(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def supports_cluster_placement(self) -> bool:
        return "cluster" in self.placement_strategies

    @property
    def total_peak_gbps(self) -> float:
        return sum(c.peak_gbps for c in self.network_cards)


@dataclass(frozen=True)
class Catalog:
    source: str
    types: dict[str, InstanceFacts]

    def get(self, name: str) -> InstanceFacts | None:
        return self.types.get(name)

    def efa_capable(self) -> list[InstanceFacts]:
        return [t for t in self.types.values() if t.efa_supported and t.accelerator != "none"]


def facts_from_entry(name: str, raw: dict) -> InstanceFacts:
    return InstanceFacts(
        name=name,
        vcpus=raw["vcpus"],
        memory_mib=raw["memoryMiB"],
        accelerator=raw["accelerator"],
        gpus=raw["gpus"],
        gpu_name=raw["gpuName"],
        neuron_devices=raw["neuronDevices"],
        efa_supported=raw["efaSupported"],
        max_efa_interfaces=raw["maxEfaInterfaces"],
        max_network_cards=raw["maxNetworkCards"],
        ipv4_per_interface=raw["ipv4PerInterface"],
        network_performance=raw["networkPerformance"],
        network_cards=tuple(
            NetworkCard(
                index=c["index"],
                interface_types=tuple(c["interfaceTypes"]),
                max_interfaces=c["maxInterfaces"],
                peak_gbps=c["peakGbps"],
            )
            for c in raw["networkCards"]
        ),
        placement_strategies=tuple(raw["placementStrategies"]),
        usage_classes=tuple(raw["usageClasses"]),
    )


@lru_cache(maxsize=4)
def load_catalog(path: Path = CATALOG_PATH) -> Catalog:
    data = json.loads(path.read_text(encoding="utf-8"))
    return Catalog(
        source=data["source"],
        types={name: facts_from_entry(name, raw) for name, raw in data["instanceTypes"].items()},
    )
