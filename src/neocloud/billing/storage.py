"""Shared filesystems on the invoice: GiB held per second, priced per GiB-month.

The facts are storage's size intervals (``storage.tables.FsSizeIntervalRow``: a filesystem's
size from its creation or a resize until the next resize or its deletion). A line is one
(org, project) of SKU ``storage.gib_month``: its ``gpu_seconds`` carry GiB-seconds and its unit
price is per GiB-hour (the book's GiB-month price over ``HOURS_PER_MONTH``), so that, as on
every line, the amount is hours times the unit price, rounded once. The price is the book's
in force at the period's start (a default when the book does not name it)."""

from __future__ import annotations

import decimal
from collections import defaultdict
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

import sqlalchemy as sa
from sqlalchemy.orm import Session

from neocloud.billing.rating import Line, Period, PriceBook, Sku, seconds
from neocloud.kernel.money import Money
from neocloud.storage.tables import FilesystemRow, FsSizeIntervalRow

STORAGE_SKU = Sku("storage", "gib_month")
DEFAULT_GIB_MONTH = Decimal("0.08")  # per GiB-month, when the book names no price
HOURS_PER_MONTH = Decimal(730)
_QUANTUM = Decimal("0.01")


def gib_month_price(book: PriceBook) -> Decimal:
    return book.gpu_hour.get(STORAGE_SKU, DEFAULT_GIB_MONTH)


def storage_lines(
    s: Session,
    org_id: str | None,
    period: Period,
    as_of: datetime,
    book: PriceBook,
    *,
    rounding: str = ROUND_HALF_UP,
    by_project: bool = True,
) -> list[Line]:
    """One line per (org, project) that held filesystem GiB during ``period`` (up to
    ``as_of``)."""
    end = min(period.end, as_of)
    if end <= period.start:
        return []
    query = (
        sa.select(FsSizeIntervalRow, FilesystemRow.project_id)
        .join(FilesystemRow, FilesystemRow.id == FsSizeIntervalRow.filesystem_id)
        .where(
            FsSizeIntervalRow.start_at < end,
            sa.or_(FsSizeIntervalRow.end_at.is_(None), FsSizeIntervalRow.end_at > period.start),
        )
    )
    if org_id is not None:
        query = query.where(FsSizeIntervalRow.org_id == org_id)
    held: dict[tuple[str, str | None], Decimal] = defaultdict(Decimal)
    facts: dict[tuple[str, str | None], set[str]] = defaultdict(set)
    for iv, project in s.execute(query):
        lo = max(iv.start_at, period.start)
        hi = end if iv.end_at is None else min(iv.end_at, end)
        if hi <= lo:
            continue
        key = (iv.org_id, project if by_project else None)
        held[key] += seconds(hi - lo) * iv.size_gib
        facts[key].add(iv.filesystem_id)
    month = gib_month_price(book)
    ctx = decimal.Context(prec=60)
    per_hour = ctx.divide(month, HOURS_PER_MONTH)
    lines = []
    for (org, project), gib_seconds in sorted(
        held.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")
    ):
        exact = ctx.divide(ctx.multiply(gib_seconds, month), HOURS_PER_MONTH * 3600)
        amount = Money(exact, book.currency).rounded(_QUANTUM, rounding)
        lines.append(
            Line(
                org,
                project,
                STORAGE_SKU,
                gib_seconds,
                per_hour.quantize(Decimal("0.0000000001")),
                amount,
                tuple(sorted(facts[(org, project)])),
            )
        )
    return lines
