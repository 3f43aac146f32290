"""Debt schedules on the monthly grid, vectorised over interest rates (one row per path).

A tranche is drawn at the start of its draw month and repaid in ``term x payments_per_year``
payments, each at the end of the last month of its payment period. Interest *expense* (the P&L
line) accrues evenly over the months of each payment period; interest *paid* (cash) falls in the
payment month. With annual payments a projection year therefore carries exactly one year's
interest and one payment: yearly sums of the monthly engine equal an annual-period calculation.

A floating tranche's rate is fixed at the start of each payment period from its reference curve
(a term rate set in advance) and holds for that period; an annuity is re-amortised at every
reset: the new level payment repays the balance over the periods left at the new rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import numpy.typing as npt

from neocloud.economics.scenario import Amortisation, ReferenceCurve, Tranche

Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class DebtSchedule:
    """Monthly figures, each shaped (paths, months)."""

    draws: Array
    interest_expense: Array
    interest_paid: Array
    principal_paid: Array
    balance: Array  # at the end of each month

    @property
    def debt_service(self) -> Array:
        return self.interest_paid + self.principal_paid


def payment_table(
    principal: float, rates: Array, periods: int, amortisation: Amortisation
) -> tuple[Array, Array]:
    """(interest, principal) per payment, shaped (paths, periods). ``rates`` are per payment
    period: one per path, shaped (paths,), or one per path and period, shaped (paths, periods),
    for a floating rate that resets each period."""
    if rates.ndim == 2:
        return _reset_table(principal, rates, periods, amortisation)
    r = rates[:, None]
    k = np.arange(1, periods + 1, dtype=np.float64)[None, :]
    if amortisation is Amortisation.ANNUITY:
        # expm1/log1p keep tiny rates exact (1 - (1+r)^-n is 0.0 in floats for r ~ 1e-17).
        log_growth = np.log1p(r)
        growth = np.exp((k - 1) * log_growth)
        safe = np.where(r > 0, r, 1.0)
        denominator = np.where(r > 0, -np.expm1(-periods * log_growth), 1.0)
        payment = np.where(r > 0, principal * safe / denominator, principal / periods)
        grown = np.where(r > 0, np.expm1((k - 1) * log_growth) / safe, k - 1)
        opening = principal * growth - payment * grown
        interest = r * opening
        repaid = payment - interest
    elif amortisation is Amortisation.STRAIGHT_LINE:
        opening = principal * (1.0 - (k - 1) / periods) * np.ones_like(r)
        interest = r * opening
        repaid = np.full_like(interest, principal / periods)
    else:
        interest = r * principal * np.ones_like(k)
        repaid = np.zeros_like(interest)
        repaid[:, -1] = principal
    return interest, repaid


def _reset_table(
    principal: float, r: Array, periods: int, amortisation: Amortisation
) -> tuple[Array, Array]:
    """Per-period rates. An annuity re-amortised at each reset repays, in period k, the share
    r / ((1 + r)^m - 1) of its opening balance (m periods left, 1/m at r = 0) whatever the
    balance, so the balances are a cumulative product: no loop over periods."""
    k = np.arange(1, periods + 1, dtype=np.float64)[None, :]
    if amortisation is Amortisation.ANNUITY:
        left = periods - k + 1.0
        growth = np.expm1(left * np.log1p(r))
        share = np.where(growth > 0, r / np.where(growth > 0, growth, 1.0), 1.0 / left)
        share[:, -1] = 1.0
        kept = np.cumprod(1.0 - share, axis=1)
        opening = principal * np.concatenate([np.ones((r.shape[0], 1)), kept[:, :-1]], axis=1)
        repaid = opening * share
    elif amortisation is Amortisation.STRAIGHT_LINE:
        opening = principal * (1.0 - (k - 1) / periods) * np.ones_like(r)
        repaid = np.full_like(r, principal / periods)
    else:
        opening = np.full_like(r, principal)
        repaid = np.zeros_like(r)
        repaid[:, -1] = principal
    return r * opening, repaid


def curve_rates(curve: ReferenceCurve, months: npt.NDArray[np.int64], start: date) -> Array:
    """The reference rate in each of ``months`` (indexes from ``start``; any integers)."""
    if curve.monthly is not None:
        values = np.asarray(curve.monthly, dtype=np.float64)
        return values[np.clip(months, 0, values.size - 1)]
    steps = curve.steps or []
    at = np.array([(x.start.year - start.year) * 12 + x.start.month - start.month for x in steps])
    values = np.array([x.rate for x in steps], dtype=np.float64)
    index = np.clip(np.searchsorted(at, months, side="right") - 1, 0, values.size - 1)
    return values[index]


def schedule(
    tranche: Tranche, *, principal: float, draw_month: int, months: int, rates: Array
) -> DebtSchedule:
    """One tranche on a grid of ``months``; ``rates`` are annual, one per path (paths,), or
    per path and payment period (paths, periods) for a floating rate (see ``reset_months``)."""
    paths = rates.shape[0]
    step, periods = _periods(tranche)
    interest, repaid = payment_table(
        principal, rates / tranche.payments_per_year, periods, tranche.amortisation
    )
    draws = np.zeros((paths, months))
    expense = np.zeros((paths, months))
    paid_interest = np.zeros((paths, months))
    paid_principal = np.zeros((paths, months))
    if 0 <= draw_month < months:
        draws[:, draw_month] = principal
    # Month index of each payment and the months over which its interest accrues.
    pay_month = draw_month + step * np.arange(1, periods + 1) - 1
    accrual = np.repeat(interest / step, step, axis=1)  # (paths, periods * step)
    first = max(draw_month, 0)
    last = min(draw_month + periods * step, months)
    if last > first:
        expense[:, first:last] = accrual[:, first - draw_month : last - draw_month]
    inside = (pay_month >= 0) & (pay_month < months)
    paid_interest[:, pay_month[inside]] = interest[:, inside]
    paid_principal[:, pay_month[inside]] = repaid[:, inside]
    balance = np.cumsum(draws - paid_principal, axis=1)
    if draw_month < 0:  # drawn before the grid: what was still owed at its start
        owed = principal - repaid[:, pay_month < 0].sum(axis=1)
        balance += owed[:, None]
    return DebtSchedule(draws, expense, paid_interest, paid_principal, balance)


def _periods(tranche: Tranche) -> tuple[int, int]:
    """Months per payment period and the number of payments."""
    step = 12 // tranche.payments_per_year
    return step, round(tranche.term_years * 12) // step


def reset_months(tranche: Tranche, draw_month: int) -> npt.NDArray[np.int64]:
    """The month at whose start each payment period's floating rate is fixed."""
    step, periods = _periods(tranche)
    return draw_month + step * np.arange(periods, dtype=np.int64)


def zero(paths: int, months: int) -> DebtSchedule:
    return DebtSchedule(*(np.zeros((paths, months)) for _ in range(5)))


def add_into(total: DebtSchedule, part: DebtSchedule) -> None:
    """Add ``part`` into ``total`` in place (one tranche at a time keeps memory flat)."""
    for name in ("draws", "interest_expense", "interest_paid", "principal_paid", "balance"):
        into = getattr(total, name)
        np.add(into, getattr(part, name), out=into)
