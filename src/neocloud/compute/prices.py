"""The prices compute shows and quotes, read through a port so that they are the price book's.

Billing owns the price book and sits above compute, so compute cannot read it: it asks a
``PriceSource`` (billing's implementation is injected at start-up) for the prices per GPU-hour
in force at an instant. A SKU the source does not price keeps the catalog's price: the list
price on demand, spot at ``SPOT_DISCOUNT`` off, reserved capacity at ``RESERVED_DISCOUNT`` off
(at the book's precision) — what an operator who never published a book has always seen.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from neocloud.compute.domain import CapacityClass, hourly_price
from neocloud.fleet.catalog import resolve_gpu_model
from neocloud.kernel.money import Money

# A reservation bought without a contract is a one-month term (billing's default term).
RESERVED_TERM = "1m"
# Without a book, a capacity block costs the on-demand price less this share.
RESERVED_DISCOUNT = Decimal("0.15")
BOOK_PRECISION = Decimal("0.0001")


@dataclass(frozen=True, slots=True)
class PriceKey:
    """A price book SKU as compute names it: GPU model id, class, term (reserved only)."""

    gpu_model: str
    cls: str
    term: str | None = None


@dataclass(frozen=True)
class GpuPrices:
    """Prices per GPU-hour in force at one instant; ``book`` holds what the source prices."""

    book: Mapping[PriceKey, Money] = field(default_factory=dict)

    def per_gpu_hour(self, gpu_model: str, cls: CapacityClass) -> Money:
        """One GPU-hour of ``gpu_model`` in ``cls`` (reserved instances show the on-demand
        price: the reservation they run in is what is sold)."""
        sku_cls = CapacityClass.ON_DEMAND if cls is CapacityClass.RESERVED else cls
        found = self.book.get(PriceKey(gpu_model, sku_cls.value))
        if found is not None:
            return found
        return hourly_price(resolve_gpu_model(gpu_model), sku_cls)

    def reserved_per_gpu_hour(self, gpu_model: str, term: str = RESERVED_TERM) -> Money:
        """One GPU-hour of a capacity block of ``gpu_model`` bought for ``term``."""
        found = self.book.get(PriceKey(gpu_model, CapacityClass.RESERVED.value, term))
        if found is not None:
            return found
        base = resolve_gpu_model(gpu_model).list_price_per_gpu_hour
        return (base * (Decimal(1) - RESERVED_DISCOUNT)).rounded(BOOK_PRECISION)


class PriceSource(Protocol):
    """Where compute's prices come from (billing's price book, injected at start-up)."""

    def prices_at(self, at: datetime) -> GpuPrices:
        """The prices in force at ``at``."""
        ...


class CatalogPrices:
    """The source with no book: every price is the catalog's (tests, tools, a bare compute)."""

    def prices_at(self, at: datetime) -> GpuPrices:
        del at
        return GpuPrices()


CATALOG_PRICES = CatalogPrices()
