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
* Tax is computed per projection year and booked evenly over its months. Current tax (cash) is
  paid on positive taxable profit (pre-tax profit with tax depreciation instead of book, and
  salvage taxed as a gain) after losses carried forward, which may offset at most
  ``tax_loss_offset_limit`` of a year's profit. Deferred tax is the rate times the change in the
  temporary difference (net book value - tax basis), less the change in losses carried forward
  when ``deferred_tax_on_losses`` (then P&L tax = rate x pre-tax profit, year by year). The
  P&L's tax line is current + deferred.
* Cash available for debt service (CFADS) = cash receipts - opex - current tax (prepaid
  contracts move receipts ahead of revenue).
* The terminal value (``scenario.terminal_value``) is a flow at the horizon's end, in project
  and equity IRR and NPV only; the equity flows repay the debt still owed then.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from neocloud.economics import debt
from neocloud.economics.scenario import (
    Cohort,
    ContractKind,
    Scenario,
    TaxDepreciation,
    TerminalMethod,
    Tranche,
)
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
    current_tax: Array  # paid on the year's taxable profit (cash)
    deferred_tax: Array  # tax = current + deferred (the P&L line)
    tax_depreciation: Array
    deferred_tax_balance: Array  # net liability at each month's end (negative: an asset)
    losses_carried: Array  # tax losses carried forward at the end of each month's year
    terminal_value: float  # the fleet's value at the horizon's end, before tax
    terminal_value_tax: float  # tax on an asset sale's gain over the remaining tax basis

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
    """All tranches on the monthly grid; ``rates_shift`` adds to annual rates, one per path:
    to a floating tranche's reference curve (before its floor) or all-in rate, and to fixed
    rates too unless ``shift_fixed`` is false."""
    months = scenario.horizon_years * 12
    shifts = np.zeros(1) if rates_shift is None else np.asarray(rates_shift, dtype=np.float64)
    total = debt.zero(shifts.shape[0], months)
    purchases = capex_by_month(scenario)
    for i, tranche in enumerate(scenario.financing):
        moved = shifts if (tranche.floating or shift_fixed) else np.zeros_like(shifts)
        if tranche.reference is not None and tranche.reference not in scenario.reference_rates:
            raise ValidationFailed(
                f"tranche {tranche.name}: no reference rate {tranche.reference!r} in "
                "reference_rates",
                param=f"financing.{i}.reference",
            )
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
            rates = tranche_rates(scenario, tranche, month, moved)
            part = debt.schedule(
                tranche, principal=principal, draw_month=month, months=months, rates=rates
            )
            debt.add_into(total, part)
    return total


def tranche_rates(scenario: Scenario, tranche: Tranche, draw_month: int, shifts: Array) -> Array:
    """Annual rates of one draw: (paths,) for a flat rate, (paths, periods) on a curve."""
    if tranche.reference is None:
        return np.maximum((tranche.rate or 0.0) + shifts, 0.0)
    curve = scenario.reference_rates[tranche.reference]
    fixings = debt.curve_rates(curve, debt.reset_months(tranche, draw_month), scenario.start)
    reference = fixings[None, :] + shifts[:, None]
    if tranche.floor is not None:
        reference = np.maximum(reference, tranche.floor)
    return np.maximum(reference + tranche.spread, 0.0)


@dataclass(frozen=True)
class TaxBasis:
    """Tax depreciation against book depreciation, monthly on the grid (shape (months,)).

    ``difference`` is the change in the temporary difference (net book value minus tax basis)
    each month: tax depreciation - book depreciation - salvage sold (an asset sold at its book
    value leaves the books and its tax basis together; see ``tax_basis``)."""

    depreciation: Array  # tax depreciation, including the remaining basis at retirement
    difference: Array
    opening_difference: float  # temporary difference at the start (cohorts bought before)
    basis_at_end: float  # tax basis of the cohorts still in service at the horizon


def macrs_fractions(years: float) -> Array:
    """Yearly shares of cost under 200% declining balance with the half-year convention,
    switching to straight line when that is larger (the MACRS GDS tables: 5 years gives 20%,
    32%, 19.2%, 11.52%, 11.52%, 5.76%)."""
    n = float(years)
    rate = 2.0 / n
    shares, left = [], 1.0
    for k in range(1, int(np.ceil(n)) + 2):
        if left <= 1e-12:
            break
        if k == 1:
            share = 0.5 * rate
        else:
            remaining = n + 1.5 - k
            share = left if remaining <= 1.0 else max(left * rate, left / remaining)
        share = min(share, left)
        shares.append(share)
        left -= share
    return np.array(shares)


def _cohort_tax(cohort: Cohort, book_monthly: float, book: int, econ: int) -> tuple[Array, Array]:
    """(tax depreciation, book depreciation) over the cohort's life from its in-service month,
    each of length ``econ``; the last month writes off what is left of both."""
    cost = cohort.capex
    book_dep = np.zeros(econ)
    book_dep[: min(book, econ)] = book_monthly
    book_dep[-1] += cost * (1.0 - cohort.salvage_fraction) - book_dep.sum()
    if cohort.tax_depreciation is TaxDepreciation.BOOK:
        tax = book_dep.copy()
        tax[-1] += cost * cohort.salvage_fraction
        return tax, book_dep
    life = cohort.tax_life_years or cohort.book_life_years
    bonus = cohort.bonus_depreciation * cost
    rest = cost - bonus
    if cohort.tax_depreciation is TaxDepreciation.STRAIGHT_LINE:
        n = max(1, round(life * 12))
        schedule = np.full(n, rest / n)
    else:
        schedule = np.repeat(macrs_fractions(life) * rest / 12.0, 12)
    tax = np.zeros(econ)
    used = min(econ, schedule.size)
    tax[:used] = schedule[:used]
    tax[0] += bonus
    tax[-1] += cost - tax.sum()  # what is left of the basis is written off at retirement
    return tax, book_dep


def tax_basis(scenario: Scenario) -> TaxBasis:
    """Tax depreciation and the temporary differences it makes, cohort by cohort."""
    months = scenario.horizon_years * 12
    tax_dep, difference = np.zeros(months), np.zeros(months)
    opening = at_end = 0.0
    for cohort in scenario.cohorts:
        bought = scenario.month_of(cohort.in_service)
        if bought >= months:
            continue
        live = bought + cohort.power_delay_months
        econ = max(1, round(cohort.economic_life_years * 12))
        book = max(1, round(cohort.book_life_years * 12))
        base = cohort.capex * (1.0 - cohort.salvage_fraction)
        tax, book_dep = _cohort_tax(cohort, base / book, book, econ)
        change = tax - book_dep
        change[-1] -= cohort.capex * cohort.salvage_fraction
        lo, hi = max(live, 0), min(live + econ, months)
        if hi > lo:
            tax_dep[lo:hi] += tax[lo - live : hi - live]
            difference[lo:hi] += change[lo - live : hi - live]
        if live < 0:
            opening += float(change[: min(-live, econ)].sum())
        if live + econ > months:  # still in service at the horizon
            at_end += cohort.capex - float(tax[: max(months - live, 0)].sum())
    return TaxBasis(tax_dep, difference, opening, at_end)


@dataclass(frozen=True)
class TaxYears:
    """Per projection year: tax paid on the year's profit, losses carried forward at its end."""

    current: Array
    losses: Array


def annual_tax(
    taxable_yearly: Array,
    rate: float,
    *,
    offset_limit: float = 1.0,
    brought_forward: float = 0.0,
) -> TaxYears:
    """Tax per year on positive taxable profit after losses carried forward (which offset at
    most ``offset_limit`` of a year's profit); works along the last axis for any leading
    (path) shape."""
    tax = np.zeros_like(taxable_yearly)
    losses = np.zeros_like(taxable_yearly)
    carried = np.full(taxable_yearly.shape[:-1], brought_forward, dtype=np.float64)
    for year in range(taxable_yearly.shape[-1]):
        profit = taxable_yearly[..., year]
        used = np.minimum(carried, offset_limit * np.maximum(profit, 0.0))
        tax[..., year] = rate * np.maximum(profit - used, 0.0)
        carried = carried - used + np.maximum(-profit, 0.0)
        losses[..., year] = carried
    return TaxYears(tax, losses)


def tax_years(scenario: Scenario, taxable_yearly: Array) -> TaxYears:
    return annual_tax(
        taxable_yearly,
        scenario.tax_rate,
        offset_limit=scenario.tax_loss_offset_limit,
        brought_forward=scenario.tax_losses_brought_forward,
    )


def terminal_value(scenario: Scenario, ebitda: Array, basis: TaxBasis) -> tuple[float, float]:
    """(value, tax on it) at the horizon's end, by the scenario's method (see
    ``TerminalValue``); cohorts retired by then count for nothing."""
    method = scenario.terminal_value.method
    if method is TerminalMethod.NONE:
        return 0.0, 0.0
    if method is TerminalMethod.EXIT_MULTIPLE:
        multiple = scenario.terminal_value.ebitda_multiple or 0.0
        return multiple * float(ebitda[-12:].sum()), 0.0
    months = scenario.horizon_years * 12
    value = 0.0
    for cohort in scenario.cohorts:
        bought = scenario.month_of(cohort.in_service)
        live = bought + cohort.power_delay_months
        econ = max(1, round(cohort.economic_life_years * 12))
        if bought >= months or live + econ <= months:
            continue
        salvage = cohort.capex * cohort.salvage_fraction
        used = min(max(months - live, 0), econ)
        if method is TerminalMethod.SALVAGE:
            value += salvage
        elif method is TerminalMethod.ECONOMIC_LIFE:
            value += salvage + (cohort.capex - salvage) * (1.0 - used / econ)
        else:  # net book value
            book = max(1, round(cohort.book_life_years * 12))
            value += cohort.capex - (cohort.capex - salvage) * min(used, book) / book
    return value, scenario.tax_rate * (value - basis.basis_at_end)


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
    basis = tax_basis(scenario)
    # Taxable profit = pre-tax profit + book depreciation - tax depreciation + salvage gain.
    taxes = tax_years(scenario, yearly(ebt - basis.difference))
    rate = scenario.tax_rate
    deferred_yearly = rate * yearly(basis.difference)
    loss_asset = scenario.deferred_tax_on_losses
    if loss_asset:
        before = np.concatenate([[scenario.tax_losses_brought_forward], taxes.losses[:-1]])
        deferred_yearly = deferred_yearly - rate * (taxes.losses - before)
    current = np.repeat(taxes.current / 12.0, 12)
    deferred = np.repeat(deferred_yearly / 12.0, 12)
    opening = rate * basis.opening_difference
    if loss_asset:
        opening -= rate * scenario.tax_losses_brought_forward
    tax = current + deferred
    cfads = ops.receipts - ops.opex - current
    service = sched.debt_service[0]
    project_cf = cfads - ops.capex + ops.salvage
    value, value_tax = terminal_value(scenario, ebitda, basis)
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
        current_tax=current,
        deferred_tax=deferred,
        tax_depreciation=basis.depreciation,
        deferred_tax_balance=opening + np.cumsum(deferred),
        losses_carried=np.repeat(taxes.losses, 12),
        terminal_value=value,
        terminal_value_tax=value_tax,
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


def project_flows(p: Projection, *, annual: bool, terminal: bool = True) -> Array:
    """Unlevered flows; with ``terminal``, the terminal value after its tax at the end."""
    at_end = p.cfads + p.ops.salvage
    if terminal:
        at_end = at_end.copy()
        at_end[-1] += p.terminal_value - p.terminal_value_tax
    return timed_series(at_end, -p.ops.capex, annual=annual)


def equity_flows(p: Projection, *, annual: bool, terminal: bool = True) -> Array:
    """Levered flows; the debt still owed at the horizon is repaid at its end (out of the
    terminal value, with ``terminal``)."""
    at_end = p.cfads + p.ops.salvage - p.debt_service
    at_end = at_end.copy()
    at_end[-1] -= p.debt_balance[-1]
    if terminal:
        at_end[-1] += p.terminal_value - p.terminal_value_tax
    return timed_series(at_end, p.draws - p.ops.capex, annual=annual)
