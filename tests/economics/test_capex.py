"""A public H100 bill of materials (128 nodes x 8 GPUs)."""

from __future__ import annotations

from neocloud.economics.capex import BillOfMaterials
from neocloud.kernel.money import Money


def _bom(facility: str = "0") -> BillOfMaterials:
    return BillOfMaterials(
        nodes=128,
        gpus_per_node=8,
        node_price=Money.of("310000"),
        switches=48,
        switch_price=Money.of("36000"),
        cable_price_per_gpu=Money.of("2560"),
        facility_per_node=Money.of(facility),
    )


def test_public_h100_bill_of_materials_with_facility() -> None:
    bom = _bom(facility="50000")
    assert bom.per_node == Money.of("393980")
    assert bom.total == Money.of("50429440")


def test_hardware_only_is_the_example_capex_per_node() -> None:
    bom = _bom()
    assert bom.parts_per_node() == {
        "node": Money.of("310000"),
        "switches": Money.of("13500"),
        "cables": Money.of("20480"),
    }
    assert bom.per_node == Money.of("343980")
    assert bom.capex_per_node() == {"node": 310000.0, "switches": 13500.0, "cables": 20480.0}
