"""The default price book (derived from the GPU catalog and compute's instance types) and its
exports (the SkyPilot catalog CSV).

On demand is the catalog's list price per GPU-hour; spot is priced exactly as compute quotes it
(``compute.domain.hourly_price``); reserved capacity is priced per term at a discount.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from neocloud.billing.metered import DEFAULT_SERVICE_PRICES
from neocloud.billing.rating import ON_DEMAND, RESERVED, SPOT, TERMS, PriceBook, Sku
from neocloud.compute.domain import INSTANCE_TYPES, CapacityClass, InstanceType, hourly_price
from neocloud.fleet.catalog import CATALOG, GpuModel

# Discount on the on-demand price for reserved capacity, by term.
RESERVED_DISCOUNTS: Mapping[str, Decimal] = {"1m": Decimal("0.15"), "1y": Decimal("0.35")}
assert set(RESERVED_DISCOUNTS) == set(TERMS)
DEFAULT_BATCH_DISCOUNT = Decimal("0.50")


@dataclass(frozen=True, slots=True)
class TokenPrice:
    """The Studio's price of a model: per 1M input and output tokens; batch at a discount."""

    model: str
    input_per_1m: Decimal
    output_per_1m: Decimal
    batch_discount: Decimal = DEFAULT_BATCH_DISCOUNT

    def cost(self, *, input_tokens: int, output_tokens: int, batch: bool = False) -> Decimal:
        """Exact (unrounded) cost of one request's tokens, in the book's currency."""
        exact = (input_tokens * self.input_per_1m + output_tokens * self.output_per_1m) / Decimal(
            1_000_000
        )
        return exact * (1 - self.batch_discount) if batch else exact


def default_gpu_prices(models: Iterable[GpuModel] = CATALOG) -> dict[Sku, Decimal]:
    """Price per GPU-hour for every SKU of ``models``: on demand, spot, reserved by term."""
    out: dict[Sku, Decimal] = {}
    for model in models:
        base = model.list_price_per_gpu_hour.amount
        out[Sku(model.id, ON_DEMAND)] = base
        out[Sku(model.id, SPOT)] = hourly_price(model, CapacityClass.SPOT).amount
        for term, discount in RESERVED_DISCOUNTS.items():
            price = (base * (1 - discount)).quantize(Decimal("0.0001"))
            out[Sku(model.id, RESERVED, term)] = price
    return out


def default_price_book(version: str = "pb_default") -> PriceBook:
    return PriceBook(version, default_gpu_prices(), services=dict(DEFAULT_SERVICE_PRICES))


SKYPILOT_COLUMNS = (
    "InstanceType",
    "AcceleratorName",
    "AcceleratorCount",
    "vCPUs",
    "MemoryGiB",
    "Price",
    "SpotPrice",
    "Region",
    "AvailabilityZone",
)


def _accelerator(gpu_model: str) -> str:
    model = next((m for m in CATALOG if m.id == gpu_model), None)
    return model.aliases[0] if model and model.aliases else gpu_model


def skypilot_catalog(
    book: PriceBook,
    zones: Iterable[tuple[str, str, str]],
    instance_types: Iterable[InstanceType] = INSTANCE_TYPES,
) -> str:
    """The SkyPilot catalog CSV: one row per instance type offered in each (region, zone);
    ``zones`` holds (gpu_model, region, zone) where the fleet has that model. Prices are per
    instance-hour, from ``book``; a model the book does not price is left out."""
    where: dict[str, set[tuple[str, str]]] = {}
    for gpu_model, region, zone in zones:
        where.setdefault(gpu_model, set()).add((region, zone))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(SKYPILOT_COLUMNS)
    for itype in instance_types:
        on_demand = book.gpu_hour.get(Sku(itype.gpu_model, ON_DEMAND))
        spot = book.gpu_hour.get(Sku(itype.gpu_model, SPOT))
        if on_demand is None:
            continue
        for region, zone in sorted(where.get(itype.gpu_model, ())):
            writer.writerow(
                (
                    itype.name,
                    _accelerator(itype.gpu_model),
                    itype.gpus,
                    itype.vcpus,
                    itype.ram_gib,
                    _money(on_demand * itype.gpus),
                    "" if spot is None else _money(spot * itype.gpus),
                    region,
                    zone,
                )
            )
    return buf.getvalue()


def _money(value: Decimal) -> str:
    return format(value.quantize(Decimal("0.0001")).normalize(), "f")
