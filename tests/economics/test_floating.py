"""Floating-rate tranches on a reference curve: each payment period's rate is the curve at the
period's start plus the spread; an annuity is re-amortised at each reset. Every figure is
re-derived here period by period with numpy-financial's ``pmt``."""

from __future__ import annotations

from datetime import date
from typing import Any

import numpy as np
import numpy_financial as npf
import pytest

from neocloud.economics import load_yaml, parse_scenario, project
from neocloud.economics.kpis import covers
from neocloud.economics.projection import yearly
from neocloud.economics.stress import MonteCarloSpec, get_stress, monte_carlo, scale_rates
from neocloud.kernel.errors import ValidationFailed

from .helpers import EXAMPLE

PRINCIPAL = 20_000_000.0
# SOFR: 4% in 2026, 5% from January 2027, 3% from July 2028 (a step curve).
STEPS = [
    {"start": date(2026, 1, 1), "rate": 0.04},
    {"start": date(2027, 1, 1), "rate": 0.05},
    {"start": date(2028, 7, 1), "rate": 0.03},
]
SPREAD = 0.02


def scenario(**tranche: Any) -> Any:
    raw = load_yaml(EXAMPLE.read_text())
    raw["horizon_years"] = 6
    raw["reference_rates"] = {"sofr": {"steps": STEPS}}
    raw["financing"] = [
        {
            "name": "floating",
            "principal": PRINCIPAL,
            "floating": True,
            "reference": "sofr",
            "spread": SPREAD,
            "term_years": 4,
            "amortisation": "annuity",
            "payments_per_year": 1,
            **tranche,
        }
    ]
    return parse_scenario(raw)


def hand_annuity(rates: list[float], principal: float) -> tuple[list[float], list[float]]:
    """(interest, payment) per period, re-amortised at each period's rate."""
    balance, interest, payments = principal, [], []
    for k, r in enumerate(rates):
        payment = float(-npf.pmt(r, len(rates) - k, balance))
        interest.append(r * balance)
        payments.append(payment)
        balance -= payment - r * balance
    assert balance == pytest.approx(0.0, abs=1e-6)
    return interest, payments


def test_annual_annuity_on_a_step_curve_matches_a_hand_calculation() -> None:
    p = project(scenario())
    # Fixings on 1 January 2026..2029: 4%, 5%, 5% (the 3% step starts in July 2028), 3%.
    rates = [0.04 + SPREAD, 0.05 + SPREAD, 0.05 + SPREAD, 0.03 + SPREAD]
    interest, payments = hand_annuity(rates, PRINCIPAL)
    np.testing.assert_allclose(yearly(p.interest)[:4], interest, atol=1e-4)
    np.testing.assert_allclose(yearly(p.debt_service)[:4], payments, atol=1e-4)
    assert payments[0] == pytest.approx(5_771_829.85, abs=0.005)  # 20 M at 6% over 4 years
    assert payments[1] > payments[0]  # re-amortised when the rate rose
    assert payments[3] < payments[2]  # and when it fell
    assert p.debt_balance[47] == pytest.approx(0.0, abs=1e-4)
    assert float(p.principal_paid.sum()) == pytest.approx(PRINCIPAL)


def test_quarterly_annuity_on_a_monthly_curve_resets_every_quarter() -> None:
    monthly = [0.04 + 0.001 * m for m in range(30)]  # rising 10 bp a month, then flat
    s = scenario(payments_per_year=4, term_years=3)
    s = s.model_copy(
        update={
            "reference_rates": {
                "sofr": s.reference_rates["sofr"].model_copy(
                    update={"monthly": monthly, "steps": None}
                )
            }
        }
    )
    p = project(s)
    rates = [(monthly[min(3 * q, 29)] + SPREAD) / 4 for q in range(12)]
    interest, payments = hand_annuity(rates, PRINCIPAL)
    paid = p.interest_paid + p.principal_paid
    np.testing.assert_allclose(paid[2:36:3], payments, atol=1e-4)
    np.testing.assert_allclose(p.interest_paid[2:36:3], interest, atol=1e-4)
    # Interest expense accrues evenly over each quarter's three months.
    np.testing.assert_allclose(p.interest[:3], [interest[0] / 3] * 3, atol=1e-6)


@pytest.mark.parametrize("amortisation", ["straight_line", "bullet"])
def test_straight_line_and_bullet_reprice_on_the_opening_balance(amortisation: str) -> None:
    p = project(scenario(amortisation=amortisation))
    rates = [0.06, 0.07, 0.07, 0.05]
    if amortisation == "straight_line":
        opening = [PRINCIPAL * (1 - k / 4) for k in range(4)]
    else:
        opening = [PRINCIPAL] * 4
    np.testing.assert_allclose(
        yearly(p.interest)[:4], [r * b for r, b in zip(rates, opening, strict=True)], atol=1e-4
    )


def test_rate_shock_shifts_the_curve_and_a_floor_holds_the_reference() -> None:
    shocked = get_stress("rate_shock").run(scenario())
    rates = [0.04 + SPREAD + 0.03, 0.05 + SPREAD + 0.03, 0.05 + SPREAD + 0.03, 0.03 + 0.05]
    interest, _ = hand_annuity(rates, PRINCIPAL)
    np.testing.assert_allclose(yearly(shocked.interest)[:4], interest, atol=1e-4)
    # A 4.5% floor on SOFR lifts the 4% and 3% fixings, not the 5% ones.
    floored = project(scenario(floor=0.045))
    interest, _ = hand_annuity([0.065, 0.07, 0.07, 0.065], PRINCIPAL)
    np.testing.assert_allclose(yearly(floored.interest)[:4], interest, atol=1e-4)


def test_a_delayed_draw_fixes_on_the_curve_from_its_draw() -> None:
    p = project(scenario(draw=date(2027, 1, 1), term_years=2))
    assert float(p.draws[12]) == PRINCIPAL
    assert float(p.draws[:12].sum()) == 0.0
    assert float(p.interest[:12].sum()) == 0.0
    _interest, payments = hand_annuity([0.07, 0.07], PRINCIPAL)  # 2027 and 2028 fixings
    np.testing.assert_allclose(yearly(p.debt_service)[1:3], payments, atol=1e-4)


def test_tornado_scaling_moves_the_all_in_rate() -> None:
    s = scenario(amortisation="bullet")
    base = float(yearly(project(s).interest)[0])
    assert float(yearly(project(scale_rates(s, 1.2)).interest)[0]) == pytest.approx(1.2 * base)


def test_monte_carlo_without_shocks_equals_the_projection() -> None:
    s = scenario()
    still = monte_carlo(
        s,
        MonteCarloSpec(
            paths=20, price_volatility=0, utilization_sd=0, power_price_sd=0, rate_shift_sd=0
        ),
    )
    assert still.min_dscr_percentiles["p50"] == pytest.approx(covers(project(s)).min_dscr)
    moved = monte_carlo(s, MonteCarloSpec(paths=400, seed=2, rate_shift_sd=0.03))
    assert moved.min_dscr_percentiles["p5"] < still.min_dscr_percentiles["p50"]


def test_bad_floating_tranches_are_refused_by_field() -> None:
    with pytest.raises(ValidationFailed) as exc:
        scenario(rate=0.08)  # a reference and a rate
    assert exc.value.param == "financing.0"
    with pytest.raises(ValidationFailed) as exc:
        scenario(reference="euribor")
    assert exc.value.param == "financing.0.reference"
    with pytest.raises(ValidationFailed) as exc:  # the engine checks scenarios built in code
        project(scenario().model_copy(update={"reference_rates": {}}))
    assert exc.value.param == "financing.0.reference"
    raw = load_yaml(EXAMPLE.read_text())
    raw["reference_rates"] = {"sofr": {"steps": list(reversed(STEPS))}}
    with pytest.raises(ValidationFailed) as exc:
        parse_scenario(raw)
    assert exc.value.param is not None
    assert exc.value.param.startswith("reference_rates.sofr")
