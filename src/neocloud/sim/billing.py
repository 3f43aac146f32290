"""Billing facts of a simulation run: the allocation intervals the run left behind, rated by
billing's pure ``rate`` with the default price book, time on failed nodes excluded.

Per capacity class: GPU-hours allocated (the intervals as recorded), GPU-hours that fell on a
node while it was ``failed`` (never billed), GPU-hours billed and the amount.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from decimal import Decimal
from typing import Any

from neocloud.billing.pricebook import default_price_book
from neocloud.billing.rating import Period, billable_seconds, rate, total
from neocloud.billing.service import load_intervals, load_outages
from neocloud.db.engine import Database

_HOUR = Decimal(3600)


def _hours(gpu_seconds: Decimal) -> float:
    return float(round(gpu_seconds / _HOUR, 3))


def billing_facts(db: Database, org_id: str, start: datetime, end: datetime) -> dict[str, Any]:
    period = Period(start, end)
    with db.transaction() as s:
        intervals = load_intervals(s, org_id, period)
        outages = load_outages(s, {iv.node_id for iv in intervals}, end)
    book = default_price_book()
    lines = rate(intervals, book, (), period, outages=outages, as_of=end, by_project=False)
    allocated: dict[str, Decimal] = defaultdict(Decimal)
    for iv in intervals:
        allocated[iv.cls] += billable_seconds(iv, (), start, end) * iv.gpus
    billed: dict[str, Decimal] = defaultdict(Decimal)
    amount: dict[str, Decimal] = defaultdict(Decimal)
    for line in lines:
        billed[line.sku.cls] += line.gpu_seconds
        amount[line.sku.cls] += line.amount.amount
    classes = {
        cls: {
            "gpu_hours_allocated": _hours(allocated[cls]),
            "gpu_hours_on_failed_nodes": _hours(allocated[cls] - billed[cls]),
            "gpu_hours_billed": _hours(billed[cls]),
            "amount": str(amount[cls]),
        }
        for cls in sorted(set(allocated) | set(billed))
    }
    return {
        "price_book": book.version,
        "currency": book.currency,
        "classes": classes,
        "total": str(total(lines, book.currency).amount),
    }
