"""Rating metered services (managed databases; other platform services may join): a pure
function of (spans, price book, period) → invoice lines, like GPU rating.

A ``Span`` says an org held ``quantity`` of a SKU during ``[start, end)``: a database of a
preset (``postgres.small.hour``, quantity 1) or its storage (``postgres.storage.gib_month``,
quantity = GiB). Time counts per second; a ``….hour`` SKU is priced per hour, a
``….gib_month`` SKU per GiB-month of ``HOURS_PER_MONTH`` hours. A span is priced by the book
in force at the start of its part inside the period. One line per (org, project, SKU), the
``gpu_seconds`` of ``Line`` holding unit-seconds (hours x quantity x 3600) and its
``unit_price`` the price per unit-hour; rounded once per line.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from neocloud.billing.rating import Line, Period, PriceBook, Sku, book_at, seconds
from neocloud.kernel.money import Money

HOURS_PER_MONTH = Decimal(730)
_HOUR = Decimal(3600)
_CENT = Decimal("0.01")
HOUR, GIB_MONTH = "hour", "gib_month"

# The platform's service SKUs and their default prices (USD): per hour of a database of each
# preset, and per GiB-month of its storage.
DEFAULT_SERVICE_PRICES: Mapping[str, Decimal] = {
    "postgres.small.hour": Decimal("0.12"),
    "postgres.medium.hour": Decimal("0.45"),
    "postgres.large.hour": Decimal("0.90"),
    "postgres.storage.gib_month": Decimal("0.20"),
}


@dataclass(frozen=True, slots=True)
class Span:
    id: str
    org_id: str
    project_id: str | None
    sku: str  # NAME.hour or NAME.gib_month
    quantity: Decimal
    start: datetime
    end: datetime | None  # None: still held (to ``as_of``)


def sku_of(code: str) -> Sku:
    """``postgres.small.hour`` as a ``Sku`` whose code is that string."""
    name, _, unit = code.rpartition(".")
    return Sku(name, unit)


def per_unit_hour(code: str, price: Decimal) -> Decimal:
    """A SKU's price per unit-hour: an hourly price as it is, a GiB-month over its hours."""
    return price / HOURS_PER_MONTH if code.endswith("." + GIB_MONTH) else price


def rate_spans(
    spans: Iterable[Span],
    books: PriceBook | Sequence[PriceBook],
    period: Period,
    *,
    as_of: datetime,
    currency: str = "USD",
    rounding: str = ROUND_HALF_UP,
) -> tuple[Line, ...]:
    """One line per (org, project, SKU) for the spans' time inside ``period`` up to ``as_of``;
    a SKU the book does not price is a ``LookupError`` naming it."""
    stop = min(period.end, as_of)
    groups: dict[tuple[str, str | None, str, Decimal], tuple[Decimal, list[str]]] = {}
    for sp in spans:
        start = max(sp.start, period.start)
        end = min(sp.end or stop, stop)
        if end <= start:
            continue
        book = book_at(books, start)
        try:
            price = per_unit_hour(sp.sku, book.services[sp.sku])
        except KeyError:
            raise LookupError(f"price book {book.version} has no price for {sp.sku}") from None
        key = (sp.org_id, sp.project_id, sp.sku, price)
        used, ids = groups.get(key, (Decimal(0), []))
        groups[key] = (used + sp.quantity * seconds(end - start), [*ids, sp.id])
    lines = []
    for (org_id, project_id, code, price), (unit_seconds, ids) in sorted(groups.items()):
        exact = unit_seconds / _HOUR * price
        amount = Money(exact.quantize(_CENT, rounding=rounding), currency)
        lines.append(
            Line(org_id, project_id, sku_of(code), unit_seconds, price, amount, tuple(sorted(ids)))
        )
    return tuple(lines)
