"""Debt schedules on the monthly grid, vectorised over interest rates (one row per path).

A tranche is drawn at the start of its draw month and repaid in ``term x payments_per_year``
payments, each at the end of the last month of its payment period. Interest *expense* (the P&L
line) accrues evenly over the months of each payment period; interest *paid* (cash) falls in the
payment month. With annual payments a projection year therefore carries exactly one year's
interest and one payment: yearly sums of the monthly engine equal an annual-period calculation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from neocloud.economics.scenario import Amortisation, Tranche

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
    """(interest, principal) per payment, shaped (paths, periods); ``rates`` per payment period."""
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


def schedule(
    tranche: Tranche, *, principal: float, draw_month: int, months: int, rates: Array
) -> DebtSchedule:
    """One tranche on a grid of ``months``; ``rates`` are annual, one per path."""
    paths = rates.shape[0]
    step = 12 // tranche.payments_per_year
    periods = round(tranche.term_years * 12) // step
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


def zero(paths: int, months: int) -> DebtSchedule:
    return DebtSchedule(*(np.zeros((paths, months)) for _ in range(5)))


def add_into(total: DebtSchedule, part: DebtSchedule) -> None:
    """Add ``part`` into ``total`` in place (one tranche at a time keeps memory flat)."""
    for name in ("draws", "interest_expense", "interest_paid", "principal_paid", "balance"):
        into = getattr(total, name)
        np.add(into, getattr(part, name), out=into)
