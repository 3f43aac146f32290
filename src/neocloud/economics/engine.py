"""The monthly projection: operations → P&L → cash flow → debt, on floats (see ``scenario``).

The engine always runs month by month; annual figures are sums of twelve months, so a monthly
and an annual report agree to the cent. Conventions, stated once:

* Revenue and opex accrue from a cohort's in-service month (purchase + power delay) until its
  economic life ends; an hour is ``hours_per_year / 12`` per month (8760 h a year by default).
* Power is drawn at the node's rated kW whatever the utilization (an idle H100 node is far from
  free); colocation is charged per IT kW, before PUE.
* Depreciation is straight-line to salvage over the book life from the in-service month. A cohort
  retired before the end of its book life (economic life < book life) writes its remaining book
  value off in its last month; it is sold for its salvage value then.
* Capex is paid in the purchase month; a cohort bought before the start counts at the start.
* Tax is computed per projection year on positive pre-tax profit after losses carried forward,
  and booked evenly over the year's months.
* Cash available for debt service (CFADS) = cash receipts - opex - tax (prepaid contracts move
  receipts ahead of revenue).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from neocloud.economics import debt
from neocloud.economics.scenario import ContractKind, Scenario
from neocloud.kernel.errors import ValidationFailed

Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Operations:
    """What the fleet does each month, before financing; every array has shape (months,)."""

    months: int
    class_revenue: Array
    class_revenue_at_full_use: Array  # the same capacity at 100% utilization
    contract_revenue: Array
    receipts: Array  # cash received (contract prepayments move it forward)
    power: Array
    colocation: Array
    other_opex: Array
    depreciation: Array  # includes write-offs of cohorts retired early
    capex: Array
    salvage: Array
    gpus: Array  # GPUs in service
    customers: dict[str, Array] = field(default_factory=dict)  # named customers' revenue

    @property
    def revenue(self) -> Array:
        return self.class_revenue + self.contract_revenue

    @property
    def opex(self) -> Array:
        return self.power + self.colocation + self.other_opex


@dataclass(frozen=True)
class Projection:
    """Monthly P&L, cash flow and debt of one scenario; arrays of shape (months,)."""

    scenario: Scenario
    ops: Operations
    revenue: Array
    ebitda: Array
    ebit: Array
    interest: Array
    ebt: Array
    tax: Array
    net_income: Array
    cfads: Array
    debt_service: Array
    interest_paid: Array
    principal_paid: Array
    draws: Array
    debt_balance: Array
    project_cash_flow: Array  # cfads - capex + salvage (unlevered; tax as actually paid)
    equity_cash_flow: Array  # project cash flow + draws - debt service

    @property
    def years(self) -> int:
        return self.ops.months // 12


def yearly(monthly: Array) -> Array:
    """Sum twelve months into a year along the last axis."""
    summed: Array = monthly.reshape(*monthly.shape[:-1], -1, 12).sum(axis=-1)
    return summed


def _span(start: int, length: int, months: int) -> npt.NDArray[np.bool_]:
    grid = np.arange(months)
    return (grid >= start) & (grid < start + length)


def _model_key(name: str | None) -> str | None:
    return None if name is None else name.strip().upper()


def operations(scenario: Scenario, *, without: Iterable[str] = ()) -> Operations:
    """The fleet's operations; ``without`` names customers whose revenue is lost (their
    contracted GPUs stay held and idle until the contract would have ended)."""
    lost = set(without)
    months = scenario.horizon_years * 12
    hours = scenario.hours_per_year / 12.0
    opex = scenario.opex
    zeros = np.zeros(months)
    power, colo, other = zeros.copy(), zeros.copy(), zeros + opex.staff_per_year / 12.0
    dep, capex, salvage = zeros.copy(), zeros.copy(), zeros.copy()
    active_by_model: dict[str | None, Array] = {}
    for cohort in scenario.cohorts:
        bought = scenario.month_of(cohort.in_service)
        live = bought + cohort.power_delay_months
        econ = max(1, round(cohort.economic_life_years * 12))
        book = max(1, round(cohort.book_life_years * 12))
        active = _span(live, econ, months)
        kw = cohort.nodes * cohort.kw_per_node
        power += active * kw * opex.pue * opex.power_price_per_kwh * hours
        colo += active * kw * opex.colocation_per_kw_month
        other += active * cohort.capex * opex.maintenance_fraction_per_year / 12.0
        base = cohort.capex * (1.0 - cohort.salvage_fraction)
        dep += _span(live, min(book, econ), months) * base / book
        retire = live + econ - 1
        if 0 <= retire < months:
            if econ < book:
                dep[retire] += base * (1.0 - econ / book)
            salvage[retire] += cohort.capex * cohort.salvage_fraction
        if bought < months:
            capex[max(bought, 0)] += cohort.capex
        key = _model_key(cohort.gpu_model)
        active_by_model[key] = active_by_model.get(key, zeros) + active * cohort.gpus
    gpus = sum(active_by_model.values(), zeros)
    contract_revenue, receipts_ahead, customers, free = _contracts(
        scenario, active_by_model, months, hours, lost
    )
    class_revenue, full_use = _classes(scenario, free, gpus, hours, lost, customers)
    receipts = class_revenue + contract_revenue + receipts_ahead
    return Operations(
        months,
        class_revenue,
        full_use,
        contract_revenue,
        receipts,
        power,
        colo,
        other,
        dep,
        capex,
        salvage,
        gpus,
        customers,
    )


def _contracts(
    scenario: Scenario,
    active_by_model: dict[str | None, Array],
    months: int,
    hours: float,
    lost: set[str],
) -> tuple[Array, Array, dict[str, Array], dict[str | None, Array]]:
    """Contract revenue, the receipts moved ahead by prepayment, per-customer revenue, and the
    GPUs left free for hourly classes, per model."""
    revenue, ahead = np.zeros(months), np.zeros(months)
    customers: dict[str, Array] = {}
    held: dict[str | None, Array] = {}
    for i, contract in enumerate(scenario.revenue.contracts):
        start = scenario.month_of(contract.start or scenario.start)
        span = _span(start, contract.months, months)
        key = _model_key(contract.gpu_model)
        if key is not None and key not in active_by_model:
            raise ValidationFailed(
                f"contract for {contract.customer}: no cohort has GPU model {contract.gpu_model}",
                param=f"revenue.contracts.{i}.gpu_model",
            )
        held[key] = held.get(key, np.zeros(months)) + span * contract.gpus
        if contract.customer in lost:
            continue
        rate = contract.price_per_gpu_hour
        if contract.kind is ContractKind.BACKSTOP:
            used = contract.utilization
            rate = used * rate + (1.0 - used) * contract.backstop_price_per_gpu_hour
        monthly: Array = span.astype(np.float64) * (contract.gpus * rate * hours)
        revenue += monthly
        customers[contract.customer] = customers.get(contract.customer, 0.0) + monthly
        if contract.kind is ContractKind.PREPAID and contract.prepaid_fraction > 0:
            prepaid = contract.prepaid_fraction * monthly
            ahead -= prepaid
            if 0 <= start < months:
                ahead[start] += (
                    contract.prepaid_fraction * contract.gpus * rate * hours * contract.months
                )
    free = {k: np.maximum(v - held.get(k, 0.0), 0.0) for k, v in active_by_model.items()}
    total = sum(free.values(), np.zeros(months))
    anywhere = held.get(None, np.zeros(months))
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(total > 0, np.maximum(total - anywhere, 0.0) / total, 0.0)
    return revenue, ahead, customers, {k: v * scale for k, v in free.items()}


def _classes(
    scenario: Scenario,
    free: dict[str | None, Array],
    gpus: Array,
    hours: float,
    lost: set[str],
    customers: dict[str, Array],
) -> tuple[Array, Array]:
    months = gpus.shape[0]
    revenue, full_use = np.zeros(months), np.zeros(months)
    shares: dict[str | None, float] = {}
    for i, cls in enumerate(scenario.revenue.classes):
        key = _model_key(cls.gpu_model)
        if key is not None and key not in free:
            raise ValidationFailed(
                f"revenue class {cls.name}: no cohort has GPU model {cls.gpu_model}",
                param=f"revenue.classes.{i}.gpu_model",
            )
        shares[key] = shares.get(key, 0.0) + cls.share
        pool = sum(free.values(), np.zeros(months)) if key is None else free[key]
        at_full = pool * cls.share * cls.price_per_gpu_hour * hours
        kept = 1.0 - sum(s for name, s in cls.customers.items() if name in lost)
        monthly = at_full * cls.utilization
        for name, share in cls.customers.items():
            if name not in lost:
                customers[name] = customers.get(name, 0.0) + monthly * share
        revenue += monthly * kept
        full_use += at_full * kept
    anywhere = shares.get(None, 0.0)
    for key, share in shares.items():
        if share + (anywhere if key is not None else 0.0) > 1.0 + 1e-9:
            raise ValidationFailed(
                f"revenue classes sell more than all of the {key or 'fleet'}'s GPUs "
                f"(shares sum to {share + (anywhere if key else 0.0):.2f})",
                param="revenue.classes",
            )
    return revenue, full_use


def capex_by_month(scenario: Scenario) -> dict[int, float]:
    """Capex paid per month of the grid (a cohort bought before the start counts at month 0;
    one bought after the horizon does not count)."""
    months = scenario.horizon_years * 12
    paid: dict[int, float] = {}
    for cohort in scenario.cohorts:
        bought = scenario.month_of(cohort.in_service)
        if bought < months:
            paid[max(bought, 0)] = paid.get(max(bought, 0), 0.0) + cohort.capex
    return paid


def debt_schedule(
    scenario: Scenario, *, rates_shift: Array | None = None, shift_fixed: bool = True
) -> debt.DebtSchedule:
    """All tranches on the monthly grid; ``rates_shift`` adds to annual rates, one per path
    (fixed-rate tranches move too unless ``shift_fixed`` is false)."""
    months = scenario.horizon_years * 12
    shifts = np.zeros(1) if rates_shift is None else np.asarray(rates_shift, dtype=np.float64)
    total = debt.zero(shifts.shape[0], months)
    purchases = capex_by_month(scenario)
    for tranche in scenario.financing:
        moved = shifts if (tranche.floating or shift_fixed) else np.zeros_like(shifts)
        rates = np.maximum(tranche.rate + moved, 0.0)
        if tranche.principal is not None or tranche.draw is not None:
            principal = (
                tranche.principal
                if tranche.principal is not None
                else (tranche.ltv or 0.0) * scenario.capex
            )
            draws = {scenario.month_of(tranche.draw or scenario.start): principal}
        else:  # ltv without a draw date: drawn as the capex is paid, each draw amortising
            draws = {m: (tranche.ltv or 0.0) * amount for m, amount in purchases.items()}
        for month, principal in draws.items():
            part = debt.schedule(
                tranche, principal=principal, draw_month=month, months=months, rates=rates
            )
            debt.add_into(total, part)
    return total


def annual_tax(ebt_yearly: Array, rate: float) -> Array:
    """Tax per year on positive profit after losses carried forward; works along the last
    axis for any leading (path) shape."""
    tax = np.zeros_like(ebt_yearly)
    carried = np.zeros(ebt_yearly.shape[:-1])
    for year in range(ebt_yearly.shape[-1]):
        profit = ebt_yearly[..., year] - carried
        tax[..., year] = rate * np.maximum(profit, 0.0)
        carried = np.maximum(-profit, 0.0)
    return tax


def project(
    scenario: Scenario,
    *,
    without: Iterable[str] = (),
    rate_shift: float = 0.0,
    shift_fixed: bool = True,
) -> Projection:
    """Project ``scenario`` month by month (see the module's conventions)."""
    ops = operations(scenario, without=without)
    sched = debt_schedule(scenario, rates_shift=np.array([rate_shift]), shift_fixed=shift_fixed)
    revenue = ops.revenue
    ebitda = revenue - ops.opex
    ebit = ebitda - ops.depreciation
    interest = sched.interest_expense[0]
    ebt = ebit - interest
    tax = np.repeat(annual_tax(yearly(ebt), scenario.tax_rate) / 12.0, 12)
    cfads = ops.receipts - ops.opex - tax
    service = sched.debt_service[0]
    project_cf = cfads - ops.capex + ops.salvage
    return Projection(
        scenario=scenario,
        ops=ops,
        revenue=revenue,
        ebitda=ebitda,
        ebit=ebit,
        interest=interest,
        ebt=ebt,
        tax=tax,
        net_income=ebt - tax,
        cfads=cfads,
        debt_service=service,
        interest_paid=sched.interest_paid[0],
        principal_paid=sched.principal_paid[0],
        draws=sched.draws[0],
        debt_balance=sched.balance[0],
        project_cash_flow=project_cf,
        equity_cash_flow=project_cf + sched.draws[0] - service,
    )


def timed_series(at_end: Array, at_start: Array, *, annual: bool) -> Array:
    """Cash flows for NPV/IRR: ``at_start`` flows (capex, draws) happen at the start of their
    month (t = m), ``at_end`` flows (operations, debt service, salvage) at its end (t = m + 1).
    ``annual`` buckets them by year: month ends into year ends, a start-of-month flow into the
    year end before it (t = ceil(m / 12); a first-month capex lands at the year's start)."""
    months = at_end.shape[-1]
    series = np.zeros(months + 1)
    series[1:] += at_end
    series[:-1] += at_start
    if not annual:
        return series
    years = np.zeros(months // 12 + 1)
    index = np.ceil(np.arange(months + 1) / 12).astype(int)
    np.add.at(years, index, series)
    return years


def project_flows(p: Projection, *, annual: bool) -> Array:
    return timed_series(p.cfads + p.ops.salvage, -p.ops.capex, annual=annual)


def equity_flows(p: Projection, *, annual: bool) -> Array:
    at_end = p.cfads + p.ops.salvage - p.debt_service
    return timed_series(at_end, p.draws - p.ops.capex, annual=annual)
