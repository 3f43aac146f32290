"""Scenario parsing, contracts, concentration, stresses, the Monte Carlo and live mode."""

from __future__ import annotations

from datetime import date
from typing import Any

import numpy as np
import pytest

from neocloud.economics import deep_merge, load_yaml, parse_scenario, project, report
from neocloud.economics.kpis import concentration, covers
from neocloud.economics.live import LiveInputs, NodeRecord, build_live_scenario
from neocloud.economics.projection import yearly
from neocloud.economics.stress import STRESSES, MonteCarloSpec, get_stress, monte_carlo, tornado
from neocloud.kernel.errors import InvalidRequest, ValidationFailed

from .helpers import EXAMPLE, example

HOURS = 8760


def _raw() -> dict[str, Any]:
    return load_yaml(EXAMPLE.read_text())


def test_errors_name_the_field() -> None:
    raw = _raw()
    raw["financing"][0]["payments_per_year"] = 5
    with pytest.raises(ValidationFailed) as exc:
        parse_scenario(raw)
    assert exc.value.param == "financing.0"
    with pytest.raises(ValidationFailed) as exc:
        parse_scenario({**_raw(), "colour": "red"})
    assert exc.value.param == "colour"
    with pytest.raises(ValidationFailed):
        load_yaml("- a list")
    with pytest.raises(ValidationFailed):
        load_yaml("a: [unclosed")


def test_deep_merge_overrides_keys_and_replaces_lists() -> None:
    merged = deep_merge(_raw(), {"opex": {"pue": 1.5}, "financing": []})
    s = parse_scenario(merged)
    assert s.opex.pue == 1.5
    assert s.opex.power_price_per_kwh == 0.08
    assert s.financing == []
    assert covers(project(s)).min_dscr is None  # no debt: no DSCR, not infinity


def _with_contracts(*contracts: dict[str, Any], classes: list[dict[str, Any]] | None = None):  # type: ignore[no-untyped-def]
    raw = _raw()
    raw["revenue"] = {
        "classes": classes if classes is not None else raw["revenue"]["classes"],
        "contracts": list(contracts),
    }
    return parse_scenario(raw)


def test_take_or_pay_holds_gpus_and_pays_whether_used_or_not() -> None:
    s = _with_contracts(
        {"customer": "big-lab", "gpus": 512, "price_per_gpu_hour": 2.2, "months": 24}
    )
    p = project(s)
    contract = 512 * 2.2 * HOURS
    hourly = 512 * 2.0 * 0.8 * HOURS  # the other half of the fleet, by the hour
    assert float(yearly(p.revenue)[0]) == pytest.approx(contract + hourly)
    assert float(yearly(p.revenue)[2]) == pytest.approx(1024 * 2.0 * 0.8 * HOURS)
    conc = concentration(p)
    assert conc.largest == "big-lab"
    assert conc.top1 == pytest.approx(contract / (contract + hourly))


def test_prepaid_moves_cash_not_revenue() -> None:
    prepaid = _with_contracts(
        {
            "customer": "big-lab",
            "kind": "prepaid",
            "gpus": 512,
            "price_per_gpu_hour": 2.2,
            "months": 24,
            "prepaid_fraction": 0.5,
        }
    )
    plain = _with_contracts(
        {"customer": "big-lab", "gpus": 512, "price_per_gpu_hour": 2.2, "months": 24}
    )
    p, q = project(prepaid), project(plain)
    np.testing.assert_allclose(p.revenue, q.revenue)
    value = 512 * 2.2 * HOURS * 2
    assert float(p.cfads[0] - q.cfads[0]) == pytest.approx(value / 2 - value / 2 / 24)
    assert float(p.cfads.sum()) == pytest.approx(float(q.cfads.sum()))


def test_backstop_pays_unused_hours_at_its_price() -> None:
    s = _with_contracts(
        {
            "customer": "lab",
            "kind": "backstop",
            "gpus": 1024,
            "price_per_gpu_hour": 2.0,
            "utilization": 0.6,
            "backstop_price_per_gpu_hour": 1.0,
            "months": 72,
        },
        classes=[],
    )
    expected = 1024 * HOURS * (0.6 * 2.0 + 0.4 * 1.0)
    assert float(yearly(project(s).revenue)[0]) == pytest.approx(expected)


def test_losing_the_largest_customer() -> None:
    p = project(example())
    conc = concentration(p)
    assert conc.largest == "anchor-lab"
    assert (conc.top1, conc.top2) == (pytest.approx(0.55), pytest.approx(0.70))
    assert conc.hhi == pytest.approx(55**2 + 15**2)
    lost = report(example())["concentration"]["without_largest"]
    assert lost["revenue_year1"] == pytest.approx(14_352_384 * 0.45, abs=0.01)


def test_every_stress_runs_and_unknown_ones_are_refused() -> None:
    s = example()
    base = project(s)
    for name, stress in STRESSES.items():
        p = stress.run(s)
        assert p.revenue.shape == base.revenue.shape, name
    assert float(get_stress("rate_shock").run(s).interest[0]) > float(base.interest[0])
    delayed = get_stress("delayed_power").run(s)
    assert float(delayed.revenue[:6].sum()) == 0.0
    assert float(delayed.debt_service.sum()) == pytest.approx(float(base.debt_service.sum()))
    with pytest.raises(InvalidRequest):
        get_stress("meteor")


def test_tornado_is_sorted_and_centred_on_the_base() -> None:
    bars = tornado(example())
    swings = [b.swing for b in bars]
    assert swings == sorted(swings, reverse=True)
    assert bars[0].input in ("price", "utilization")
    assert bars[0].npv_low < bars[0].npv_high


def test_monte_carlo_is_seeded_and_collapses_to_the_base_without_shocks() -> None:
    s = example().model_copy(update={"tax_rate": 0.21})
    spec = MonteCarloSpec(paths=500, seed=3)
    assert monte_carlo(s, spec) == monte_carlo(s, spec)
    still = monte_carlo(
        s,
        MonteCarloSpec(
            paths=50, price_volatility=0, utilization_sd=0, power_price_sd=0, rate_shift_sd=0
        ),
    )
    base = covers(project(s))
    assert still.p_dscr_below_1 == 0.0
    assert still.min_dscr_percentiles["p50"] == pytest.approx(base.min_dscr)
    shaken = monte_carlo(s, MonteCarloSpec(paths=2000, seed=1, price_drift=-0.3))
    assert shaken.p_dscr_below_1 > 0.5


def _node(**overrides: Any) -> NodeRecord:
    fields: dict[str, Any] = {
        "gpu_model": "H100-SXM-80GB",
        "gpu_count": 8,
        "capex": 250_000.0,
        "in_service": date(2025, 9, 10),
        "book_life_years": 5,
        "gpu_tdp_w": 700,
        "list_price_per_gpu_hour": 2.99,
    }
    fields.update(overrides)
    return NodeRecord(**fields)


def test_live_builds_cohorts_from_nodes_and_marks_assumptions() -> None:
    nodes = [_node() for _ in range(3)] + [
        _node(in_service=date(2026, 1, 15)),
        _node(capex=None),
    ]
    live = build_live_scenario(nodes, LiveInputs(as_of=date(2026, 3, 1), utilization=0.5))
    s = live.scenario
    assert s.start == date(2025, 9, 1)
    assert [(c.nodes, c.in_service) for c in s.cohorts] == [
        (3, date(2025, 9, 1)),
        (1, date(2026, 1, 1)),
    ]
    assert s.cohorts[0].kw_per_node == pytest.approx(10.192)
    assert s.revenue.classes[0].price_per_gpu_hour == 2.99
    assert live.skipped_nodes == 1
    assert live.sources["utilization"] == "assumed"
    assert s.horizon_years == 6  # the half year already run, then five forward
    with pytest.raises(InvalidRequest):
        build_live_scenario([_node(capex=None)], LiveInputs(as_of=date(2026, 3, 1)))


def test_an_ltv_tranche_draws_as_capex_is_paid() -> None:
    raw = _raw()
    second = {**raw["cohorts"][0], "name": "h100-later", "in_service": date(2026, 7, 1)}
    raw["cohorts"].append(second)
    p = project(parse_scenario(raw))
    capex = 128 * 343_980
    assert float(p.draws[0]) == pytest.approx(0.7 * capex)
    assert float(p.draws[6]) == pytest.approx(0.7 * capex)
    assert float(p.principal_paid.sum()) == pytest.approx(1.4 * capex)
    assert p.debt_balance[-1] == pytest.approx(0.0, abs=1e-3)
    assert float(p.ops.capex[6]) == pytest.approx(capex)


def test_measured_usage_counts_overlaps_within_the_window() -> None:
    from datetime import UTC, datetime

    from neocloud.economics.live import OrgAllocation, measure_usage

    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    day = 24.0
    usage = measure_usage(
        [
            OrgAllocation("a", 8, datetime(2026, 2, 1, tzinfo=UTC), None),  # whole window
            OrgAllocation(
                "b", 8, datetime(2026, 3, 5, tzinfo=UTC), datetime(2026, 3, 6, tzinfo=UTC)
            ),
            OrgAllocation(
                "c", 8, datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)
            ),
        ],
        [(8, datetime(2025, 1, 1, tzinfo=UTC)), (8, datetime(2026, 3, 6, tzinfo=UTC))],
        window_start=t0,
        window_end=datetime(2026, 3, 11, tzinfo=UTC),
    )
    assert usage.gpu_hours == pytest.approx(8 * 10 * day + 8 * day)
    assert usage.capacity_gpu_hours == pytest.approx(8 * 10 * day + 8 * 5 * day)
    assert usage.org_shares == {"a": pytest.approx(10 / 11), "b": pytest.approx(1 / 11)}
    assert usage.utilization == pytest.approx(88 / 120)


def test_named_items_merge_by_name() -> None:
    override = {
        "cohorts": [
            {"name": "h100-2026", "book_life_years": 4},
            {**_raw()["cohorts"][0], "name": "more"},
        ],
        "revenue": {
            "contracts": [{"customer": "x", "gpus": 8, "price_per_gpu_hour": 2, "months": 12}]
        },
    }
    s = parse_scenario(deep_merge(_raw(), override))
    assert [(c.name, c.book_life_years) for c in s.cohorts] == [("h100-2026", 4), ("more", 6)]
    assert s.cohorts[0].kw_per_node == 10.2
    assert len(s.revenue.classes) == 1
    assert s.revenue.contracts[0].customer == "x"
