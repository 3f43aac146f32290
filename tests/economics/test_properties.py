"""Invariants over random fleets: monotonicity, identities, debt that repays itself."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from neocloud.economics import Scenario, project
from neocloud.economics.projection import yearly
from neocloud.economics.scenario import Amortisation, ReferenceCurve, TaxDepreciation
from neocloud.economics.stress import with_classes, with_cohorts

from .helpers import example

FAST = settings(max_examples=40, deadline=None)
factor = st.floats(min_value=0.0, max_value=3.0, allow_nan=False)


def _year1(s: Scenario, line: str) -> float:
    return float(yearly(getattr(project(s), line))[0])


def _varied(price: float, use: float, tax: float) -> Scenario:
    s = with_classes(example(), "price_per_gpu_hour", price)
    s = with_classes(s, "utilization", use, cap=1.0)
    return s.model_copy(update={"tax_rate": tax})


@FAST
@given(
    price=factor,
    use=st.floats(0.0, 1.2),
    bump=st.floats(0.0, 2.0),
    tax=st.floats(0.0, 0.4),
)
def test_higher_price_or_utilization_never_lowers_ebitda(
    price: float, use: float, bump: float, tax: float
) -> None:
    base = _varied(price, use, tax)
    dearer = with_classes(base, "price_per_gpu_hour", 1.0 + bump)
    busier = with_classes(base, "utilization", 1.0 + bump, cap=1.0)
    ebitda = project(base).ebitda
    assert np.all(project(dearer).ebitda >= ebitda - 1e-6)
    assert np.all(project(busier).ebitda >= ebitda - 1e-6)


@FAST
@given(
    life=st.floats(1.0, 10.0),
    longer=st.floats(0.0, 5.0),
    econ=st.floats(1.0, 10.0),
    salvage=st.floats(0.0, 0.5),
)
def test_a_longer_book_life_never_lowers_year_one_ebit(
    life: float, longer: float, econ: float, salvage: float
) -> None:
    def with_life(years: float) -> Scenario:
        return with_cohorts(
            example(),
            lambda c: {
                "book_life_years": years,
                "economic_life_years": econ,
                "salvage_fraction": salvage,
            },
        )

    assert _year1(with_life(life + longer), "ebit") >= _year1(with_life(life), "ebit") - 1e-6


@FAST
@given(
    amortisation=st.sampled_from(list(Amortisation)),
    rate=st.floats(0.0, 0.3),
    term=st.integers(1, 6),
    per_year=st.sampled_from([1, 2, 4, 12]),
    draw=st.integers(0, 11),
)
def test_debt_repays_to_zero_and_identities_hold(
    amortisation: Amortisation, rate: float, term: int, per_year: int, draw: int
) -> None:
    s = example()
    tranche = s.financing[0].model_copy(
        update={
            "amortisation": amortisation,
            "rate": rate,
            "term_years": float(term),
            "payments_per_year": per_year,
            "draw": s.start.replace(month=draw + 1),
        }
    )
    s = s.model_copy(update={"financing": [tranche], "horizon_years": 8, "tax_rate": 0.2})
    p = project(s)
    principal = 0.7 * s.capex
    assert float(p.principal_paid.sum()) == pytest.approx(principal)
    assert p.debt_balance[-1] == pytest.approx(0.0, abs=1e-3)
    np.testing.assert_allclose(p.ebitda - p.ops.depreciation, p.ebit)
    np.testing.assert_allclose(p.ebit - p.interest - p.tax, p.net_income, atol=1e-6)
    # Interest expense (accrued) and interest paid (cash) agree over the life of the loan.
    assert float(p.interest.sum()) == pytest.approx(
        float(p.interest_paid.sum()), rel=1e-9, abs=1e-6
    )
    assert np.all(p.debt_balance >= -1e-6)


@FAST
@given(
    amortisation=st.sampled_from(list(Amortisation)),
    curve=st.lists(st.floats(0.0, 0.12), min_size=1, max_size=96),
    spread=st.floats(0.0, 0.08),
    term=st.integers(1, 6),
    per_year=st.sampled_from([1, 2, 4, 12]),
)
def test_floating_debt_on_any_curve_repays_its_principal(
    amortisation: Amortisation, curve: list[float], spread: float, term: int, per_year: int
) -> None:
    s = example()
    tranche = s.financing[0].model_copy(
        update={
            "amortisation": amortisation,
            "rate": None,
            "floating": True,
            "reference": "sofr",
            "spread": spread,
            "term_years": float(term),
            "payments_per_year": per_year,
        }
    )
    s = s.model_copy(
        update={
            "financing": [tranche],
            "horizon_years": 7,
            "reference_rates": {"sofr": ReferenceCurve(monthly=curve)},
        }
    )
    p = project(s)
    assert float(p.principal_paid.sum()) == pytest.approx(0.7 * s.capex)
    assert p.debt_balance[-1] == pytest.approx(0.0, abs=1e-3)
    assert np.all(p.debt_balance >= -1e-6)
    # Each period's interest is its rate on the balance owed during it.
    step = 12 // per_year
    owed = np.concatenate(
        [[0.7 * s.capex], p.debt_balance[step - 1 :: step][: term * per_year - 1]]
    )
    fixings = np.array(curve)[np.minimum(np.arange(term * per_year) * step, len(curve) - 1)]
    paid = p.interest_paid[step - 1 :: step][: term * per_year]
    np.testing.assert_allclose(paid, owed * (fixings + spread) / per_year, rtol=1e-9, atol=1e-6)


@FAST
@given(
    method=st.sampled_from(list(TaxDepreciation)),
    tax_life=st.floats(1.0, 8.0),
    bonus=st.floats(0.0, 1.0),
    rate=st.floats(0.0, 0.4),
    limit=st.floats(0.1, 1.0),
    salvage=st.floats(0.0, 0.3),
    recognise=st.booleans(),
)
def test_tax_adds_up_whatever_the_depreciation(
    method: TaxDepreciation,
    tax_life: float,
    bonus: float,
    rate: float,
    limit: float,
    salvage: float,
    recognise: bool,
) -> None:
    s = with_cohorts(
        example(),
        lambda c: {
            "tax_depreciation": method,
            "tax_life_years": tax_life,
            "bonus_depreciation": bonus,
            "salvage_fraction": salvage,
            "economic_life_years": 5.0,
        },
    )
    s = s.model_copy(
        update={
            "tax_rate": rate,
            "tax_loss_offset_limit": limit,
            "deferred_tax_on_losses": recognise,
            "horizon_years": 6,
        }
    )
    p = project(s)
    assert np.all(p.current_tax >= 0.0)
    np.testing.assert_allclose(p.tax, p.current_tax + p.deferred_tax)
    # Over the whole life (retired in year 5): every deduction taken, no timing difference
    # left; P&L tax = cash tax + the loss asset still held.
    basis = s.capex if method is not TaxDepreciation.BOOK else s.capex * (1 - salvage)
    assert float(p.tax_depreciation.sum()) == pytest.approx(
        basis + (s.capex * salvage if method is TaxDepreciation.BOOK else 0.0)
    )
    left = rate * float(p.losses_carried[-1]) if recognise else 0.0
    assert float(p.tax.sum()) == pytest.approx(float(p.current_tax.sum()) - left, abs=1e-3)
    assert p.deferred_tax_balance[-1] == pytest.approx(-left, abs=1e-3)
    if recognise:
        np.testing.assert_allclose(yearly(p.tax), rate * yearly(p.ebt), atol=1e-3)
