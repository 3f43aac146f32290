"""The example fleet, every figure re-derived here from its inputs (numpy-financial for the
annuity and the IRR), and the identities any projection must keep."""

from __future__ import annotations

import numpy as np
import numpy_financial as npf
import pytest

from neocloud.economics import project, report
from neocloud.economics.finance import irr
from neocloud.economics.kpis import covers
from neocloud.economics.projection import equity_flows, project_flows, yearly
from neocloud.economics.scenario import Periods

from .helpers import example

NODES, GPUS = 128, 1024
CAPEX_NODE = 310_000 + 48 * 36_000 / 128 + 8 * 2_560
CAPEX = NODES * CAPEX_NODE
IT_KW = NODES * 10.2
REVENUE = GPUS * 2.00 * 0.80 * 8760
POWER = IT_KW * 1.25 * 8760 * 0.08
COLOCATION = IT_KW * 150 * 12
EBITDA = REVENUE - POWER - COLOCATION
DEBT = 0.70 * CAPEX
SERVICE = -npf.pmt(0.11, 5, DEBT)


def test_inputs_are_the_issues() -> None:
    s = example()
    assert s.gpus == GPUS
    assert s.capex == pytest.approx(CAPEX)
    assert CAPEX == 44_029_440  # the issue's hand figures depreciate this base


def test_year_one_matches_an_independent_calculation() -> None:
    p = project(example())
    year = {k: float(yearly(getattr(p, k))[0]) for k in ("revenue", "ebitda", "ebit")}
    assert year["revenue"] == pytest.approx(REVENUE, abs=0.005)
    assert year["ebitda"] == pytest.approx(EBITDA, abs=0.005)
    assert year["ebit"] == pytest.approx(EBITDA - CAPEX / 6, abs=0.005)
    assert float(yearly(p.debt_service)[0]) == pytest.approx(SERVICE, abs=0.005)
    assert float(yearly(p.interest)[0]) == pytest.approx(0.11 * DEBT, abs=0.005)
    assert covers(p).dscr[0] == pytest.approx(EBITDA / SERVICE)


def test_year_one_matches_the_issues_hand_figures() -> None:
    r = report(example())
    y1 = r["annual"][0]
    assert y1["revenue"] == 14_352_384.00
    assert y1["ebitda"] == 10_858_598.40
    assert y1["ebit"] == 3_520_358.40
    assert y1["debt_service"] == 8_339_141.45
    assert y1["dscr"] == pytest.approx(1.302, abs=5e-4)
    assert r["kpis"]["project_irr"] == pytest.approx(0.1249, abs=5e-5)
    short = report(example(), stresses=["short_book_life"])["annual"][0]
    assert short["ebit"] == -148_761.60
    assert short["ebitda"] == y1["ebitda"]  # the same cash economics


def test_irrs_match_numpy_financial() -> None:
    p = project(example())
    project_cf = [-CAPEX] + [EBITDA] * 6
    assert irr(project_flows(p, annual=True)) == pytest.approx(float(npf.irr(project_cf)))
    equity_cf = [DEBT - CAPEX] + [EBITDA - SERVICE] * 5 + [EBITDA]
    assert irr(equity_flows(p, annual=True)) == pytest.approx(float(npf.irr(equity_cf)))


def test_identities_hold_every_month() -> None:
    p = project(example())
    np.testing.assert_allclose(p.ebitda - p.ops.depreciation, p.ebit)
    np.testing.assert_allclose(p.ebit - p.interest - p.tax, p.net_income)
    assert p.debt_balance[-1] == pytest.approx(0.0, abs=1e-4)
    assert float(p.principal_paid.sum()) == pytest.approx(DEBT)
    dscr = covers(p).dscr
    cfads, service = yearly(p.cfads), yearly(p.debt_service)
    for year in range(5):
        assert dscr[year] == pytest.approx(cfads[year] / service[year])
    assert dscr[5] is None  # no debt service in year six: undefined, not infinite
    assert float(p.ops.depreciation.sum()) == pytest.approx(CAPEX)


def test_monthly_report_sums_to_the_annual_one() -> None:
    s = example().model_copy(update={"periods": Periods.MONTHLY})
    r = report(s)
    assert len(r["monthly"]) == 72
    for line in ("revenue", "ebitda", "ebit", "interest", "debt_service", "cfads"):
        months = sum(m[line] for m in r["monthly"][:12])
        assert months == pytest.approx(r["annual"][0][line], abs=0.05)


def test_four_year_book_life_turns_ebit_negative_then_positive() -> None:
    r = report(example(), stresses=["short_book_life"])
    ebit = [row["ebit"] for row in r["annual"]]
    assert ebit[:4] == [pytest.approx(EBITDA - CAPEX / 4, abs=0.005)] * 4
    assert ebit[4:] == [pytest.approx(EBITDA, abs=0.005)] * 2
    assert sum(ebit) == pytest.approx(sum(row["ebit"] for row in report(example())["annual"]))


def test_reports_are_strict_json() -> None:
    import json

    from neocloud.economics import stress_report

    s = example()
    json.dumps(report(s), allow_nan=False)
    json.dumps(report(s, stresses=["faster_obsolescence", "lose_top_customer"]), allow_nan=False)
    json.dumps(stress_report(s, paths=100), allow_nan=False)
