"""IRR, NPV and payback against numpy-financial's documented examples."""

from __future__ import annotations

import numpy_financial as npf
import pytest

from neocloud.economics.finance import annualize, annuity_payment, irr, npv, payback_periods


@pytest.mark.parametrize(
    ("flows", "expected"),
    [
        ([-100, 39, 59, 55, 20], 0.28095),
        ([-100, 0, 0, 74], -0.0955),
        ([-100, 100, 0, -7], -0.0833),
        ([-100, 100, 0, 7], 0.06206),
        ([-5, 10.5, 1, -8, 1], 0.0886),
    ],
)
def test_irr_matches_numpy_financial_docs(flows: list[float], expected: float) -> None:
    result = irr(flows)
    assert result is not None
    assert result == pytest.approx(expected, abs=5e-5)
    assert result == pytest.approx(float(npf.irr(flows)), abs=1e-9)


@pytest.mark.parametrize(
    "flows",
    [[100, 50, 20], [-100, -5, -1], [0, 0, 0], [-1], []],
)
def test_irr_is_none_without_a_sign_change(flows: list[float]) -> None:
    assert irr(flows) is None


def test_irr_is_none_when_no_root_exists() -> None:
    # Sign changes twice but NPV(r) = 1 - 3/(1+r) + 3/(1+r)^2 stays above zero for every r.
    assert irr([1, -3, 3]) is None


def test_npv_matches_numpy_financial() -> None:
    flows = [-15000, 1500, 2500, 3500, 4500, 6000]
    assert npv(0.05, flows) == pytest.approx(float(npf.npv(0.05, flows)))


def test_payback_and_annuity() -> None:
    assert payback_periods([-100, 40, 40, 40]) == pytest.approx(2.5)
    assert payback_periods([-100, 40, 40]) is None
    assert payback_periods([10, 5]) == 0.0
    assert annuity_payment(1000, 0.05, 10) == pytest.approx(-float(npf.pmt(0.05, 10, 1000)))
    assert annuity_payment(1200, 0.0, 12) == 100
    assert annualize(0.01, 12) == pytest.approx(1.01**12 - 1)
    assert annualize(None, 12) is None
