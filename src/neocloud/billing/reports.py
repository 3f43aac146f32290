"""Operator revenue reports: revenue by org, SKU, class and month; backlog; customer
concentration; and the inputs economics' live mode projects from.

Revenue is re-derived from the facts (the same rating as invoices: allocation intervals with
failed time excluded, Studio token usage, each part at the price book version in force then)
plus what backstop agreements owe for unsold capacity. It is usage revenue as rated: contract
true-ups, reservation charges and credits are invoice matters and are left out. Backlog is
what contracts have still to bill (``backlog_by_org``). This module reads the facts; the
reports' shapes, shares and the HHI are pure (``billing.report_figures``).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.orm import Session

from neocloud.billing import ledger
from neocloud.billing.adjustments import period_name
from neocloud.billing.agreement_lines import is_cancelled
from neocloud.billing.contracts import backstop, gpu_hours_value, monthly_value, overlap, round_line
from neocloud.billing.kinds import ContractKind, LineKind, ReservationBilling
from neocloud.billing.rating import (
    RESERVED,
    Line,
    Period,
    Sku,
    TokenLine,
    billable_seconds,
    merge_spans,
)
from neocloud.billing.report_figures import (
    BacklogReport,
    Concentration,
    EconomicsInputs,
    LiveData,
    RevenueLine,
    RevenueReport,
    SkippedOrg,
    billing_figures,
    concentration_of,
    live_inputs,
    months,
    sums,
    trailing_window,
)
from neocloud.billing.service import (
    HOLDS_GPUS,
    Rated,
    load_intervals,
    load_outages,
    price_book_at,
    price_books_during,
    rate_org_period,
)
from neocloud.billing.tables import ContractRow, UsageEventRow
from neocloud.compute.tables import AllocationRow
from neocloud.db.engine import Database
from neocloud.economics.live import (
    InternalUsage,
    NodeRecord,
    OrgAllocation,
    measure_usage,
    split_internal,
)
from neocloud.fleet import service as fleet_service
from neocloud.fleet.catalog import find_gpu_model
from neocloud.fleet.domain import NodeState
from neocloud.kernel.auth import Principal
from neocloud.kernel.clock import Clock
from neocloud.kernel.errors import Conflict, NeocloudError, ValidationFailed
from neocloud.kernel.money import Money
from neocloud.tenancy.tables import OrgRow

log = logging.getLogger(__name__)


def rated_revenue(
    s: Session, period: Period, now: datetime
) -> tuple[Rated, list[RevenueLine], tuple[SkippedOrg, ...]]:
    """Every org's revenue over ``period`` (up to ``now``): rated usage and backstops; the
    rating it comes from; and the orgs left out because their figures cannot be computed
    (``rate_every_org``). ``month`` on the lines is the month ``period`` starts in."""
    name = period_name(period)
    backstop_cls = ContractKind.BACKSTOP.value  # a revenue class as the reports show it
    skipped: list[SkippedOrg] = []
    rated = rate_every_org(s, period, now, skipped)
    out = [
        RevenueLine(name, ln.org_id, ln.sku.code, ln.sku.cls, ln.amount.amount)
        for ln in rated.invoice_lines()
        if ln.amount.amount != 0
    ]
    out += [
        RevenueLine(name, b.org_id, f"{b.gpu_model}.{backstop_cls}", backstop_cls, b.amount)
        for b in backstop_revenue(s, period, now=now, skipped=skipped)
        if b.amount != 0
    ]
    gone = {k.org_id for k in skipped}
    return rated, [ln for ln in out if ln.org_id not in gone], _unique(skipped)


def rate_every_org(s: Session, period: Period, now: datetime, skipped: list[SkippedOrg]) -> Rated:
    """Every org's usage of ``period`` rated at once (by org, not by project). If one org's
    stored facts cannot be rated (a 409 such as ``amount_out_of_range``), each org is rated
    alone and those that fail are left out and added to ``skipped``: one org's bad data never
    fails an operator's report."""
    try:
        return rate_org_period(s, None, period, now, by_project=False)
    except Conflict:
        pass
    books = price_books_during(s, period)
    lines: list[Line] = []
    tokens: list[TokenLine] = []
    for org_id in _orgs_with_usage(s, period):
        try:
            one = rate_org_period(s, org_id, period, now, by_project=False)
        except Conflict as exc:
            skipped.append(_skip(org_id, exc))
            continue
        lines += one.lines
        tokens += one.token_lines
    return Rated(books[0].version, books[0].currency, tuple(lines), tuple(tokens))


def _orgs_with_usage(s: Session, period: Period) -> list[str]:
    """The orgs with GPU time or usage events in ``period``: those rating may bill."""
    queries = [
        sa.select(AllocationRow.org_id).where(
            AllocationRow.start_at < period.end,
            sa.or_(AllocationRow.end_at.is_(None), AllocationRow.end_at > period.start),
        ),
        sa.select(UsageEventRow.org_id).where(
            UsageEventRow.time >= period.start, UsageEventRow.time < period.end
        ),
    ]
    return sorted({org for q in queries for org in s.scalars(q.distinct())})


def _skip(org_id: str, exc: NeocloudError) -> SkippedOrg:
    log.error("report: %s left out: %s (%s)", org_id, exc.code, exc.message)
    return SkippedOrg(org_id, exc.code, exc.message)


def _unique(skipped: list[SkippedOrg]) -> tuple[SkippedOrg, ...]:
    """One entry per org (its first error), in org order."""
    first: dict[str, SkippedOrg] = {}
    for k in skipped:
        first.setdefault(k.org_id, k)
    return tuple(first[org] for org in sorted(first))


def revenue_report(
    *, db: Database, clock: Clock, principal: Principal, start: str, end: str
) -> RevenueReport:
    """Revenue by org, SKU, class and month from ``start`` to ``end`` (YYYY-MM, inclusive);
    the current month counts up to now. Operators only. An org whose figures cannot be
    computed is left out of every month and listed in ``skipped``."""
    principal.require_operator()
    periods = months(start, end)
    now = clock.now()
    lines: list[RevenueLine] = []
    skipped: list[SkippedOrg] = []
    currency = "USD"
    with db.transaction() as s:
        for period in periods:
            rated, month_lines, month_skipped = rated_revenue(s, period, now)
            currency = rated.currency
            lines += month_lines
            skipped += month_skipped
        gone = {k.org_id for k in skipped}
        lines = [ln for ln in lines if ln.org_id not in gone]
        names = _slugs(s, {ln.org_id for ln in lines} | gone)
    lines.sort(key=lambda ln: (ln.month, ln.org_id, ln.sku))
    return RevenueReport(start, end, currency, now, tuple(lines), names, _unique(skipped))


# -- backlog ----------------------------------------------------------------------------------


def backlog_by_org(
    s: Session, at: datetime, skipped: list[SkippedOrg] | None = None
) -> dict[str, Decimal]:
    """Remaining contracted value per org at ``at`` (rounded to the cent): committed spend and
    committed capacity still to come (partial months prorated), prepaid balance not yet drawn
    by finalized invoices, and reservation charges not yet due (monthly: the rest of the term;
    upfront: the whole charge if it starts after ``at``). Backstops are contingent (they pay
    only for unsold capacity) and are not backlog; see ``backstop_revenue``. With ``skipped``,
    an org whose contracts cannot be valued is left out and added there (else: raised)."""
    contracts = list(
        s.scalars(
            sa.select(ContractRow)
            .where(ContractRow.end_at > at, ContractRow.kind != ContractKind.BACKSTOP)
            .order_by(ContractRow.id)
        )
    )
    prepaid = [c.id for c in contracts if c.kind == ContractKind.PREPAID]
    drawn = ledger.drawn(s, prepaid, LineKind.DRAWDOWN)
    out: dict[str, Decimal] = {}
    failed: list[SkippedOrg] = []
    for c in contracts:
        try:
            value = _remaining(s, c, at, drawn)
        except Conflict as exc:  # a stored amount out of range: that org, not the report
            if skipped is None:
                raise
            failed.append(_skip(c.org_id, exc))
            continue
        if value is not None:
            out[c.org_id] = out.get(c.org_id, Decimal(0)) + value
    if skipped is not None:
        skipped += failed
    gone = {k.org_id for k in failed}
    return {org: round_line(v) for org, v in sorted(out.items()) if org not in gone}


def _remaining(
    s: Session, c: ContractRow, at: datetime, drawn: Mapping[str, Decimal]
) -> Decimal | None:
    """What contract ``c`` has still to bill at ``at`` (None: nothing, it is not backlog)."""
    lo = max(at, c.start_at)
    if c.kind == ContractKind.COMMIT_SPEND:
        value = monthly_value(c.amount or Decimal(0), lo, c.end_at)
    elif c.kind == ContractKind.COMMIT_CAPACITY:
        value = gpu_hours_value(c.gpus or 0, c.rate or Decimal(0), lo, c.end_at)
    elif c.kind == ContractKind.PREPAID:
        value = max((c.amount or Decimal(0)) - drawn.get(c.id, Decimal(0)), Decimal(0))
    else:
        upfront = c.billing == ReservationBilling.UPFRONT
        if (upfront and c.start_at <= at) or is_cancelled(s, c):
            return None
        book = price_book_at(s, c.start_at if upfront else lo)
        unit = book.price(Sku(c.gpu_model or "", RESERVED, c.term or "1m"))
        value = gpu_hours_value(c.gpus or 0, unit, c.start_at if upfront else lo, c.end_at)
    round_line(value)  # out of range is the contract's org's failure, found here
    return value


@dataclass(frozen=True, slots=True)
class BackstopRevenue:
    contract_id: str
    org_id: str
    counterparty: str | None
    gpu_model: str
    committed_gpu_hours: Decimal
    sold_gpu_hours: Decimal
    amount: Decimal  # what the counterparty owes for the unsold part


def backstop_revenue(
    s: Session, period: Period, *, now: datetime, skipped: list[SkippedOrg] | None = None
) -> list[BackstopRevenue]:
    """Operator revenue from backstop agreements for ``period``: for each, the counterparty pays
    its rate for the committed GPU-hours of its GPU model that no tenant bought (sold hours
    are all orgs' billable GPU-hours of that model, failed time excluded). With ``skipped``, a
    backstop whose amount cannot be computed is left out and its org added there."""
    rows = list(
        s.scalars(
            sa.select(ContractRow)
            .where(
                ContractRow.kind == ContractKind.BACKSTOP,
                ContractRow.start_at < period.end,
                ContractRow.end_at > period.start,
            )
            .order_by(ContractRow.id)
        )
    )
    out = []
    for c in rows:
        lo, hi = max(c.start_at, period.start), min(c.end_at, period.end, max(now, period.start))
        if hi <= lo:
            continue
        window = Period(lo, hi)
        sold = _sold_gpu_hours(s, c.gpu_model or "", window)
        hours = overlap(lo, hi, window) / Decimal(3600)
        try:
            amount = backstop(c.gpus or 0, sold, hours, Money(c.rate or Decimal(0), c.currency))
        except Conflict as exc:
            if skipped is None:
                raise
            skipped.append(_skip(c.org_id, exc))
            continue
        out.append(
            BackstopRevenue(
                c.id,
                c.org_id,
                c.counterparty,
                c.gpu_model or "",
                Decimal(c.gpus or 0) * hours,
                sold,
                amount.amount,
            )
        )
    return out


def _sold_gpu_hours(s: Session, gpu_model: str, window: Period) -> Decimal:
    intervals = [iv for iv in load_intervals(s, None, window) if iv.gpu_model == gpu_model]
    outages = load_outages(s, {iv.node_id for iv in intervals}, window.end)
    spans: dict[str, list[tuple[datetime, datetime]]] = {}
    for o in outages:
        spans.setdefault(o.node_id, []).append((o.start, o.end or window.end))
    merged = {node: merge_spans(v) for node, v in spans.items()}
    total = Decimal(0)
    for iv in intervals:
        secs = billable_seconds(iv, merged.get(iv.node_id, []), window.start, window.end)
        total += secs * iv.gpus
    return total / Decimal(3600)


def backlog_report(*, db: Database, clock: Clock, principal: Principal) -> BacklogReport:
    """Remaining contracted value per org now (``backlog_by_org``)."""
    principal.require_operator()
    now = clock.now()
    skipped: list[SkippedOrg] = []
    with db.transaction() as s:
        values = backlog_by_org(s, now, skipped)
        names = _slugs(s, set(values) | {k.org_id for k in skipped})
    return BacklogReport(
        now, sums((org, v) for org, v in values.items() if v != 0), names, _unique(skipped)
    )


# -- concentration ----------------------------------------------------------------------------


def concentration_report(
    *, db: Database, clock: Clock, principal: Principal, window_days: int = 90
) -> Concentration:
    """Customer concentration over the trailing ``window_days``. Operators only."""
    principal.require_operator()
    now = clock.now()
    window = trailing_window(now, window_days)
    with db.transaction() as s:
        rated, lines, skipped = rated_revenue(s, window, now)
        names = _slugs(s, {ln.org_id for ln in lines} | {k.org_id for k in skipped})
    by_org = sums((ln.org_id, ln.amount) for ln in lines)
    conc = concentration_of(by_org, window.start, window.end, rated.currency)
    return replace(conc, names=names, skipped=skipped)


# -- utilization over time --------------------------------------------------------------------

MAX_UTILIZATION_POINTS = 2_000


@dataclass(frozen=True, slots=True)
class UtilizationPoint:
    start: datetime
    end: datetime
    gpu_hours: float  # allocated GPU-hours in the step (every org's, the operator's own included)
    capacity_gpu_hours: float  # GPU-hours of the nodes in service in the step
    utilization: float | None  # their ratio (None when no node was in service)


def utilization_series(
    *, db: Database, clock: Clock, principal: Principal, window_days: int, step_hours: int
) -> list[UtilizationPoint]:
    """Allocated over in-service GPU-hours in steps of ``step_hours`` over the trailing
    ``window_days``, from compute's allocation intervals (what live mode's utilization is
    measured from). Operators only."""
    principal.require_operator()
    if not 1 <= step_hours <= 24 * 31:
        raise ValidationFailed("step_hours is 1 to 744", param="step_hours")
    window = trailing_window(clock.now(), window_days)
    step = timedelta(hours=step_hours)
    if (window.end - window.start) / step > MAX_UTILIZATION_POINTS:
        raise ValidationFailed(
            f"at most {MAX_UTILIZATION_POINTS:,} points: a longer step_hours or a shorter "
            "window_days",
            param="step_hours",
        )
    capacity = fleet_service.gpu_capacity(db=db)
    with db.transaction() as s:
        intervals = _usage_intervals(s, window)
    points: list[UtilizationPoint] = []
    start = window.start
    while start < window.end:
        end = min(start + step, window.end)
        u = measure_usage(intervals, capacity, window_start=start, window_end=end)
        points.append(
            UtilizationPoint(start, end, u.gpu_hours, u.capacity_gpu_hours, u.utilization)
        )
        start = end
    return points


# -- economics live mode ----------------------------------------------------------------------


def economics_inputs(
    s: Session, now: datetime, window_days: int, *, internal: Collection[str] = ()
) -> EconomicsInputs:
    """Billing's side of economics' live mode over the trailing ``window_days`` to ``now``.
    The ``internal`` orgs (the operator's own) are not customers: their rated usage is left
    out of every figure and reported as ``internal_revenue``."""
    window = trailing_window(now, window_days)
    rated, every_line, _ = rated_revenue(s, window, now)  # orgs that cannot be rated: left out
    lines = [ln for ln in every_line if ln.org_id not in internal]
    own = sum((ln.amount for ln in every_line if ln.org_id in internal), Decimal(0))
    by_org = sums((ln.org_id, ln.amount) for ln in lines)
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
        sums((ln.cls, ln.amount) for ln in lines),
        by_org,
        dict(sorted(hours.items())),
        prices,
        sums(
            (org, v)
            for org, v in backlog_by_org(s, now, []).items()
            if v != 0 and org not in internal
        ),
        concentration_of(by_org, window.start, window.end, rated.currency),
        own,
    )


def economics_live_data(*, db: Database, clock: Clock, window_days: int) -> LiveData:
    """Assemble live mode's inputs over the trailing ``window_days``: cohorts from the fleet,
    utilization from allocation intervals, revenue, backlog and concentration from billing.
    The operator's own orgs are not customers: their usage is left out and reported apart."""
    now = clock.now()
    window = trailing_window(now, window_days)
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
    return LiveData(now, nodes, usage, billing_figures(inputs, window_days, slugs), internal)


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


# Reports' shapes and pure figures live in ``billing.report_figures``; these are read from here.
__all__ = [
    "BacklogReport",
    "BackstopRevenue",
    "Concentration",
    "EconomicsInputs",
    "LiveData",
    "RevenueLine",
    "RevenueReport",
    "SkippedOrg",
    "backlog_by_org",
    "backlog_report",
    "backstop_revenue",
    "concentration_of",
    "concentration_report",
    "economics_inputs",
    "economics_live_data",
    "live_inputs",
    "months",
    "revenue_report",
]
