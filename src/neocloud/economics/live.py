"""Live mode: a scenario built from the platform's own records, projected forward.

The API hands in plain records (nodes with their capex and in-service dates, the catalog's TDP
and list price) and ``LiveInputs``; nothing here reads a database.

Utilization is *measured* from allocation intervals over a trailing window when there are any
(else *assumed*: 70%, or whatever the caller gives). Billing (``billing.reports``) fills
``BillingFigures`` over the same window: prices are the realized GPU revenue per GPU-hour sold
(else the catalog's list prices), customers' shares are their shares of billed revenue (else of
allocated GPU-hours), and the backlog and concentration are reported beside the projection;
every ``*_source`` field says which. Contracts are not yet projected as term contracts.

The operator's own orgs are not customers: their usage (tests, internal work) is left out of
revenue, prices, utilization and concentration, and reported beside them (``InternalUsage``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from neocloud.economics.scenario import Scenario, parse_scenario
from neocloud.kernel.errors import InvalidRequest

# An 8 x H100 SXM server is rated ~10.2 kW for 5.6 kW of GPU TDP: CPUs, memory, NICs, fans
# and PSU losses add ~80% to the GPUs' TDP.
NODE_POWER_OVER_GPU_TDP = 1.82


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """What live mode needs of one node (from the fleet, plain data)."""

    gpu_model: str
    gpu_count: int
    capex: float | None
    in_service: date | None
    book_life_years: float | None
    gpu_tdp_w: float
    list_price_per_gpu_hour: float


@dataclass(frozen=True, slots=True)
class OrgAllocation:
    """One org's allocation, for utilization: ``gpus`` GPUs held by ``org`` over
    ``[start, end)`` (``end`` None: still open). Not billing's rating ``Interval``, which
    carries what an allocation is priced by."""

    org: str
    gpus: int
    start: datetime
    end: datetime | None


def split_internal(
    intervals: list[OrgAllocation], internal: set[str]
) -> tuple[list[OrgAllocation], list[OrgAllocation]]:
    """Customers' allocations, and those of the ``internal`` orgs (the operator's own)."""
    own = [iv for iv in intervals if iv.org in internal]
    return [iv for iv in intervals if iv.org not in internal], own


@dataclass(frozen=True)
class InternalUsage:
    """The operator's own usage over the window, left out of the projection: what billing
    rated it at (``revenue``, in the billing currency) and its allocated GPU-hours."""

    orgs: tuple[str, ...] = ()  # the operator's orgs, by slug
    revenue: float = 0.0
    gpu_hours: float = 0.0

    def describe(self, currency: str) -> str:
        """One sentence for the report's sources: what was excluded, and how much."""
        if self.revenue == 0 and self.gpu_hours == 0:
            return "none in the window (the operator's own orgs are never counted as customers)"
        return (
            f"excluded: the operator's own usage ({', '.join(self.orgs)}), {currency} "
            f"{self.revenue:,.2f} rated over {self.gpu_hours:,.1f} GPU-hours, is not revenue: "
            "left out of revenue, prices, utilization and concentration"
        )


@dataclass(frozen=True)
class Usage:
    window_start: datetime
    window_end: datetime
    gpu_hours: float
    capacity_gpu_hours: float
    org_shares: dict[str, float]  # shares of allocated GPU-hours, largest first

    @property
    def utilization(self) -> float | None:
        if self.capacity_gpu_hours <= 0:
            return None
        return min(self.gpu_hours / self.capacity_gpu_hours, 1.0)


def _overlap_hours(start: datetime, end: datetime | None, w0: datetime, w1: datetime) -> float:
    lo, hi = max(start, w0), min(end or w1, w1)
    return max((hi - lo).total_seconds(), 0.0) / 3600.0


def measure_usage(
    intervals: list[OrgAllocation],
    capacity: list[tuple[int, datetime]],
    *,
    window_start: datetime,
    window_end: datetime,
) -> Usage:
    """Allocated GPU-hours over the window against the GPU-hours the fleet had in service
    (``capacity``: (GPUs, in service since) per node)."""
    used: dict[str, float] = defaultdict(float)
    for iv in intervals:
        used[iv.org] += iv.gpus * _overlap_hours(iv.start, iv.end, window_start, window_end)
    total = sum(used.values())
    available = sum(
        g * _overlap_hours(since, None, window_start, window_end) for g, since in capacity
    )
    shares = {org: h / total for org, h in sorted(used.items(), key=lambda kv: -kv[1]) if h > 0}
    return Usage(window_start, window_end, total, available, shares)


def choose_utilization(
    usage: Usage, *, given: float | None, assumed: float = 0.7
) -> tuple[float, str]:
    """The utilization to project with, and where it comes from: given by the caller,
    else measured over the window, else (no allocations in it) assumed."""
    days = (usage.window_end - usage.window_start).total_seconds() / 86400
    if given is not None:
        return given, "given"
    if usage.gpu_hours > 0 and usage.utilization is not None:
        return usage.utilization, (
            f"measured from allocation intervals over the trailing {days:g} days "
            f"({usage.gpu_hours:,.0f} of {usage.capacity_gpu_hours:,.0f} GPU-hours)"
        )
    return assumed, f"assumed (no allocations in the trailing {days:g} days)"


@dataclass(frozen=True)
class BillingFigures:
    """What billing rated over the trailing window, as plain numbers: revenue by class
    (on_demand, spot, reserved, tokens, backstop) and by customer, the realized price per GPU
    model (the average unit price of the GPU-hours sold), the backlog (remaining contracted
    value) and the customer concentration of the window's revenue (HHI, 0-10,000)."""

    window_days: int
    currency: str = "USD"
    revenue_by_class: dict[str, float] = field(default_factory=dict)
    revenue_by_customer: dict[str, float] = field(default_factory=dict)  # largest first
    gpu_hours_by_model: dict[str, float] = field(default_factory=dict)
    price_by_model: dict[str, float] = field(default_factory=dict)
    backlog: float = 0.0
    backlog_by_customer: dict[str, float] = field(default_factory=dict)
    top1: float = 0.0
    top2: float = 0.0
    hhi: float = 0.0
    largest: str | None = None

    @property
    def revenue(self) -> float:
        return sum(self.revenue_by_class.values())

    @property
    def customer_shares(self) -> dict[str, float]:
        total = sum(v for v in self.revenue_by_customer.values() if v > 0)
        if total <= 0:
            return {}
        return {k: v / total for k, v in self.revenue_by_customer.items() if v > 0}


@dataclass(frozen=True)
class LiveInputs:
    """Everything live mode takes besides the nodes; the ``*_source`` fields say where each
    figure comes from (given, measured, billed or assumed)."""

    as_of: date
    forward_years: int = 5
    utilization: float = 0.7
    utilization_source: str = "assumed"
    price_per_gpu_hour: dict[str, float] = field(default_factory=dict)  # by model; else list
    price_source: str = "catalog list price"
    customers: dict[str, float] = field(default_factory=dict)  # shares of revenue
    concentration_source: str = "not given"
    backlog_source: str = "not given"
    internal_source: str = "not given"  # the operator's own usage, left out (InternalUsage)
    economic_life_years: float = 6.0
    default_book_life_years: float = 6.0
    pue: float = 1.25
    power_price_per_kwh: float = 0.08
    colocation_per_kw_month: float = 150.0
    ltv: float = 0.7
    rate: float = 0.11
    term_years: int = 5
    discount_rate: float = 0.10
    tax_rate: float = 0.0


@dataclass(frozen=True)
class LiveScenario:
    scenario: Scenario
    sources: dict[str, str]
    skipped_nodes: int  # nodes without capex: they cost nothing we know of
    notes: list[str]


def _month_start(d: date) -> date:
    return date(d.year, d.month, 1)


def _cohorts(
    nodes: list[NodeRecord], inputs: LiveInputs
) -> tuple[list[dict[str, Any]], dict[str, float], int]:
    """Cohorts (nodes alike in model, size, in-service month, capex, book life), the hourly
    price per model, and how many nodes were left out for want of capex."""
    groups: dict[tuple[str, int, date, float, float, float, float], int] = defaultdict(int)
    skipped = 0
    for node in nodes:
        if node.capex is None:
            skipped += 1
            continue
        key = (
            node.gpu_model,
            node.gpu_count,
            _month_start(node.in_service or inputs.as_of),
            node.capex,
            node.book_life_years or inputs.default_book_life_years,
            node.gpu_tdp_w,
            node.list_price_per_gpu_hour,
        )
        groups[key] += 1
    cohorts: list[dict[str, Any]] = []
    prices: dict[str, float] = {}
    names: set[str] = set()
    for (model, count, when, capex, book, tdp, list_price), n in sorted(groups.items()):
        name = base = f"{model}-{count}x-{when:%Y-%m}"
        while name in names:  # same month, another capex or book life
            name = f"{base}-{len(names)}"
        names.add(name)
        cohorts.append(
            {
                "name": name,
                "gpu_model": model,
                "nodes": n,
                "gpus_per_node": count,
                "capex_per_node": capex,
                "in_service": when,
                "book_life_years": book,
                "economic_life_years": inputs.economic_life_years,
                "kw_per_node": round(count * tdp * NODE_POWER_OVER_GPU_TDP / 1000.0, 3),
            }
        )
        prices.setdefault(model, inputs.price_per_gpu_hour.get(model, list_price))
    return cohorts, prices, skipped


def build_live_scenario(nodes: list[NodeRecord], inputs: LiveInputs) -> LiveScenario:
    """Group nodes into cohorts and build the scenario; year one begins at the first
    cohort's in-service month, and the projection runs ``forward_years`` past today."""
    cohorts, prices, skipped = _cohorts(nodes, inputs)
    if not cohorts:
        raise InvalidRequest(
            f"live mode needs nodes with capex; the fleet has {len(nodes)} nodes and "
            f"{skipped} of them carry none",
            code="no_capex",
        )
    start = min(c["in_service"] for c in cohorts)
    elapsed = max(0, (inputs.as_of.year - start.year) * 12 + inputs.as_of.month - start.month)
    horizon = min(40, math.ceil(elapsed / 12) + inputs.forward_years)
    classes = [
        {
            "name": f"{model} hourly",
            "gpu_model": model,
            "price_per_gpu_hour": price,
            "utilization": inputs.utilization,
            "customers": inputs.customers,
        }
        for model, price in sorted(prices.items())
    ]
    data: dict[str, Any] = {
        "name": "live",
        "description": f"the platform's fleet as of {inputs.as_of.isoformat()}",
        "start": start,
        "horizon_years": horizon,
        "discount_rate": inputs.discount_rate,
        "tax_rate": inputs.tax_rate,
        "cohorts": cohorts,
        "financing": [
            {
                "name": "assumed senior debt",
                "ltv": inputs.ltv,
                "rate": inputs.rate,
                "term_years": inputs.term_years,
            }
        ]
        if inputs.ltv > 0
        else [],
        "opex": {
            "pue": inputs.pue,
            "power_price_per_kwh": inputs.power_price_per_kwh,
            "colocation_per_kw_month": inputs.colocation_per_kw_month,
        },
        "revenue": {"classes": classes},
    }
    sources = {
        "cohorts": "fleet nodes (capex, in-service date, GPU model, TDP)",
        "utilization": inputs.utilization_source,
        "price": inputs.price_source,
        "concentration": inputs.concentration_source,
        "backlog": inputs.backlog_source,
        "internal_usage": inputs.internal_source,
        "financing": "assumed",
    }
    notes = [
        f"year 1 begins {start.isoformat()} (the first cohort in service); "
        f"as of {inputs.as_of.isoformat()} is in year {elapsed // 12 + 1}",
        f"utilization {inputs.utilization:.1%}: {inputs.utilization_source}",
        f"prices: {inputs.price_source}; revenue is price x utilization",
    ]
    if skipped:
        notes.append(f"{skipped} nodes carry no capex and are left out")
    return LiveScenario(parse_scenario(data), sources, skipped, notes)
