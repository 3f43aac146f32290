"""Operator report figures, pure: the shapes of the revenue, backlog and concentration reports,
sums and shares (top-1, top-2, HHI) of revenue by customer, and economics' live-mode inputs made
from billing's figures. Plain data in, plain data out; ``billing.reports`` reads the facts.
Money is ``Decimal``; shares and the HHI are derived from it at the end.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from neocloud.billing.rating import Period
from neocloud.economics.live import (
    BillingFigures,
    InternalUsage,
    LiveInputs,
    NodeRecord,
    Usage,
    choose_utilization,
)
from neocloud.kernel.errors import ValidationFailed

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
class SkippedOrg:
    """An org whose figures could not be computed (its stored facts are out of range): left
    out of a report's figures and named, with the error's code, instead of failing the report."""

    org_id: str
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class RevenueReport:
    start: str  # first month, YYYY-MM
    end: str  # last month, inclusive
    currency: str
    as_of: datetime
    lines: tuple[RevenueLine, ...]
    names: dict[str, str] = field(default_factory=dict)  # org id -> slug
    skipped: tuple[SkippedOrg, ...] = ()  # orgs left out: their figures cannot be computed

    @property
    def total(self) -> Decimal:
        return sum((ln.amount for ln in self.lines), Decimal(0))

    def by(self, field: str) -> dict[str, Decimal]:
        """Sums by ``month``, ``org_id``, ``sku`` or ``cls``, largest first (then by name)."""
        return sums((getattr(ln, field), ln.amount) for ln in self.lines)


def sums(pairs: Iterable[tuple[str, Decimal]]) -> dict[str, Decimal]:
    """Amounts summed by key, largest first (then by key)."""
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


@dataclass(frozen=True, slots=True)
class BacklogReport:
    at: datetime
    by_org: dict[str, Decimal]  # remaining contracted value, largest first
    names: dict[str, str] = field(default_factory=dict)  # org id -> slug
    skipped: tuple[SkippedOrg, ...] = ()  # orgs left out: their figures cannot be computed

    @property
    def total(self) -> Decimal:
        return sum(self.by_org.values(), Decimal("0.00"))


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
    skipped: tuple[SkippedOrg, ...] = ()  # orgs left out: their figures cannot be computed


def concentration_of(
    revenue: Mapping[str, Decimal], window_start: datetime, window_end: datetime, currency: str
) -> Concentration:
    """Pure: shares, top-1, top-2 and HHI of ``revenue`` by customer (non-positive revenue is
    left out: a credit is not a customer)."""
    positive = sums((k, v) for k, v in revenue.items() if v > 0)
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


def trailing_window(now: datetime, window_days: int) -> Period:
    if not 1 <= window_days <= 3660:
        raise ValidationFailed("window_days is 1 to 3,660", param="window_days")
    return Period(now - timedelta(days=window_days), now)


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


def billing_figures(
    e: EconomicsInputs, window_days: int, slugs: Mapping[str, str]
) -> BillingFigures:
    """Billing's figures as economics' live mode reads them (floats; customers by slug)."""
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
