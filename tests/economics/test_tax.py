"""Tax: losses carried forward (with an offset limit), tax depreciation apart from book
depreciation, and the deferred tax between them, against figures worked out here by hand."""

from __future__ import annotations

from datetime import date
from typing import Any

import numpy as np
import numpy_financial as npf
import pytest

from neocloud.economics import project, report
from neocloud.economics.kpis import breakevens, covers
from neocloud.economics.projection import macrs_fractions, yearly
from neocloud.economics.scenario import Scenario, TaxDepreciation
from neocloud.economics.stress import MonteCarloSpec, monte_carlo

from .helpers import example

CAPEX = 44_029_440.0
EBITDA = 10_858_598.40
DEBT = 0.70 * CAPEX
RATE = 0.21


def taxed(**cohort: Any) -> Scenario:
    s = example()
    return s.model_copy(
        update={
            "tax_rate": RATE,
            "cohorts": [c.model_copy(update=cohort) for c in s.cohorts],
        }
    )


def hand_interest() -> list[float]:
    balance, out = DEBT, []
    payment = float(-npf.pmt(0.11, 5, DEBT))
    for _ in range(5):
        out.append(0.11 * balance)
        balance -= payment - 0.11 * balance
    return [*out, 0.0]


def test_macrs_tables_are_the_irs_ones() -> None:
    np.testing.assert_allclose(
        macrs_fractions(5), [0.20, 0.32, 0.192, 0.1152, 0.1152, 0.0576], atol=1e-12
    )
    # IRS Publication 946, table A-1, 7-year property (the table rounds to 0.01%).
    np.testing.assert_allclose(
        macrs_fractions(7),
        [0.1429, 0.2449, 0.1749, 0.1249, 0.0893, 0.0892, 0.0893, 0.0446],
        atol=1.1e-4,
    )
    assert float(macrs_fractions(3.5).sum()) == pytest.approx(1.0)


def test_year_one_with_macrs_is_a_tax_loss_and_a_deferred_charge() -> None:
    p = project(taxed(tax_depreciation=TaxDepreciation.MACRS, tax_life_years=5))
    ebt1 = EBITDA - CAPEX / 6 - 0.11 * DEBT
    assert ebt1 == pytest.approx(130_091.52, abs=0.005)
    taxable1 = ebt1 + CAPEX / 6 - 0.20 * CAPEX  # book depreciation back, MACRS 20% off
    assert taxable1 == pytest.approx(-1_337_556.48, abs=0.005)
    assert float(yearly(p.current_tax)[0]) == 0.0  # a tax loss: nothing paid
    assert float(yearly(p.tax_depreciation)[0]) == pytest.approx(8_805_888.00, abs=0.005)
    # Deferred: 21% of the timing difference (1,467,648) less 21% of the new loss asset.
    deferred1 = RATE * (0.20 * CAPEX - CAPEX / 6) - RATE * -taxable1
    assert float(yearly(p.deferred_tax)[0]) == pytest.approx(deferred1, abs=0.005)
    assert float(yearly(p.tax)[0]) == pytest.approx(RATE * ebt1, abs=0.005)  # 27,319.22
    assert float(p.losses_carried[11]) == pytest.approx(-taxable1, abs=0.005)
    # Cash: year one's CFADS is EBITDA (nothing paid); the P&L still carries the tax.
    assert float(yearly(p.cfads)[0]) == pytest.approx(EBITDA, abs=0.005)


@pytest.mark.parametrize("limit", [1.0, 0.8])
def test_every_year_against_a_hand_loss_walk(limit: float) -> None:
    s = taxed(tax_depreciation=TaxDepreciation.MACRS, tax_life_years=5).model_copy(
        update={"tax_loss_offset_limit": limit}
    )
    p = project(s)
    interest = hand_interest()
    shares = [0.20, 0.32, 0.192, 0.1152, 0.1152, 0.0576]
    losses, paid, balance = 0.0, [], 0.0
    balances = []
    for year in range(6):
        ebt = EBITDA - CAPEX / 6 - interest[year]
        taxable = ebt + CAPEX / 6 - shares[year] * CAPEX
        if taxable > 0:
            used = min(losses, limit * taxable)
            paid.append(RATE * (taxable - used))
            losses -= used
        else:
            paid.append(0.0)
            losses -= taxable
        balance = RATE * (CAPEX * (1 - (year + 1) / 6) - CAPEX * (1 - sum(shares[: year + 1])))
        balances.append(balance - RATE * losses)
    np.testing.assert_allclose(yearly(p.current_tax), paid, atol=0.01)
    np.testing.assert_allclose(p.deferred_tax_balance[11::12], balances, atol=0.01)
    # With the loss asset recognised the P&L tax is the rate times pre-tax profit, every year.
    np.testing.assert_allclose(yearly(p.tax), RATE * yearly(p.ebt), atol=0.01)
    assert p.deferred_tax_balance[-1] == pytest.approx(0.0, abs=0.01)  # all reversed by year 6
    assert float(p.current_tax.sum()) == pytest.approx(float(p.tax.sum()), abs=0.01)
    np.testing.assert_allclose(p.cfads, p.ops.receipts - p.ops.opex - p.current_tax)


def test_the_offset_limit_leaves_a_fifth_of_profit_taxed() -> None:
    s = example().model_copy(
        update={"tax_rate": RATE, "tax_loss_offset_limit": 0.8, "tax_losses_brought_forward": 1e9}
    )
    p = project(s)
    ebt = yearly(p.ebt)
    np.testing.assert_allclose(yearly(p.current_tax), RATE * 0.2 * ebt, atol=0.01)
    assert float(p.losses_carried[11]) == pytest.approx(1e9 - 0.8 * float(ebt[0]))


def test_without_a_loss_asset_losses_lower_tax_only_when_used() -> None:
    s = taxed(tax_depreciation=TaxDepreciation.MACRS, tax_life_years=5).model_copy(
        update={"deferred_tax_on_losses": False}
    )
    p = project(s)
    shares = np.array([0.20, 0.32, 0.192, 0.1152, 0.1152, 0.0576])
    timing = RATE * (shares * CAPEX - CAPEX / 6)
    np.testing.assert_allclose(yearly(p.deferred_tax), timing, atol=0.01)
    np.testing.assert_allclose(yearly(p.tax), yearly(p.current_tax) + timing, atol=0.01)
    assert float(yearly(p.tax)[0]) > RATE * float(yearly(p.ebt)[0])


def test_salvage_is_taxed_as_a_gain_over_the_written_off_basis() -> None:
    p = project(
        taxed(
            salvage_fraction=0.10,
            tax_depreciation=TaxDepreciation.STRAIGHT_LINE,
            tax_life_years=3,
            economic_life_years=5,
        )
    )
    # Book: 90% over 6 years, written off to 10% at retirement (month 60). Tax: 100% over 3.
    np.testing.assert_allclose(p.tax_depreciation[:36], CAPEX / 36)
    assert float(p.tax_depreciation[36:].sum()) == pytest.approx(0.0, abs=1e-6)
    assert float(p.ops.salvage[59]) == pytest.approx(0.1 * CAPEX)
    # After retirement, book value and tax basis are both gone: no timing difference is left.
    assert p.deferred_tax_balance[59] == pytest.approx(
        -RATE * float(p.losses_carried[59]), abs=0.01
    )
    book = yearly(p.ops.depreciation)
    ebt = EBITDA - book - np.array(hand_interest())
    ebt[5] = EBITDA  # retired after year five: nothing left in year six
    tax_dep = np.array([CAPEX / 3] * 3 + [0.0] * 3)
    gain = np.array([0, 0, 0, 0, 0.1 * CAPEX, 0])
    losses, paid = 0.0, []
    for taxable in ebt[:5] + book[:5] - tax_dep[:5] + gain[:5]:
        used = min(losses, max(taxable, 0.0))
        paid.append(RATE * max(taxable - used, 0.0))
        losses += max(-taxable, 0.0) - used
    np.testing.assert_allclose(yearly(p.current_tax)[:5], paid, atol=0.01)
    assert paid[4] > 0  # the salvage gain is taxed once the losses are used up


def test_a_cohort_bought_before_the_start_opens_with_a_deferred_balance() -> None:
    s = taxed(
        in_service=date(2024, 1, 1), tax_depreciation=TaxDepreciation.MACRS, tax_life_years=5
    ).model_copy(update={"deferred_tax_on_losses": False})
    p = project(s)
    # End of year one = three years in: book 3/6 left, tax basis 1 - 20% - 32% - 19.2%.
    assert p.deferred_tax_balance[11] == pytest.approx(RATE * CAPEX * (0.5 - 0.288), abs=0.01)
    np.testing.assert_allclose(
        yearly(p.tax_depreciation)[:4], np.array([0.192, 0.1152, 0.1152, 0.0576]) * CAPEX
    )


def test_book_tax_depreciation_is_the_old_behaviour() -> None:
    p = project(taxed())
    np.testing.assert_allclose(p.deferred_tax, 0.0, atol=1e-9)
    np.testing.assert_allclose(p.tax, p.current_tax)
    np.testing.assert_allclose(yearly(p.current_tax), RATE * np.maximum(yearly(p.ebt), 0.0))


def test_monte_carlo_and_breakevens_use_the_cash_tax() -> None:
    s = taxed(tax_depreciation=TaxDepreciation.MACRS, tax_life_years=5)
    p = project(s)
    still = monte_carlo(
        s,
        MonteCarloSpec(
            paths=20, price_volatility=0, utilization_sd=0, power_price_sd=0, rate_shift_sd=0
        ),
    )
    assert still.min_dscr_percentiles["p50"] == pytest.approx(covers(p).min_dscr)
    # DSCR = 1 in year one: no cash tax there (MACRS makes a loss) so revenue just covers
    # opex and debt service.
    b = breakevens(p)
    service = float(yearly(p.debt_service)[0])
    opex = float(yearly(p.ops.opex)[0])
    full = float(yearly(p.ops.class_revenue_at_full_use)[0])
    assert b.debt_service == pytest.approx((service + opex) / full, abs=1e-9)


def test_report_shows_current_and_deferred_tax() -> None:
    r = report(taxed(tax_depreciation=TaxDepreciation.MACRS, tax_life_years=5))
    y1 = r["annual"][0]
    assert y1["current_tax"] == 0.0
    assert y1["tax"] == pytest.approx(y1["current_tax"] + y1["deferred_tax"], abs=0.01)
    assert y1["tax_depreciation"] == 8_805_888.00
    assert y1["deferred_tax_liability"] == pytest.approx(y1["deferred_tax"], abs=0.01)
    assert r["assumptions"]["tax_depreciation"] == {"h100-2026": "macrs"}
