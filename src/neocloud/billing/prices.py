"""Compute's prices from the price book: billing's implementation of compute's ``PriceSource``.

Injected at start-up (``api.platform``), so that what an instance, a cluster or a reservation
offering shows is what billing charges for it. Before any book is published the book in force
is the catalog-derived default, which prices what compute's catalog fallback prices.
"""

from __future__ import annotations

from datetime import datetime

from neocloud.billing.service import price_book_at
from neocloud.compute.prices import GpuPrices, PriceKey
from neocloud.db.engine import Database
from neocloud.kernel.money import Money


class BookPrices:
    """Prices per GPU-hour from the price book in force at an instant (one query per call)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def prices_at(self, at: datetime) -> GpuPrices:
        with self.db.transaction() as s:
            book = price_book_at(s, at)
        return GpuPrices(
            {
                PriceKey(sku.gpu_model, sku.cls, sku.term): Money(price, book.currency)
                for sku, price in book.gpu_hour.items()
            }
        )
