"""The default price book and the SkyPilot export (no database)."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

from neocloud.billing.pricebook import (
    SKYPILOT_COLUMNS,
    TokenPrice,
    default_price_book,
    skypilot_catalog,
)
from neocloud.billing.rating import ON_DEMAND, RESERVED, SPOT, Sku
from neocloud.compute.domain import CapacityClass, hourly_price
from neocloud.fleet.catalog import CATALOG

H100 = "H100-SXM-80GB"


def test_every_catalog_model_has_every_sku_and_spot_matches_compute() -> None:
    book = default_price_book()
    for model in CATALOG:
        assert book.price(Sku(model.id, ON_DEMAND)) == model.list_price_per_gpu_hour.amount
        spot = hourly_price(model, CapacityClass.SPOT).amount
        assert book.price(Sku(model.id, SPOT)) == spot
        on_demand = book.price(Sku(model.id, ON_DEMAND))
        one_year = book.price(Sku(model.id, RESERVED, "1y"))
        assert one_year < book.price(Sku(model.id, RESERVED, "1m")) < on_demand


def test_token_prices_per_million_with_batch_discount() -> None:
    price = TokenPrice("llama-3.1-8b", Decimal("0.20"), Decimal("0.60"))
    assert price.cost(input_tokens=1_000_000, output_tokens=500_000) == Decimal("0.50")
    assert price.cost(input_tokens=1_000_000, output_tokens=500_000, batch=True) == Decimal("0.25")


def test_skypilot_catalog_rows_per_instance_type_and_zone() -> None:
    book = default_price_book()
    zones = [(H100, "us-east-1", "us-east-1a"), (H100, "us-east-1", "us-east-1b")]
    rows = list(csv.DictReader(io.StringIO(skypilot_catalog(book, zones))))
    assert tuple(rows[0]) == SKYPILOT_COLUMNS
    eight = [r for r in rows if r["InstanceType"] == "8xH100"]
    assert [r["AvailabilityZone"] for r in eight] == ["us-east-1a", "us-east-1b"]
    row = eight[0]
    assert (row["AcceleratorName"], row["AcceleratorCount"], row["Region"]) == (
        "H100",
        "8",
        "us-east-1",
    )
    assert Decimal(row["Price"]) == 8 * book.price(Sku(H100, ON_DEMAND))
    assert Decimal(row["SpotPrice"]) == 8 * book.price(Sku(H100, SPOT))
    assert {r["AcceleratorName"] for r in rows} == {"H100"}  # only models the fleet has
