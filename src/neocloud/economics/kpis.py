"""What lenders and boards ask of a projection: cover ratios, breakevens, returns, concentration.

Every ratio is ``None`` where its denominator is zero (no debt service, no interest), and every
return is ``None`` where it is undefined (no sign change, no root): never a made-up number.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from neocloud.economics.finance import annualize, irr, npv, payback_periods
from neocloud.economics.projection import (
    Array,
    Projection,
    equity_flows,
    project,
    project_flows,
    tax_basis,
    tax_years,
    yearly,
)
from neocloud.economics.scenario import Scenario


def ratio(numerator: float, denominator: float) -> float | None:
    return None if abs(denominator) < 1e-9 else numerator / denominator


def ratios(numerators: Array, denominators: Array) -> list[float | None]:
    return [ratio(float(n), float(d)) for n, d in zip(numerators, denominators, strict=True)]


@dataclass(frozen=True)
class Covers:
    """Per projection year."""

    dscr: list[float | None]
    ebitda_interest_cover: list[float | None]
    ebit_interest_cover: list[float | None]

    @property
    def min_dscr(self) -> float | None:
        return _min(self.dscr)

    @property
    def min_ebit_interest_cover(self) -> float | None:
        return _min(self.ebit_interest_cover)

    @property
    def min_ebitda_interest_cover(self) -> float | None:
        return _min(self.ebitda_interest_cover)


def _min(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def covers(p: Projection) -> Covers:
    interest = yearly(p.interest)
    return Covers(
        dscr=ratios(yearly(p.cfads), yearly(p.debt_service)),
        ebitda_interest_cover=ratios(yearly(p.ebitda), interest),
        ebit_interest_cover=ratios(yearly(p.ebit), interest),
    )


@dataclass(frozen=True)
class Returns:
    """IRRs and NPVs include the terminal value (after its tax); the ``*_without_terminal``
    figures leave it out, so its weight shows. Payback never counts it."""

    project_irr: float | None  # annual periods (capex at the start, flows at year ends)
    project_irr_monthly: float | None  # monthly flows, as an effective annual rate
    equity_irr: float | None
    equity_irr_monthly: float | None
    npv: float  # project flows at the scenario's discount rate, annual periods
    equity_npv: float
    payback_years: float | None
    terminal_value: float  # before tax, at the horizon's end
    terminal_value_tax: float
    terminal_value_pv: float  # after tax, discounted to the start
    project_irr_without_terminal: float | None
    equity_irr_without_terminal: float | None
    npv_without_terminal: float
    equity_npv_without_terminal: float


def returns(p: Projection) -> Returns:
    rate = p.scenario.discount_rate
    project_annual = project_flows(p, annual=True)
    equity_annual = equity_flows(p, annual=True)
    project_bare = project_flows(p, annual=True, terminal=False)
    equity_bare = equity_flows(p, annual=True, terminal=False)
    after_tax = p.terminal_value - p.terminal_value_tax
    project_irr, equity_irr = irr(project_annual), irr(equity_annual)
    if after_tax == 0.0:  # the same flows: no need to search for their roots again
        project_irr_bare, equity_irr_bare = project_irr, equity_irr
    else:
        project_irr_bare, equity_irr_bare = irr(project_bare), irr(equity_bare)
    return Returns(
        project_irr=project_irr,
        project_irr_monthly=annualize(irr(project_flows(p, annual=False), guess=0.01), 12),
        equity_irr=equity_irr,
        equity_irr_monthly=annualize(irr(equity_flows(p, annual=False), guess=0.01), 12),
        npv=npv(rate, project_annual),
        equity_npv=npv(rate, equity_annual),
        payback_years=payback_periods(project_bare),
        terminal_value=p.terminal_value,
        terminal_value_tax=p.terminal_value_tax,
        terminal_value_pv=after_tax * (1.0 + rate) ** -p.years,
        project_irr_without_terminal=project_irr_bare,
        equity_irr_without_terminal=equity_irr_bare,
        npv_without_terminal=npv(rate, project_bare),
        equity_npv_without_terminal=npv(rate, equity_bare),
    )


@dataclass(frozen=True)
class Breakevens:
    """Utilization of the hourly-sold (uncontracted) GPUs at which year one just breaks even,
    every hourly class's utilization set to the same value and prices unchanged; ``None`` when
    no utilization in [0, 1] reaches it. ``price_at_npv_zero`` scales every hourly price by one
    factor until the project NPV is zero; it is quoted as the first class's price."""

    cash: float | None  # EBITDA = 0
    full_cost: float | None  # pre-tax profit = 0 (opex + depreciation + interest)
    debt_service: float | None  # DSCR = 1
    price_at_npv_zero: float | None
    price_factor_at_npv_zero: float | None


def breakevens(p: Projection) -> Breakevens:
    s = p.scenario
    year = slice(0, 12)
    full = float(p.ops.class_revenue_at_full_use[year].sum())
    fixed = float(p.ops.contract_revenue[year].sum())
    opex = float(p.ops.opex[year].sum())
    dep = float(p.ops.depreciation[year].sum())
    interest = float(p.interest[year].sum())
    service = float(p.debt_service[year].sum())
    ahead = float((p.ops.receipts - p.ops.revenue)[year].sum())  # prepayments
    # Taxable profit moves one for one with revenue; its other parts are fixed in year one.
    taxable_rest = float((p.ebt - p.revenue - tax_basis(s).difference)[year].sum())

    def solve(revenue_needed: float) -> float | None:
        if full <= 0:
            return None
        u = (revenue_needed - fixed) / full
        return max(u, 0.0) if u <= 1.0 + 1e-12 else None

    def cfads(u: float) -> float:
        revenue = fixed + full * u
        taxable = np.array([revenue + taxable_rest])
        tax = float(tax_years(s, taxable).current[0])
        return revenue + ahead - opex - tax

    debt_service: float | None = None
    if full > 0 and service > 0 and cfads(1.0) >= service:
        low, high = 0.0, 1.0  # cash tax never rises faster than revenue: cfads is monotone
        if cfads(0.0) >= service:
            high = 0.0
        for _ in range(80):
            mid = 0.5 * (low + high)
            low, high = (mid, high) if cfads(mid) < service else (low, mid)
        debt_service = high
    factor = _price_factor(s)
    price = s.revenue.classes[0].price_per_gpu_hour * factor if factor is not None else None
    return Breakevens(
        cash=solve(opex),
        full_cost=solve(opex + dep + interest),
        debt_service=debt_service,
        price_at_npv_zero=price,
        price_factor_at_npv_zero=factor,
    )


def _price_factor(s: Scenario) -> float | None:
    """Bisection on one factor over every hourly price until project NPV = 0."""
    if not s.revenue.classes:
        return None

    def value(factor: float) -> float:
        scaled = s.model_copy(
            update={
                "revenue": s.revenue.model_copy(
                    update={
                        "classes": [
                            c.model_copy(
                                update={"price_per_gpu_hour": c.price_per_gpu_hour * factor}
                            )
                            for c in s.revenue.classes
                        ]
                    }
                )
            }
        )
        q = project(scaled)
        return npv(s.discount_rate, project_flows(q, annual=True))

    low, high = 0.0, 1.0
    f_low, f_high = value(low), value(high)
    while f_high < 0 and high < 1024:
        low, f_low = high, f_high
        high *= 2
        f_high = value(high)
    if f_low >= 0:
        return 0.0
    if f_high < 0:
        return None
    for _ in range(60):
        mid = 0.5 * (low + high)
        if value(mid) < 0:
            low = mid
        else:
            high = mid
    return 0.5 * (low + high)


@dataclass(frozen=True)
class Concentration:
    """Named customers' shares of year-one revenue; the rest is many small customers, which
    add (almost) nothing to the HHI. HHI on the 0-10,000 scale."""

    shares: dict[str, float]
    top1: float
    top2: float
    hhi: float
    largest: str | None


def concentration(p: Projection) -> Concentration:
    total = float(p.revenue[:12].sum())
    named = {n: float(v[:12].sum()) for n, v in p.ops.customers.items()}
    shares = {n: (v / total if total > 0 else 0.0) for n, v in named.items()}
    ordered = sorted(shares.items(), key=lambda kv: kv[1], reverse=True)
    return Concentration(
        shares=dict(ordered),
        top1=ordered[0][1] if ordered else 0.0,
        top2=sum(v for _, v in ordered[:2]),
        hhi=float(np.sum(np.square(np.array([v for _, v in ordered]) * 100.0))),
        largest=ordered[0][0] if ordered else None,
    )
