"""Operator revenue reports: revenue by org, SKU, class and month; backlog; customer
concentration; and the inputs economics' live mode projects from.

Revenue is re-derived from the facts (the same rating as invoices: allocation intervals with
failed time excluded, Studio token usage, each part at the price book version in force then)
plus what backstop agreements owe for unsold capacity. It is usage revenue as rated: contract
true-ups, reservation charges and credits are invoice matters and are left out. Money is
``Decimal``; shares and the HHI are derived from it at the end.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.orm import Session

from neocloud.billing.agreements import backlog_by_org, backstop_revenue
from neocloud.billing.rating import Period
from neocloud.billing.service import HOLDS_GPUS, Rated, rate_org_period
from neocloud.compute.tables import AllocationRow
from neocloud.db.engine import Database
from neocloud.economics.live import (
    BillingFigures,
    InternalUsage,
    LiveInputs,
    NodeRecord,
    OrgAllocation,
    Usage,
    choose_utilization,
    measure_usage,
    split_internal,
)
from neocloud.fleet import service as fleet_service
from neocloud.fleet.catalog import find_gpu_model
from neocloud.fleet.domain import NodeState
from neocloud.kernel.auth import Principal
from neocloud.kernel.clock import Clock
from neocloud.kernel.errors import ValidationFailed
from neocloud.tenancy.tables import OrgRow

BACKSTOP = "backstop"
MAX_MONTHS = 120
_SHARE = Decimal("0.000001")


@dataclass(frozen=True, slots=True)
class RevenueLine:
    """Revenue of one org for one SKU in one month (``cls``: on_demand, spot, reserved,
    tokens or backstop)."""

    month: str
    org_id: str
    sku: str
    cls: str
    amount: Decimal


@dataclass(frozen=True, slots=True)
class RevenueReport:
    start: str  # first month, YYYY-MM
    end: str  # last month, inclusive
    currency: str
    as_of: datetime
    lines: tuple[RevenueLine, ...]
    names: dict[str, str] = field(default_factory=dict)  # org id -> slug

    @property
    def total(self) -> Decimal:
        return sum((ln.amount for ln in self.lines), Decimal(0))

    def by(self, field: str) -> dict[str, Decimal]:
        """Sums by ``month``, ``org_id``, ``sku`` or ``cls``, largest first (then by name)."""
        return _sums((getattr(ln, field), ln.amount) for ln in self.lines)


def _sums(pairs: Iterable[tuple[str, Decimal]]) -> dict[str, Decimal]:
    out: dict[str, Decimal] = defaultdict(Decimal)
    for key, amount in pairs:
        out[key] += amount
    return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))


def months(start: str, end: str) -> list[Period]:
    """Calendar months from ``start`` to ``end`` (YYYY-MM, inclusive); 422 when malformed,
    reversed or longer than ``MAX_MONTHS``."""
    periods = []
    for name, text in (("from", start), ("to", end)):
        try:
            periods.append(Period.month(text))
        except ValueError:
            raise ValidationFailed(f"{name} must be YYYY-MM, not {text!r}", param=name) from None
    first, last = periods
    if last.start < first.start:
        raise ValidationFailed("to is before from", param="to")
    out = [first]
    while out[-1].start < last.start:
        if len(out) >= MAX_MONTHS:
            raise ValidationFailed(f"at most {MAX_MONTHS} months per report", param="to")
        out.append(Period.month(_next(out[-1])))
    return out


def _next(p: Period) -> str:
    return p.end.strftime("%Y-%m")


def rated_revenue(s: Session, period: Period, now: datetime) -> tuple[Rated, list[RevenueLine]]:
    """Every org's revenue over ``period`` (up to ``now``): rated usage and backstops; and the
    rating it comes from. ``month`` on the lines is the month ``period`` starts in."""
    name = period.start.strftime("%Y-%m")
    rated = rate_org_period(s, None, period, now, by_project=False)
    out = [
        RevenueLine(name, ln.org_id, ln.sku.code, ln.sku.cls, ln.amount.amount)
        for ln in rated.invoice_lines()
        if ln.amount.amount != 0
    ]
    out += [
        RevenueLine(name, b.org_id, f"{b.gpu_model}.{BACKSTOP}", BACKSTOP, b.amount)
        for b in backstop_revenue(s, period, now=now)
        if b.amount != 0
    ]
    return rated, out


def revenue_report(
    *, db: Database, clock: Clock, principal: Principal, start: str, end: str
) -> RevenueReport:
    """Revenue by org, SKU, class and month from ``start`` to ``end`` (YYYY-MM, inclusive);
    the current month counts up to now. Operators only."""
    principal.require_operator()
    periods = months(start, end)
    now = clock.now()
    lines: list[RevenueLine] = []
    currency = "USD"
    with db.transaction() as s:
        for period in periods:
            rated, month_lines = rated_revenue(s, period, now)
            currency = rated.currency
            lines += month_lines
        names = _slugs(s, {ln.org_id for ln in lines})
    lines.sort(key=lambda ln: (ln.month, ln.org_id, ln.sku))
    return RevenueReport(start, end, currency, now, tuple(lines), names)


# -- backlog ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BacklogReport:
    at: datetime
    by_org: dict[str, Decimal]  # remaining contracted value, largest first
    names: dict[str, str] = field(default_factory=dict)  # org id -> slug

    @property
    def total(self) -> Decimal:
        return sum(self.by_org.values(), Decimal("0.00"))


def backlog_report(*, db: Database, clock: Clock, principal: Principal) -> BacklogReport:
    """Remaining contracted value per org now (``billing.agreements.backlog_by_org``)."""
    principal.require_operator()
    now = clock.now()
    with db.transaction() as s:
        values = backlog_by_org(s, now)
        names = _slugs(s, set(values))
    return BacklogReport(now, _sums((org, v) for org, v in values.items() if v != 0), names)


# -- concentration ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Concentration:
    """Customers' shares of revenue over a window: top-1, top-2 and the HHI (sum of squared
    percentage shares, 0-10,000; above 2,500 is "highly concentrated" in the US merger
    guidelines' terms)."""

    window_start: datetime
    window_end: datetime
    currency: str
    total: Decimal
    revenue: dict[str, Decimal]  # by org, largest first
    shares: dict[str, Decimal]  # fractions of ``total``, 6 decimals
    top1: Decimal
    top2: Decimal
    hhi: Decimal  # 0-10,000, 2 decimals
    largest: str | None
    names: dict[str, str] = field(default_factory=dict)  # org id -> slug


def concentration_of(
    revenue: Mapping[str, Decimal], window_start: datetime, window_end: datetime, currency: str
) -> Concentration:
    """Pure: shares, top-1, top-2 and HHI of ``revenue`` by customer (non-positive revenue is
    left out: a credit is not a customer)."""
    positive = _sums((k, v) for k, v in revenue.items() if v > 0)
    total = sum(positive.values(), Decimal(0))
    exact = {k: v / total for k, v in positive.items()} if total > 0 else {}
    ordered = list(exact.values())
    hhi = sum(((s * 100) ** 2 for s in ordered), Decimal(0))
    return Concentration(
        window_start,
        window_end,
        currency,
        total,
        positive,
        {k: v.quantize(_SHARE) for k, v in exact.items()},
        (ordered[0] if ordered else Decimal(0)).quantize(_SHARE),
        sum(ordered[:2], Decimal(0)).quantize(_SHARE),
        hhi.quantize(Decimal("0.01")),
        next(iter(positive), None),
    )


def _window(now: datetime, window_days: int) -> Period:
    if not 1 <= window_days <= 3660:
        raise ValidationFailed("window_days is 1 to 3,660", param="window_days")
    return Period(now - timedelta(days=window_days), now)


def concentration_report(
    *, db: Database, clock: Clock, principal: Principal, window_days: int = 90
) -> Concentration:
    """Customer concentration over the trailing ``window_days``. Operators only."""
    principal.require_operator()
    now = clock.now()
    window = _window(now, window_days)
    with db.transaction() as s:
        rated, lines = rated_revenue(s, window, now)
        names = _slugs(s, {ln.org_id for ln in lines})
    by_org = _sums((ln.org_id, ln.amount) for ln in lines)
    return replace(concentration_of(by_org, window.start, window.end, rated.currency), names=names)


# -- economics live mode ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EconomicsInputs:
    """What billing knows over a trailing window, for economics' live mode: revenue by class
    and by org (rated as invoices rate it), GPU-hours sold and GPU revenue per GPU model, the
    backlog and concentration."""

    window: Period
    currency: str
    revenue_by_class: dict[str, Decimal]
    revenue_by_org: dict[str, Decimal]
    gpu_hours_by_model: dict[str, Decimal]  # GPU-hours sold (billable), by GPU model
    price_by_model: dict[str, Decimal]  # realized: unit prices weighted by GPU-hours sold
    backlog_by_org: dict[str, Decimal]
    concentration: Concentration
    internal_revenue: Decimal = Decimal(0)  # the internal orgs' usage, rated: not revenue

    @property
    def revenue(self) -> Decimal:
        return sum(self.revenue_by_class.values(), Decimal(0))

    @property
    def backlog(self) -> Decimal:
        return sum(self.backlog_by_org.values(), Decimal(0))


def economics_inputs(
    s: Session, now: datetime, window_days: int, *, internal: Collection[str] = ()
) -> EconomicsInputs:
    """Billing's side of economics' live mode over the trailing ``window_days`` to ``now``.
    The ``internal`` orgs (the operator's own) are not customers: their rated usage is left
    out of every figure and reported as ``internal_revenue``."""
    window = _window(now, window_days)
    rated, every_line = rated_revenue(s, window, now)
    lines = [ln for ln in every_line if ln.org_id not in internal]
    own = sum((ln.amount for ln in every_line if ln.org_id in internal), Decimal(0))
    by_org = _sums((ln.org_id, ln.amount) for ln in lines)
    hours: dict[str, Decimal] = defaultdict(Decimal)
    exact: dict[str, Decimal] = defaultdict(Decimal)  # before rounding: no cents noise
    for ln in rated.lines:
        if ln.org_id in internal:
            continue
        hours[ln.sku.gpu_model] += ln.gpu_hours
        exact[ln.sku.gpu_model] += ln.gpu_hours * ln.unit_price
    prices = {m: exact[m] / h for m, h in sorted(hours.items()) if h > 0 and exact[m] > 0}
    return EconomicsInputs(
        window,
        rated.currency,
        _sums((ln.cls, ln.amount) for ln in lines),
        by_org,
        dict(sorted(hours.items())),
        prices,
        _sums(
            (org, v) for org, v in backlog_by_org(s, now).items() if v != 0 and org not in internal
        ),
        concentration_of(by_org, window.start, window.end, rated.currency),
        own,
    )


@dataclass(frozen=True)
class LiveData:
    """Everything economics' live mode reads of the platform, as its plain input shapes:
    the fleet's nodes, allocated against available GPU-hours over the window, and billing's
    figures (customers named by org slug)."""

    as_of: datetime
    nodes: list[NodeRecord]
    usage: Usage
    billed: BillingFigures
    internal: InternalUsage  # the operator's own usage, left out of the rest


def economics_live_data(*, db: Database, clock: Clock, window_days: int) -> LiveData:
    """Assemble live mode's inputs over the trailing ``window_days``: cohorts from the fleet,
    utilization from allocation intervals, revenue, backlog and concentration from billing.
    The operator's own orgs are not customers: their usage is left out and reported apart."""
    now = clock.now()
    window = _window(now, window_days)
    nodes, capacity = _node_records(db)
    with db.transaction() as s:
        operator = set(s.scalars(sa.select(OrgRow.id).where(OrgRow.is_operator.is_(True))))
        intervals, own = split_internal(_usage_intervals(s, window), operator)
        inputs = economics_inputs(s, now, window_days, internal=operator)
        orgs = set(inputs.revenue_by_org) | set(inputs.backlog_by_org) | operator
        orgs |= {iv.org for iv in intervals}
        slugs = _slugs(s, orgs)
    usage = measure_usage(intervals, capacity, window_start=window.start, window_end=window.end)
    usage = replace(usage, org_shares={slugs.get(k, k): v for k, v in usage.org_shares.items()})
    internal = InternalUsage(
        tuple(sorted(slugs.get(o, o) for o in operator)),
        float(inputs.internal_revenue),
        measure_usage(own, [], window_start=window.start, window_end=window.end).gpu_hours,
    )
    return LiveData(now, nodes, usage, _figures(inputs, window_days, slugs), internal)


def _figures(e: EconomicsInputs, window_days: int, slugs: Mapping[str, str]) -> BillingFigures:
    c = e.concentration
    prices = {model: float(p) for model, p in e.price_by_model.items()}
    return BillingFigures(
        window_days=window_days,
        currency=e.currency,
        revenue_by_class={k: float(v) for k, v in e.revenue_by_class.items()},
        revenue_by_customer={slugs.get(k, k): float(v) for k, v in e.revenue_by_org.items()},
        gpu_hours_by_model={k: float(v) for k, v in e.gpu_hours_by_model.items()},
        price_by_model=prices,
        backlog=float(e.backlog),
        backlog_by_customer={slugs.get(k, k): float(v) for k, v in e.backlog_by_org.items()},
        top1=float(c.top1),
        top2=float(c.top2),
        hhi=float(c.hhi),
        largest=None if c.largest is None else slugs.get(c.largest, c.largest),
    )


def live_inputs(
    data: LiveData,
    *,
    utilization: float | None = None,
    price: float | None = None,
    forward_years: int = 5,
    ltv: float = 0.7,
    rate: float = 0.11,
) -> LiveInputs:
    """Live mode's inputs from the platform's data; what the caller gives overrides it.
    Prices: given, else realized per GPU model from billing, else the catalog's list price.
    Customers: shares of billed revenue, else of allocated GPU-hours."""
    usage, billed = data.usage, data.billed
    days = billed.window_days
    used, source = choose_utilization(usage, given=utilization)
    if price is not None:
        prices, price_source = {n.gpu_model: price for n in data.nodes}, "given"
    elif billed.price_by_model:
        prices = dict(billed.price_by_model)
        shown = ", ".join(f"{m} ${p:,.4f}" for m, p in prices.items())
        price_source = (
            f"realized from billing over the trailing {days} days (average price of the "
            f"GPU-hours sold: {shown}); other models at the catalog list price"
        )
    else:
        prices, price_source = {}, "catalog list price (no GPU revenue billed in the window)"
    customers = billed.customer_shares
    if customers:
        conc_source = (
            f"shares of billed revenue over the trailing {days} days "
            f"({billed.currency} {billed.revenue:,.2f}; top-1 {billed.top1:.1%}, "
            f"top-2 {billed.top2:.1%}, HHI {billed.hhi:,.0f})"
        )
    elif usage.org_shares:
        customers = dict(usage.org_shares)
        conc_source = "shares of allocated GPU-hours (nothing billed in the window)"
    else:
        conc_source = "no allocations or revenue in the window"
    backlog_source = (
        f"billing: {billed.currency} {billed.backlog:,.2f} remaining contracted value across "
        f"{len(billed.backlog_by_customer)} customers (reported, not projected)"
        if billed.backlog_by_customer
        else "billing: no contracted backlog"
    )
    return LiveInputs(
        as_of=data.as_of.date(),
        forward_years=forward_years,
        utilization=used,
        utilization_source=source,
        price_per_gpu_hour=prices,
        price_source=price_source,
        customers=customers,
        concentration_source=conc_source,
        backlog_source=backlog_source,
        internal_source=data.internal.describe(billed.currency),
        ltv=ltv,
        rate=rate,
    )


def _usage_intervals(s: Session, window: Period) -> list[OrgAllocation]:
    """Allocation intervals overlapping the window (compute's facts), for utilization."""
    rows = s.execute(
        sa.select(
            AllocationRow.org_id,
            AllocationRow.gpu_count,
            AllocationRow.start_at,
            AllocationRow.end_at,
        ).where(
            AllocationRow.start_at < window.end,
            sa.or_(AllocationRow.end_at.is_(None), AllocationRow.end_at > window.start),
            HOLDS_GPUS,  # a reserved GPU with an instance on it is one GPU in use, not two
        )
    ).all()
    return [OrgAllocation(org, gpus, start, end) for org, gpus, start, end in rows]


def _slugs(s: Session, org_ids: set[str]) -> dict[str, str]:
    """Org ids as org slugs (what an operator recognises)."""
    if not org_ids:
        return {}
    query = sa.select(OrgRow.id, OrgRow.slug).where(OrgRow.id.in_(sorted(org_ids)))
    return {str(org): str(slug) for org, slug in s.execute(query).all()}


def _node_records(db: Database) -> tuple[list[NodeRecord], list[tuple[int, datetime]]]:
    """Every node not retired, and (GPUs, in service since) for the utilization denominator."""
    records: list[NodeRecord] = []
    capacity: list[tuple[int, datetime]] = []
    after: str | None = None
    while True:
        page = fleet_service.list_nodes(
            db=db, filters=fleet_service.NodeFilter(), limit=1000, after=after
        )
        for row in page.items:
            if row.state == NodeState.RETIRED.value:
                continue
            model = find_gpu_model(row.gpu_model)
            records.append(
                NodeRecord(
                    gpu_model=row.gpu_model,
                    gpu_count=row.gpu_count,
                    capex=None if row.capex_amount is None else float(row.capex_amount),
                    in_service=None if row.in_service_at is None else row.in_service_at.date(),
                    book_life_years=row.book_life_years,
                    gpu_tdp_w=float(model.tdp_w) if model else 700.0,
                    list_price_per_gpu_hour=(
                        float(model.list_price_per_gpu_hour.amount) if model else 2.0
                    ),
                )
            )
            # Capacity counts from when the platform knew the node: no allocation can predate it.
            since = max(row.in_service_at or row.created_at, row.created_at)
            capacity.append((row.gpu_count, since))
        if not page.has_more:
            return records, capacity
        after = page.next_cursor


__all__ = [
    "BACKSTOP",
    "BacklogReport",
    "Concentration",
    "EconomicsInputs",
    "LiveData",
    "RevenueLine",
    "RevenueReport",
    "backlog_report",
    "concentration_of",
    "concentration_report",
    "economics_inputs",
    "economics_live_data",
    "live_inputs",
    "months",
    "revenue_report",
]
