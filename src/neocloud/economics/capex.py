"""Capex from a bill of materials: what one node really costs once its share of the fabric,
its cables and its share of the facility are counted. Purchase figures are exact, so this
runs on ``Money`` (Decimal); a cohort takes the parts as ``capex_per_node``."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from neocloud.kernel.money import Money

_ZERO = Money.of(0)  # Money is immutable, so one shared default is safe


@dataclass(frozen=True, slots=True)
class BillOfMaterials:
    """``nodes`` servers of ``gpus_per_node`` GPUs, ``switches`` fabric switches shared by all
    of them, cables and optics per GPU, and facility and operations set-up per node."""

    nodes: int
    gpus_per_node: int
    node_price: Money
    switches: int = 0
    switch_price: Money = _ZERO
    cable_price_per_gpu: Money = _ZERO
    facility_per_node: Money = _ZERO

    def __post_init__(self) -> None:
        if self.nodes < 1 or self.gpus_per_node < 1 or self.switches < 0:
            raise ValueError("a bill of materials needs nodes >= 1, gpus_per_node >= 1")

    def parts_per_node(self) -> dict[str, Money]:
        """Each part's cost per node (the fabric's switches split evenly over the nodes)."""
        parts = {
            "node": self.node_price,
            "switches": Money(
                self.switch_price.amount * self.switches / Decimal(self.nodes),
                self.switch_price.currency,
            ),
            "cables": self.cable_price_per_gpu * self.gpus_per_node,
        }
        if self.facility_per_node.amount:
            parts["facility"] = self.facility_per_node
        return parts

    @property
    def per_node(self) -> Money:
        parts = list(self.parts_per_node().values())
        total = parts[0]
        for part in parts[1:]:
            total = total + part
        return total

    @property
    def total(self) -> Money:
        return self.per_node * self.nodes

    def capex_per_node(self) -> dict[str, float]:
        """The parts as a cohort's ``capex_per_node`` (floats, for the projection)."""
        return {k: float(v.amount) for k, v in self.parts_per_node().items()}
