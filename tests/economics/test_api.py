"""The economics routes over HTTP (both backends): projections, stress, live, and who may ask."""

from __future__ import annotations

from datetime import timedelta

import pytest

from neocloud.client import ApiError, Client
from neocloud.compute.worker import Worker
from neocloud.db.engine import Database
from neocloud.drivers.sim import SimDriver
from neocloud.economics import load_yaml
from neocloud.kernel.clock import VirtualClock

from .helpers import EXAMPLE, FLEET, tenant_client


def test_projection_reports_the_example(admin: Client) -> None:
    scenario = load_yaml(EXAMPLE.read_text())
    report = admin.economics.project(scenario)  # type: ignore[attr-defined]
    assert report["object"] == "economics.report"
    year1 = report["annual"][0]
    assert year1["ebitda"] == 10_858_598.40
    assert year1["ebit"] == 3_520_358.40
    short = admin.economics.project(scenario, stresses=["short_book_life"])  # type: ignore[attr-defined]
    assert short["annual"][0]["ebit"] == -148_761.60


def test_a_bad_scenario_names_its_field(admin: Client) -> None:
    scenario = load_yaml(EXAMPLE.read_text())
    scenario["cohorts"][0]["nodes"] = -1
    with pytest.raises(ApiError) as exc:
        admin.economics.project(scenario)  # type: ignore[attr-defined]
    assert exc.value.status == 422
    assert exc.value.param == "scenario.cohorts.0.nodes"
    with pytest.raises(ApiError) as exc:
        admin.economics.project(load_yaml(EXAMPLE.read_text()), stresses=["meteor"])  # type: ignore[attr-defined]
    assert exc.value.status == 400
    assert exc.value.param == "stress"


def test_floating_debt_tax_and_terminal_value_over_http(admin: Client) -> None:
    scenario = load_yaml(EXAMPLE.read_text())
    scenario.update(
        horizon_years=5,
        tax_rate=0.21,
        terminal_value={"method": "economic_life"},
        reference_rates={"sofr": {"monthly": [0.04]}},
    )
    scenario["cohorts"][0].update(tax_depreciation="macrs", tax_life_years=5)
    scenario["financing"][0].update(rate=None, floating=True, reference="sofr", spread=0.07)
    report = admin.economics.project(scenario)  # type: ignore[attr-defined]
    year1 = report["annual"][0]
    assert year1["interest"] == pytest.approx(0.7 * 44_029_440 * 0.11, abs=0.01)
    assert year1["current_tax"] == 0.0
    assert year1["deferred_tax"] == pytest.approx(0.21 * year1["ebt"], abs=0.01)
    assert report["kpis"]["terminal_value"]["value"] == pytest.approx(44_029_440 / 6, abs=0.01)
    scenario["financing"][0]["reference"] = "euribor"
    with pytest.raises(ApiError) as exc:
        admin.economics.project(scenario)  # type: ignore[attr-defined]
    assert exc.value.status == 422
    assert exc.value.param == "scenario.financing.0.reference"


def test_stress_runs_a_small_monte_carlo(admin: Client) -> None:
    result = admin.economics.stress(load_yaml(EXAMPLE.read_text()), paths=200, seed=7)  # type: ignore[attr-defined]
    names = [row["scenario"] for row in result["stresses"]]
    assert names[0] == "base"
    assert "short_book_life" in names
    assert 0.0 <= result["monte_carlo"]["p_dscr_below_1"] <= 1.0
    assert result["monte_carlo"]["paths"] == 200


def test_live_projects_the_fleet_and_says_what_is_assumed(admin: Client) -> None:
    admin.fleet.import_spec(FLEET)  # type: ignore[attr-defined]
    live = admin.economics.live(utilization=0.6)  # type: ignore[attr-defined]
    assert live["object"] == "economics.live"
    assert live["sources"]["utilization"].startswith("given")
    assert live["assumptions"]["gpus"] == 4 * 8
    assert live["assumptions"]["capex"] == 4 * 250_000
    assert live["annual"][0]["revenue"] > 0
    assert any("utilization 60.0%: given" in note for note in live["notes"])
    assert live["sources"]["financing"] == "assumed"
    without_usage = admin.economics.live()  # type: ignore[attr-defined]
    assert without_usage["sources"]["utilization"].startswith("assumed (no allocations")


def test_live_without_capex_is_a_clear_error(admin: Client) -> None:
    with pytest.raises(ApiError) as exc:
        admin.economics.live()  # type: ignore[attr-defined]
    assert exc.value.code == "no_capex"


def test_tenants_get_403(admin: Client) -> None:
    tenant = tenant_client(admin, "acme")
    with pytest.raises(ApiError) as exc:
        tenant.economics.live()  # type: ignore[attr-defined]
    assert exc.value.status == 403


def test_live_measures_utilization_and_customers_from_allocations(
    admin: Client, db: Database, clock: VirtualClock
) -> None:
    admin.fleet.import_spec(FLEET)  # type: ignore[attr-defined]
    tenant = tenant_client(admin, "acme", h100_quota=64)
    tenant.instances.create("8xH100", name="train")  # type: ignore[attr-defined]
    Worker(db, clock, driver=SimDriver(seed=1), holder="test").run_once()
    clock.advance(timedelta(days=10))
    live = admin.economics.live(window_days=30)  # type: ignore[attr-defined]
    usage = live["usage"]
    # 8 of the 32 GPUs for the 10 days the platform has known the fleet (capacity counts
    # from the nodes' import, not from their earlier in-service date).
    assert usage["capacity_gpu_hours"] == 32 * 10 * 24
    assert usage["gpu_hours"] == pytest.approx(8 * 10 * 24, rel=1e-3)
    assert usage["measured_utilization"] == pytest.approx(0.25, rel=1e-3)
    assert live["sources"]["utilization"].startswith("measured from allocation intervals")
    assert live["concentration"]["customers"] == {"acme": 1.0}
