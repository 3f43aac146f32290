"""The terminal value: what the fleet is worth at the horizon, in IRR and NPV, reported apart."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy_financial as npf
import pytest

from neocloud.economics import load_yaml, parse_scenario, project, report
from neocloud.economics.kpis import returns
from neocloud.economics.projection import equity_flows, project_flows, yearly
from neocloud.economics.scenario import Scenario
from neocloud.economics.stress import MonteCarloSpec, monte_carlo
from neocloud.kernel.errors import ValidationFailed

from .helpers import EXAMPLE

CAPEX = 44_029_440.0
EBITDA = 10_858_598.40
DEBT = 0.70 * CAPEX
SERVICE = float(-npf.pmt(0.11, 5, DEBT))


def four_years(terminal: dict[str, Any] | None = None, **top: Any) -> Scenario:
    """The example cut at four years: two of its six years of economic life are left."""
    raw = load_yaml(EXAMPLE.read_text())
    raw["horizon_years"] = 4
    if terminal is not None:
        raw["terminal_value"] = terminal
    raw.update(top)
    return parse_scenario(raw)


def owed_after(years: int) -> float:
    balance = DEBT
    for _ in range(years):
        balance -= SERVICE - 0.11 * balance
    return balance


def test_economic_life_value_enters_irr_and_npv() -> None:
    p = project(four_years({"method": "economic_life"}))
    value = CAPEX * 2 / 6  # straight down to no salvage over six years, four used
    assert p.terminal_value == pytest.approx(value)
    flows = [-CAPEX, EBITDA, EBITDA, EBITDA, EBITDA + value]
    np.testing.assert_allclose(project_flows(p, annual=True), flows, atol=1e-4)
    r = returns(p)
    assert r.project_irr == pytest.approx(float(npf.irr(flows)))
    assert r.npv == pytest.approx(float(npf.npv(0.10, flows)))
    assert r.terminal_value_pv == pytest.approx(value / 1.1**4)
    bare = [-CAPEX, EBITDA, EBITDA, EBITDA, EBITDA]
    assert r.project_irr_without_terminal == pytest.approx(float(npf.irr(bare)))
    assert r.npv_without_terminal == pytest.approx(float(npf.npv(0.10, bare)))
    assert r.npv - r.npv_without_terminal == pytest.approx(r.terminal_value_pv)
    # Equity repays what is still owed (one annuity payment's principal) out of the value.
    equity = [DEBT - CAPEX] + [EBITDA - SERVICE] * 3 + [EBITDA - SERVICE + value - owed_after(4)]
    np.testing.assert_allclose(equity_flows(p, annual=True), equity, atol=1e-3)
    assert r.equity_irr == pytest.approx(float(npf.irr(equity)))


def test_without_a_terminal_value_equity_still_repays_the_debt() -> None:
    p = project(four_years())
    assert p.terminal_value == 0.0
    last = float(equity_flows(p, annual=True)[-1])
    assert last == pytest.approx(EBITDA - SERVICE - owed_after(4), abs=1e-3)
    r = returns(p)
    assert r.project_irr == r.project_irr_without_terminal
    assert r.payback_years == returns(project(four_years({"method": "salvage"}))).payback_years


def test_each_method_values_the_fleet_its_way() -> None:
    assert project(four_years({"method": "salvage"})).terminal_value == 0.0  # no salvage
    cohort = load_yaml(EXAMPLE.read_text())["cohorts"][0]
    with_salvage = [{**cohort, "salvage_fraction": 0.1, "book_life_years": 5}]
    s = four_years({"method": "salvage"}, cohorts=with_salvage)
    assert project(s).terminal_value == pytest.approx(0.1 * CAPEX)
    s = four_years({"method": "economic_life"}, cohorts=with_salvage)
    assert project(s).terminal_value == pytest.approx(0.1 * CAPEX + 0.9 * CAPEX * 2 / 6)
    s = four_years({"method": "book_value"}, cohorts=with_salvage)
    assert project(s).terminal_value == pytest.approx(0.1 * CAPEX + 0.9 * CAPEX * 1 / 5)
    p = project(four_years({"method": "exit_multiple", "ebitda_multiple": 3.5}))
    assert p.terminal_value == pytest.approx(3.5 * float(yearly(p.ebitda)[-1]))
    # At six years the fleet is at the end of its economic life: nothing is left to value.
    s = four_years({"method": "economic_life"}, horizon_years=6)
    assert project(s).terminal_value == 0.0


def test_an_asset_sale_is_taxed_on_its_gain_over_the_tax_basis() -> None:
    cohort = {
        **load_yaml(EXAMPLE.read_text())["cohorts"][0],
        "tax_depreciation": "straight_line",
        "tax_life_years": 5,
    }
    p = project(four_years({"method": "economic_life"}, cohorts=[cohort], tax_rate=0.25))
    assert p.terminal_value_tax == pytest.approx(0.25 * (CAPEX * 2 / 6 - CAPEX / 5))
    flows = project_flows(p, annual=True)
    last_cash = float(yearly(p.cfads)[-1])
    assert float(flows[-1]) == pytest.approx(last_cash + p.terminal_value - p.terminal_value_tax)
    multiple = project(four_years({"method": "exit_multiple", "ebitda_multiple": 4}, tax_rate=0.25))
    assert multiple.terminal_value_tax == 0.0


def test_report_shows_the_terminal_value_apart() -> None:
    r = report(four_years({"method": "economic_life"}))
    t = r["kpis"]["terminal_value"]
    assert t["method"] == "economic_life"
    assert t["value"] == pytest.approx(CAPEX / 3, abs=0.01)
    assert t["present_value"] == pytest.approx(CAPEX / 3 / 1.1**4, abs=0.01)
    assert t["npv_without"] == report(four_years())["kpis"]["npv"]
    assert r["kpis"]["npv"] == pytest.approx(t["npv_without"] + t["present_value"], abs=0.02)
    assert t["share_of_npv"] == pytest.approx(t["present_value"] / r["kpis"]["npv"], abs=1e-4)


def test_monte_carlo_counts_an_exit_multiple_per_path() -> None:
    s = four_years({"method": "exit_multiple", "ebitda_multiple": 4})
    still = monte_carlo(
        s,
        MonteCarloSpec(
            paths=10, price_volatility=0, utilization_sd=0, power_price_sd=0, rate_shift_sd=0
        ),
    )
    assert still.npv_percentiles["p50"] == pytest.approx(returns(project(s)).npv)
    cut = monte_carlo(s, MonteCarloSpec(paths=500, seed=4, price_drift=-0.2))
    bare = monte_carlo(four_years(), MonteCarloSpec(paths=500, seed=4, price_drift=-0.2))
    # The same shocks: the exit value falls with the last year's EBITDA, so NPVs spread wider.
    spread = cut.npv_percentiles["p95"] - cut.npv_percentiles["p5"]
    assert spread > bare.npv_percentiles["p95"] - bare.npv_percentiles["p5"]


def test_a_multiple_goes_with_exit_multiple_only() -> None:
    for terminal in ({"method": "exit_multiple"}, {"method": "salvage", "ebitda_multiple": 5}):
        with pytest.raises(ValidationFailed) as exc:
            four_years(terminal)
        assert exc.value.param == "terminal_value"
